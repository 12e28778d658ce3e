"""Bad options, unusable outputs and stores, models that do not fit, and genuine bugs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from support import fails_cleanly, scoring_args, snapshot, train_args

from keras_advseg.cli import main


@pytest.mark.parametrize("eps", ["1e6", "nan", "inf", "-0.1", "0.05,x"])
def test_budgets_must_be_finite_fractions(models, prepared_dir, tmp_path, uri, eps):
    fails_cleanly(
        scoring_args(models / "a.keras", prepared_dir, tmp_path / "e", uri, "--eps", eps),
        contains=["--eps: expected numbers in [0, 1]"],
    )
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "option, value, defense",
    [("--lr", "nan", "none"), ("--eps", "inf", "adversarial"), ("--temperature", "nan", "none")],
)
def test_training_options_must_be_finite(prepared_dir, tmp_path, uri, option, value, defense):
    fails_cleanly(
        train_args(prepared_dir, tmp_path / "t", uri, option, value, "--defense", defense),
        contains=["must be a finite number"],
    )


def test_a_huge_sweep_is_refused(models, prepared_dir, tmp_path, uri):
    fails_cleanly(
        scoring_args(
            models / "a.keras", prepared_dir, tmp_path / "e", uri, "--eps-sweep", "0:1:1e-9"
        ),
        contains=["--eps-sweep", "at most 1000"],
    )


def test_unwritable_output_is_found_before_any_attack(
    models, prepared_dir, tmp_path, uri, monkeypatch
):
    import tempfile

    import keras_advseg.evaluation.distributed as workflow

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    def never(*args, **kwargs):
        raise AssertionError("an attack ran before the output folder was checked")

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    monkeypatch.setattr(workflow, "evaluate_distributed", never)
    out = tmp_path / "e"
    line = fails_cleanly(scoring_args(models / "a.keras", prepared_dir, out, uri))
    assert line == f"Error: {out}: Permission denied"


def test_output_under_a_file(models, prepared_dir, tmp_path, uri):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fails_cleanly(
        scoring_args(models / "a.keras", prepared_dir, blocker / "e", uri), contains=[blocker]
    )
    assert blocker.read_text() == "x"


def test_export_into_an_existing_folder(models, tmp_path):
    out = tmp_path / "served"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    before = snapshot(out)
    fails_cleanly(["export", models / "a.keras", out], contains=[out, "already exists"])
    assert snapshot(out) == before


def test_read_only_store_is_caught_before_work(prepared_dir, tmp_path, monkeypatch):
    store = tmp_path / "ro.db"
    store.write_bytes(b"")
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode: False if str(path) == str(store) else real_access(path, mode),
    )
    fails_cleanly(
        train_args(prepared_dir, tmp_path / "t", f"sqlite:///{store}"),
        exit_code=1,
        contains=[store, "not a writable file"],
    )
    assert not (tmp_path / "t").exists()


def test_model_and_data_that_disagree(prepared_dir, tmp_path, uri):
    from keras_advseg.models import unet3d

    keras.utils.set_random_seed(0)
    bigger = tmp_path / "big.keras"
    unet3d((32, 32, 32, 4), base_filters=2, depth=3).save(bigger)
    fails_cleanly(
        scoring_args(bigger, prepared_dir, tmp_path / "e", uri),
        contains=[bigger, prepared_dir, "expects volumes of (32, 32, 32)"],
    )
    three = tmp_path / "three.keras"
    unet3d((16, 16, 16, 3), base_filters=2, depth=3, n_classes=2).save(three)
    line = fails_cleanly(scoring_args(three, prepared_dir, tmp_path / "e", uri))
    assert "takes 3 channels" in line and "predicts 2 classes" in line


def test_corrupt_files_read_back(prepared_dir, models, tmp_path, uri):
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    state = out / "checkpoint" / "state.json"
    state.write_text('{"epoch": 1, "config": {"model": "unet9d"}}')
    fails_cleanly(
        ["train", "--data", prepared_dir, "--out", out, "--resume", "--tracking-uri", uri],
        contains=[state, "invalid stored configuration"],
    )
    state.write_text("\x00\x01 garbage")
    fails_cleanly(
        ["train", "--data", prepared_dir, "--out", out, "--resume", "--tracking-uri", uri],
        contains=[state, "unreadable checkpoint state"],
    )
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "per_subject.csv").write_text("subject,attack,eps\nx,none,zero\n")
    fails_cleanly(
        ["compare", evaluation, "--baseline", evaluation, "--out", tmp_path / "c"],
        contains=[evaluation / "per_subject.csv", "malformed"],
    )
    fails_cleanly(
        scoring_args(tmp_path / "nothing.keras", prepared_dir, tmp_path / "e", uri),
        contains=["nothing.keras"],
    )


def test_a_genuine_bug_keeps_its_traceback(prepared_dir, tmp_path, monkeypatch):
    import keras_advseg.data.prepare as prepare

    def bug(*args, **kwargs):
        raise ValueError("an internal mistake")

    monkeypatch.setattr(prepare, "prepare_dataset", bug)
    result = CliRunner().invoke(
        main, ["data", "prepare", str(prepared_dir), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and isinstance(
        result.exception, ValueError
    )  # not turned into exit 2


@pytest.mark.slow
def test_concurrent_processes_create_one_usable_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    script = textwrap.dedent(f"""
        import mlflow
        from keras_advseg.tracking import tracked_run
        with tracked_run({uri!r}, "together") as run:
            mlflow.log_param("pid", __import__("os").getpid())
    """)
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], errors
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("together")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_pool_workers_die_with_their_parent(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    script = textwrap.dedent(f"""
        import os, time
        from keras_advseg.data.parallel import progress_map

        def work(i):
            open(os.path.join({str(pids)!r}, str(os.getpid())), "w").close()
            time.sleep(120)

        if __name__ == "__main__":
            list(progress_map(work, range(2), workers=2, disable=True))
    """)
    (tmp_path / "job.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "job.py")])
    try:
        for _ in range(600):
            if len(list(pids.iterdir())) == 2:
                break
            import time

            time.sleep(0.1)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2
    finally:
        parent.kill()
        parent.wait()
    import time

    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        alive = [pid for pid in workers if _alive(pid)]
        time.sleep(0.1)
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_resume_neither_skips_nor_repeats_an_epochs_metrics(
    prepared_dir, tmp_path, uri, monkeypatch
):
    from keras_advseg.config import TrainConfig
    from keras_advseg.workflows import train as workflow

    real = workflow.EpochMetrics.__call__

    def interrupted(self, metrics, step):
        real(self, metrics, step)
        if step == 2:  # metrics of epoch 2 logged, its checkpoint not yet committed
            raise KeyboardInterrupt

    config = TrainConfig.from_preset("smoke", epochs=3)
    monkeypatch.setattr(workflow.EpochMetrics, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        workflow.train(
            config, prepared_dir, tmp_path / "run", tracking_uri=uri, experiment="resume", verbose=0
        )
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["epoch"] == 1
    monkeypatch.setattr(workflow.EpochMetrics, "__call__", real)
    result = workflow.train(
        config,
        prepared_dir,
        tmp_path / "run",
        tracking_uri=uri,
        experiment="resume",
        resume=True,
        verbose=0,
    )
    client = MlflowClient(tracking_uri=uri)
    for key in ("loss", "val_dice_wt"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [1, 2, 3]


@pytest.mark.parametrize(
    "args, contains",
    [
        (["--eps-sweep", "0:1:1e-320"], ["--eps-sweep", "too many values; at most 1000"]),
        (["--seed", "-1"], ["--seed", "0<=x<=2147483647"]),
        (["--seed", "99999999999999999999"], ["--seed"]),
    ],
)
def test_seeds_and_ranges_are_checked_before_any_work(models, tmp_path, uri, args, contains):
    fails_cleanly(
        ["evaluate", models / "a.keras", "--data", tmp_path / "nothing", "--out", tmp_path / "e"]
        + ["--tracking-uri", uri, *args],
        contains=contains,
    )
    assert not (tmp_path / "e").exists()


def test_reproduce_checks_its_seeds_before_preparing_anything(tmp_path, uri):
    fails_cleanly(
        [
            "reproduce",
            "--preset",
            "smoke",
            "--out",
            tmp_path / "s",
            "--seeds",
            "99999999999999999999",
        ]
        + ["--tracking-uri", uri],
        contains=["--seeds", "2147483647"],
    )
    assert not (tmp_path / "s").exists()
