"""The study's step scheduler: plan order in one process, dependencies and concurrency in several,
steps done before skipped, and a failing step stops what depends on it."""

from __future__ import annotations

import os

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


def test_an_interrupt_stops_the_running_steps_instead_of_waiting_for_them(
    tmp_path, new_store, capfd
):
    import time

    from ray_steps import tracked_sleep

    marker, uri = tmp_path / "open", new_store(tmp_path)

    class Interrupted(Record):
        def begin(self, name):
            if name == "b":  # Ctrl-C once "a" runs in a worker, its MLflow run open
                wait_for_file(marker)
                raise KeyboardInterrupt
            return super().begin(name)

    steps = [
        Step("a", tracked_sleep, {"uri": uri, "marker": marker}),
        Step("c", write_text_atomic, {"path": tmp_path / "c", "text": "c"}),  # its worker idles
        Step("b", write_text_atomic, {"path": tmp_path / "b", "text": "b"}, ("c",)),
    ]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_steps(steps, Interrupted(), workers=2)
    assert time.monotonic() - started < 100  # the 120 s step was not waited for
    assert (tmp_path / "c").exists() and not (tmp_path / "b").exists()
    # the busy worker took the SIGTERM that stopped it as an interrupt: its run ended KILLED;
    # the idle one ignored it (no traceback from either)
    assert run_statuses(uri) == ["KILLED"]
    assert "Traceback" not in capfd.readouterr().err


def test_an_interrupt_an_inline_step_swallowed_still_stops_the_running_steps(tmp_path, new_store):
    import signal
    import time

    from ray_steps import tracked_sleep
    from support import swallow_an_interrupt

    from keras_advseg.interrupts import SignalRecord

    marker, uri = tmp_path / "open", new_store(tmp_path)

    def swallowing(marker):  # runs in this process: SIGTERM arrives, a library hides it
        wait_for_file(marker)
        swallow_an_interrupt(signal.SIGTERM)

    steps = [
        Step("a", tracked_sleep, {"uri": uri, "marker": marker}),
        Step("i", swallowing, {"marker": marker}, inline=True),
    ]
    started = time.monotonic()
    with SignalRecord(), pytest.raises(KeyboardInterrupt):
        run_steps(steps, Record(), workers=2)
    assert time.monotonic() - started < 100  # "a" was stopped, not waited for
    assert run_statuses(uri) == ["KILLED"]


