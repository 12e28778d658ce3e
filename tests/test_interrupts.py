"""Ctrl-C and SIGTERM stay interrupts when library code swallows them or turns them into other
errors on their way (TensorFlow's dtype lookups, Ray's waits): the run ends KILLED and the
command ends as interrupted, in one line."""

from __future__ import annotations

import os
import signal
import time

import click
import pytest
from click.testing import CliRunner
from support import swallow_an_interrupt

from keras_advseg import interrupts
from keras_advseg.cli.output import friendly_errors
from keras_advseg.interrupts import SignalRecord
from keras_advseg.tracking import tracked_run
from mlflow import MlflowClient


def swallowing_wait(signum: int):
    """As Ray's ``ray.wait`` can: the interrupt becomes a status nobody reads."""
    try:
        os.kill(os.getpid(), signum)
        time.sleep(2)
    except KeyboardInterrupt:
        return "interrupted"
    return "ready"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_turned_into_another_error_ends_the_run_killed_and_the_command_interrupted(
    signum, tmp_path, new_store
):
    uri = new_store(tmp_path)

    @click.command()
    @friendly_errors
    def command():
        with tracked_run(uri, "tests", run_name="interrupted"):
            swallow_an_interrupt(signum)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with SignalRecord():
        result = CliRunner().invoke(command, [])
        assert interrupts.received() == signum
    assert interrupts.received() is None  # the record is gone with its block
    assert {s: signal.getsignal(s) for s in before} == before
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == "Aborted!"
    assert "Traceback" not in result.output and "TypeError" not in result.output
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "KILLED"


def test_without_a_signal_the_same_error_is_a_failure_with_its_traceback(tmp_path, new_store):
    uri = new_store(tmp_path)

    @click.command()
    @friendly_errors
    def command():
        with tracked_run(uri, "tests", run_name="failed"):
            raise TypeError("a bug")

    with SignalRecord():
        result = CliRunner().invoke(command, [])
    assert isinstance(result.exception, TypeError)  # a bug keeps its traceback
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"


def test_a_swallowed_interrupt_is_raised_again_by_check_once():
    with SignalRecord((signal.SIGINT,)) as record:
        record.check()  # nothing received yet
        assert swallowing_wait(signal.SIGINT) == "interrupted"
        with pytest.raises(KeyboardInterrupt, match="stopped by signal 2"):
            record.check()
        record.check()  # raised once


def test_an_inner_record_hands_its_signal_to_the_outer_one_and_once_raises_once():
    with SignalRecord() as outer:
        with SignalRecord((signal.SIGTERM,), once=True) as inner:
            assert swallowing_wait(signal.SIGTERM) == "interrupted"
            # a second signal during the clean-up is recorded, not raised
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            assert inner.received == signal.SIGTERM
        assert outer.received == signal.SIGTERM and interrupts.received() == signal.SIGTERM
        with pytest.raises(RuntimeError, match="entered once"):
            inner.__enter__()
    assert interrupts.received() is None


def test_ignored_signals_do_not_interrupt_and_come_back_afterwards():
    before = signal.getsignal(signal.SIGINT)
    with interrupts.ignored():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # nothing raised
    assert signal.getsignal(signal.SIGINT) is before
