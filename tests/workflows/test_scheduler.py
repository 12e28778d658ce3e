"""The study's step scheduler: plan order in one process, dependencies and concurrency in several,
steps done before skipped, and a failing step stops what depends on it."""

from __future__ import annotations

import pytest

from keras_advseg.errors import FileFormatError
from keras_advseg.io import read_json, write_text_atomic
from keras_advseg.workflows.scheduler import Step, run_steps


class Record:
    """A progress record that keeps the order of events."""

    def __init__(self, done=()):
        self.done, self.events = set(done), []

    def is_done(self, name):
        return name in self.done

    def skipped(self, name):
        self.events.append(("skip", name))

    def begin(self, name):
        self.events.append(("begin", name))
        return 0.0

    def end(self, name, started):
        self.events.append(("end", name))
        self.done.add(name)


def plan(folder):
    """a, b independent; c reads a and b; d reads c; e independent."""

    def write(name, after=()):
        return Step(name, write_text_atomic, {"path": folder / name, "text": name}, after)

    return [write("a"), write("b"), write("c", ("a", "b")), write("d", ("c",)), write("e")]


def test_one_worker_runs_the_plan_in_order_and_skips_what_is_done(tmp_path):
    record = Record(done={"b"})
    run_steps(plan(tmp_path), record, workers=1)
    assert record.events == [
        ("begin", "a"),
        ("end", "a"),
        ("skip", "b"),
        *[(e, n) for n in "cde" for e in ("begin", "end")],
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c", "d", "e"]


def test_two_workers_run_independent_steps_at_once_and_respect_dependencies(tmp_path):
    record = Record()
    run_steps(plan(tmp_path), record, workers=2)
    order = {event: i for i, event in enumerate(record.events)}
    # a and b start together, before either ends; c only after both, d after c
    assert order[("begin", "b")] < order[("end", "a")]
    assert order[("begin", "c")] > max(order[("end", "a")], order[("end", "b")])
    assert order[("begin", "d")] > order[("end", "c")]
    assert {n for e, n in record.events if e == "end"} == set("abcde")
    assert all((tmp_path / n).read_text() == n for n in "abcde")


def test_a_failing_step_stops_its_dependents_and_is_raised(tmp_path):
    steps = plan(tmp_path)
    steps[2] = Step("c", read_json, {"path": tmp_path / "missing.json"}, ("a", "b"))
    record = Record()
    with pytest.raises(FileFormatError, match="missing.json"):
        run_steps(steps, record, workers=2)
    assert ("end", "c") not in record.events and ("begin", "d") not in record.events
    assert not (tmp_path / "d").exists()


def test_a_step_after_a_later_step_is_refused(tmp_path):
    steps = plan(tmp_path)
    with pytest.raises(ValueError, match="'a' comes after"):
        run_steps([Step("a", None, {}, ("c",)), *steps[1:]], Record(), workers=1)


def test_an_interrupt_stops_the_running_steps_instead_of_waiting_for_them(tmp_path):
    import subprocess
    import time

    class Interrupted(Record):
        def begin(self, name):
            if name == "b":  # Ctrl-C while "a" runs in a worker
                raise KeyboardInterrupt
            return super().begin(name)

    steps = [
        Step("a", subprocess.run, {"args": ["sleep", "120"]}),
        Step("b", write_text_atomic, {"path": tmp_path / "b", "text": "b"}),
    ]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_steps(steps, Interrupted(), workers=2)
    assert time.monotonic() - started < 60  # the 120 s step was not waited for
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("preset", ["smoke", "quick", "paper"])
def test_a_seed_s_steps_are_its_plan_with_the_short_corruption_steps_last(tmp_path, preset):
    from keras_advseg.config import STUDIES
    from keras_advseg.workflows.reproduce import seed_steps
    from keras_advseg.workflows.study import seed_plan

    study = STUDIES[preset]
    steps = seed_steps(
        study,
        preset,
        tmp_path / "prepared",
        tmp_path / "seed",
        0,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment="plan",
        corruption_cache=tmp_path / "corrupted",
    )
    names = [step.name for step in steps]
    assert names + ["report"] == seed_plan(study)
    corruptions = [i for i, name in enumerate(names) if name.startswith("corruptions ")]
    audits = [i for i, name in enumerate(names) if name.startswith("audit ")]
    certificates = [i for i, name in enumerate(names) if name.startswith("certify ")]
    # the first corruption step prepares the scans, before the certificates and audits; the
    # others, which only score a model on them, after every audit
    assert corruptions[0] < min(certificates) and min(corruptions[1:]) > max(audits)
    assert all(steps[i].after[-1] == names[corruptions[0]] for i in corruptions[1:])