def wait_for_file(path, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def run_statuses(uri: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return [
        r.info.status
        for r in client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    ]


SMOKE_PLAN = [
    ("train unet3d-none", ()),
    ("train unet3d-distillation-T20", ()),  # distillation trains its own teacher
    ("train unet3d-adversarial-eps0.05", ("train unet3d-none",)),  # fine-tunes the baseline
    ("train unet3d-none-control", ("train unet3d-none",)),
    ("train unet2d-none", ()),
    ("train unet2d-adversarial-eps0.05", ("train unet2d-none",)),
    ("evaluate unet3d-none", ("train unet3d-none",)),
    ("evaluate unet3d-distillation-T20", ("train unet3d-distillation-T20",)),
    ("evaluate unet3d-distillation-T20 at T=20", ("train unet3d-distillation-T20",)),
    ("evaluate unet3d-adversarial-eps0.05", ("train unet3d-adversarial-eps0.05",)),
    ("evaluate unet3d-none-control", ("train unet3d-none-control",)),
    ("evaluate unet2d-none", ("train unet2d-none",)),
    ("evaluate unet2d-adversarial-eps0.05", ("train unet2d-adversarial-eps0.05",)),
    # the first corruption step prepares the scans, before the certificates and audits
    ("corruptions unet3d-none", ("train unet3d-none",)),
    ("certify unet3d-none", ("train unet3d-none",)),
    ("certify unet3d-distillation-T20", ("train unet3d-distillation-T20",)),
    ("certify unet3d-adversarial-eps0.05", ("train unet3d-adversarial-eps0.05",)),
    # the audit's transfer source: the 2-D baseline for the 3-D baseline, else the 3-D baseline
    ("audit unet3d-none", ("train unet3d-none", "train unet2d-none")),
    ("audit unet3d-distillation-T20", ("train unet3d-distillation-T20", "train unet3d-none")),
    ("audit unet3d-adversarial-eps0.05", ("train unet3d-adversarial-eps0.05", "train unet3d-none")),
    # the others only score a model on the prepared scans: after every audit
    (
        "corruptions unet3d-distillation-T20",
        ("train unet3d-distillation-T20", "corruptions unet3d-none"),
    ),
    (
        "corruptions unet3d-adversarial-eps0.05",
        ("train unet3d-adversarial-eps0.05", "corruptions unet3d-none"),
    ),
    *(
        (
            f"card {m}",
            tuple(f"{axis} {m}" for axis in ("evaluate", "corruptions", "certify", "audit")),
        )
        for m in ("unet3d-none", "unet3d-distillation-T20", "unet3d-adversarial-eps0.05")
    ),
    (
        "leaderboard",
        ("card unet3d-none", "card unet3d-distillation-T20", "card unet3d-adversarial-eps0.05"),
    ),
    (
        "compare",
        (
            "evaluate unet3d-none",
            "evaluate unet3d-distillation-T20",
            "evaluate unet3d-distillation-T20 at T=20",
            "evaluate unet3d-adversarial-eps0.05",
            "evaluate unet3d-none-control",
            "evaluate unet2d-none",
            "evaluate unet2d-adversarial-eps0.05",
        ),
    ),
]


def test_the_smoke_study_s_plan_orders_every_step_after_what_it_reads(tmp_path):
    from keras_advseg.config import STUDIES
    from keras_advseg.workflows.reproduce import study_steps
    from keras_advseg.workflows.study import planned_steps

    planned = planned_steps(STUDIES["smoke"])
    assert [(step.name, step.after) for step in planned] == SMOKE_PLAN
    # the study's whole plan, as both engines run it and progress.json counts it
    steps = study_steps(
        "smoke",
        tmp_path,
        data=None,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment="plan",
        seeds=(0,),
        data_seed=0,
        workers=1,
    )
    assert [s.name for s in steps] == [
        "data",
        "prepare",
        *(f"seed 0: {name}" for name, _ in SMOKE_PLAN),
        "seed 0: report",
        "report",
    ]
    # the control is trained and evaluated but carries no card (nor its axes)
    assert not any(
        s.name.endswith("control") and s.kind not in ("train", "evaluate") for s in planned
    )


@pytest.mark.parametrize("preset", ["smoke", "quick", "paper"])
def test_a_seed_s_steps_run_its_plan_with_one_function_per_kind(tmp_path, preset):
    from keras_advseg.config import STUDIES
    from keras_advseg.workflows import reproduce
    from keras_advseg.workflows.study import planned_steps

    study = STUDIES[preset]
    planned = planned_steps(study)
    steps = reproduce.seed_steps(
        study,
        preset,
        tmp_path / "prepared",
        tmp_path / "seed",
        0,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment="plan",
        corruption_cache=tmp_path / "corrupted",
        workers=3,
    )
    assert [(s.name, s.after) for s in steps] == [(p.name, p.after) for p in planned]
    runs = {
        "train": "train_model",
        "evaluate": "run_evaluation",
        "evaluate-logit": "run_evaluation",
        "corruptions": "run_corruption_evaluation",
        "certify": "run_certification",
        "audit": "run_audit",
        "card": "write_study_card",
        "leaderboard": "run_leaderboard",
        "compare": "compare_families",
    }
    assert [s.run.__name__ for s in steps] == [runs[p.kind] for p in planned]
    kwargs = {s.name: s.kwargs for s in steps}
    # only the first corruption step prepares the scans, in the study's processes
    corrupted = [s for s in steps if s.name.startswith("corruptions ")]
    assert [s.kwargs["workers"] for s in corrupted] == [3] + [1] * (len(corrupted) - 1)
    baseline = kwargs["evaluate unet3d-none"]
    assert baseline["config"].attacks[-2:] == ("worst", "vafa")
    assert baseline["out"] == tmp_path / "seed" / "evals" / "unet3d-none"
    assert baseline["model_ref"] == str(
        tmp_path / "seed" / "models" / "unet3d-none" / "model.keras"
    )
    audits = [s for s in steps if s.name.startswith("audit ")]
    assert all(s.kwargs["out"].parent == tmp_path / "seed" / "audits" for s in audits)
    tracked = [s for s in steps if s.name not in ("leaderboard", "compare")]  # files only
    assert {s.kwargs["tracking_uri"] for s in tracked} == {f"sqlite:///{tmp_path / 'mlflow.db'}"}


def test_inline_steps_run_in_this_process_with_their_late_arguments(tmp_path):
    import json

    def here_and_now() -> dict:
        written = sorted(p.name for p in tmp_path.iterdir())
        return {"text": json.dumps({"pid": os.getpid(), "written": written})}

    steps = plan(tmp_path)
    # "f" reads "c" and "e"; it runs here, with arguments known only once it starts
    steps.append(
        Step(
            "f",
            write_text_atomic,
            {"path": tmp_path / "f"},
            ("c", "e"),
            inline=True,
            late=here_and_now,
        )
    )
    record = Record()
    run_steps(steps, record, workers=2)
    f = json.loads((tmp_path / "f").read_text())
    assert f["pid"] == os.getpid()  # not a worker's
    assert {"a", "b", "c", "e"} <= set(f["written"])  # what it reads was written before it
    assert {n for e, n in record.events if e == "end"} == set("abcdef")


def test_an_inline_step_that_fails_lets_the_running_steps_finish(tmp_path):
    import subprocess

    steps = [
        Step("a", subprocess.run, {"args": ["sleep", "2"]}),
        Step("b", read_json, {"path": tmp_path / "missing.json"}, inline=True),
        Step("c", write_text_atomic, {"path": tmp_path / "c", "text": "c"}, ("b",)),
    ]
    record = Record()
    with pytest.raises(FileFormatError, match="missing.json"):
        run_steps(steps, record, workers=2)
    assert ("end", "a") in record.events  # waited for, not terminated
    assert ("end", "b") not in record.events and not (tmp_path / "c").exists()
