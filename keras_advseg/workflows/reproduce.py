"""The study workflow (``advseg reproduce``): the whole study in one command, resumable.

Prepare data (the phantom by default) -> train the 3-D and 2-D UNet without
and with each defense -> attack each (FGSM, i-FGSM, targeted i-FGSM, PGD,
sweeps, logit-level attacks on distilled models) -> paired statistics ->
``report.md`` (:mod:`keras_advseg.workflows.report`). Every step leaves its
output in ``OUT``; re-running skips finished steps. The presets are
:data:`keras_advseg.config.STUDIES`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from keras_advseg.config import STUDIES, EvalConfig, ModelSpec, Study, TrainConfig
from keras_advseg.errors import InputError
from keras_advseg.io import FileFormatError, write_json_atomic
from keras_advseg.training import read_state


def reproduce(
    preset: str,
    out: str | Path,
    *,
    data: str | Path | None = None,
    tracking_uri: str,
    experiment: str | None = None,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Runs (or resumes) the study and returns the path of ``report.md``.

    Raises:
        ValueError: unknown preset. DataError / TrainingError / TrackingError: as the steps.
    """
    from keras_advseg.data.phantom import PhantomConfig, synthesize_dataset
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset
    from keras_advseg.tracking import check_reachable
    from keras_advseg.workflows.audit import run_audit
    from keras_advseg.workflows.compare import run_compare
    from keras_advseg.workflows.evaluate import run_evaluation
    from keras_advseg.workflows.report import write_report
    from keras_advseg.workflows.train import train

    if preset not in STUDIES:
        raise InputError(f"preset must be one of {sorted(STUDIES)}. Received: {preset!r}")
    study = STUDIES[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    experiment = experiment or f"advseg-reproduce-{preset}"
    # Under `mlflow run` the project's run id is in the environment; the study's runs are its own.
    os.environ.pop("MLFLOW_RUN_ID", None)
    check_reachable(tracking_uri)
    models = study.models3d + study.models2d
    plan = ["data", "prepare"] + [f"train {m.name}" for m in models]
    for m in models:
        plan.append(f"evaluate {m.name}")
        if m.defense == "distillation":
            plan.append(f"evaluate {m.name} at T={m.temperature:g}")
    plan += [f"audit {m.name}" for m in study.models3d]
    plan += ["compare", "report"]
    progress = _Progress(plan, out / "progress.json")

    with progress.step("data") as skip:
        if data is None:
            data = out / "phantom"
            if not skip:
                synthesize_dataset(
                    data,
                    study.phantom_subjects,
                    seed=seed,
                    config=PhantomConfig(voxel_mm=study.voxel_mm),
                    workers=workers,
                )
    with progress.step("prepare") as skip:
        prepared = prepare_dataset(
            data,
            out / "prepared",
            PrepareConfig(
                shape=(study.shape,) * 3, n4=study.n4, test_fraction=study.test_fraction, seed=seed
            ),
            workers=workers,
        )

    model_dirs = {}
    for spec in models:
        model_dir = out / "models" / spec.name
        model_dirs[spec.name] = model_dir
        with progress.step(f"train {spec.name}") as skip:
            if not skip:
                state = read_state(model_dir)
                resume = state is not None and not state.get("finished")
                config = spec_config(
                    study, spec, seed=seed, **warm_start_options(study, spec, model_dirs)
                )
                train(
                    config,
                    out / "prepared",
                    model_dir,
                    tracking_uri=tracking_uri,
                    experiment=experiment,
                    run_name=spec.name,
                    resume=resume,
                    verbose=0,
                )

    eval_dirs = {}
    for spec in models:
        baseline = spec.defense == "none"
        attacks = (study.attacks2d or study.attacks) if spec.model == "unet2d" else study.attacks
        attacks = attacks if baseline else ("fgsm",)
        if spec.model == "unet3d":  # every 3-D model is judged by the worst case too
            attacks += ("worst",)
        config = EvalConfig(
            attacks=attacks,
            eps=tuple(e for e in study.table_eps if e > 0),
            iterative_eps=(0.05,),
            steps=study.steps,
            eps_sweep=study.eps_sweep,
            iterations_sweep=baseline and spec.model == "unet3d",
            seed=seed,
            ensemble=study.ensemble,
            worst_steps=study.worst_steps,
        )
        jobs = [(f"evaluate {spec.name}", out / "evals" / spec.name, config)]
        if spec.defense == "distillation":
            logit = EvalConfig(
                attacks=("fgsm",),
                eps=config.eps,
                steps=study.steps,
                eps_sweep=(),
                attack_temperature=spec.temperature,
                seed=seed,
            )
            jobs.append(
                (
                    f"evaluate {spec.name} at T={spec.temperature:g}",
                    out / "evals" / f"{spec.name}-logit",
                    logit,
                )
            )
        for label, eval_dir, eval_config in jobs:
            eval_dirs[eval_dir.name] = eval_dir
            with progress.step(label) as skip:
                if not skip:
                    run_evaluation(
                        str(model_dirs[spec.name] / "model.keras"),
                        out / "prepared",
                        eval_dir,
                        eval_config,
                        tracking_uri=tracking_uri,
                        experiment=experiment,
                        run_name=f"eval-{eval_dir.name}",
                        progress=False,
                    )

    for spec in study.models3d:
        with progress.step(f"audit {spec.name}") as skip:
            if not skip:
                run_audit(
                    str(model_dirs[spec.name] / "model.keras"),
                    out / "prepared",
                    out / "audits" / spec.name,
                    replace(study.audit, temperature=spec.temperature, seed=seed),
                    reference_ref=audit_reference(study, spec, model_dirs),
                    tracking_uri=tracking_uri,
                    experiment=experiment,
                    run_name=f"audit-{spec.name}",
                )

    with progress.step("compare") as skip:
        for family, specs in (("3d", study.models3d), ("2d", study.models2d)):
            if not specs:
                continue
            baseline = eval_dirs[specs[0].name]
            others = [eval_dirs[s.name] for s in specs[1:]]
            others += [eval_dirs[f"{s.name}-logit"] for s in specs if s.defense == "distillation"]
            run_compare(
                others,
                baseline,
                out / f"compare{family}",
                table_eps=study.table_eps,
                title=f"{family.upper()}-UNet",
            )
    with progress.step("report"):
        report = write_report(out, preset, study, prepared, tracking_uri)
    return report


def audit_reference(study: Study, spec: ModelSpec, model_dirs: dict[str, Path]) -> str | None:
    """The audit's transfer source: the undefended 3-D UNet for a defense, and for the
    undefended 3-D UNet the undefended 2-D UNet (None without one)."""
    if spec.defense != "none":
        return str(model_dirs[study.models3d[0].name] / "model.keras")
    if study.models2d:
        return str(model_dirs[study.models2d[0].name] / "model.keras")
    return None


def spec_config(study: Study, spec: ModelSpec, **overrides) -> TrainConfig:
    """The training configuration of one model of the study."""
    return TrainConfig.from_preset(
        study.train_preset,
        spec.model,
        spec.defense,
        epochs=study.epochs,
        **dict(spec.options),
        **overrides,
    )


def fine_tunes(study: Study, spec: ModelSpec) -> bool:
    """Whether ``spec`` starts from its family's trained no-defense model (``study.warm_start``).

    Adversarial training and noise augmentation do; distillation always trains its own
    teacher at T, as the paper does: a teacher trained at T = 1 (the no-defense model)
    gave soft labels that made the student no more robust than no defense.
    """
    return study.warm_start and spec.defense in ("adversarial", "noise")


def warm_start_options(study: Study, spec: ModelSpec, model_dirs: dict[str, Path]) -> dict:
    """``{"init": <the no-defense model>}`` when :func:`fine_tunes`, else ``{}``."""
    return (
        {"init": str(model_dirs[f"{spec.model}-none"] / "model.keras")}
        if fine_tunes(study, spec)
        else {}
    )


class _Progress:
    """Numbered steps with timings; finished steps are recorded and skipped on a re-run."""

    def __init__(self, plan: list[str], record: Path):
        self.plan, self.record = plan, record
        self.done = set(_read_record(record)) if record.is_file() else set()

    def step(self, name: str):
        progress = self

        class _Step:
            def __enter__(self):
                self.start = time.time()
                self.skip = name in progress.done and name not in ("prepare", "report")
                index = progress.plan.index(name) + 1
                state = "skipped (done before)" if self.skip else "running"
                _say(f"[{index}/{len(progress.plan)}] {name}: {state}")
                return self.skip

            def __exit__(self, kind, value, traceback):
                if kind is None:
                    progress.done.add(name)
                    write_json_atomic(progress.record, sorted(progress.done), indent=None)
                    if not self.skip:
                        _say(f"    done in {time.time() - self.start:.0f} s")
                return False

        return _Step()


def _read_record(path: Path) -> list[str]:
    """The finished steps recorded in ``progress.json`` (untrusted input).

    Raises:
        FileFormatError: not a JSON list of step names.
    """
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(
            f"{path}: unreadable study progress ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FileFormatError(f"{path}: unreadable study progress (expected a list of step names)")
    return value


def _say(line: str) -> None:
    """Progress goes to standard error, so that standard output carries only results."""
    print(line, file=sys.stderr, flush=True)
