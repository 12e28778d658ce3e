"""The study workflow (``advseg reproduce``): the whole study in one command, resumable.

Prepare data (the phantom by default) -> train the 3-D and 2-D UNet without
and with each defense -> attack each (FGSM, i-FGSM, targeted i-FGSM, PGD,
sweeps, logit-level attacks on distilled models) -> paired statistics ->
``report.md`` (:mod:`keras_advseg.workflows.report`). Every step leaves its
output in ``OUT``; re-running skips finished steps. The presets are
:data:`keras_advseg.study_presets.STUDIES`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from keras_advseg.config import EvalConfig
from keras_advseg.errors import InputError
from keras_advseg.study_presets import STUDIES, ModelSpec, Study
from keras_advseg.training import read_state
from keras_advseg.workflows.study import (
    audit_reference,
    carded,
    fine_tunes,
    has_cards,
    is_baseline,
    planned_steps,
    seed_plan,
    spec_config,
)
from keras_advseg.workflows.study_record import Progress, check_same_study, record_study


def reproduce(
    preset: str,
    out: str | Path,
    *,
    data: str | Path | None = None,
    tracking_uri: str,
    experiment: str | None = None,
    seeds: tuple[int, ...] = (0,),
    data_seed: int = 0,
    workers: int = 1,
) -> Path:
    """Runs (or resumes) the study once per training seed and returns the path of ``report.md``.

    The phantom and the train/test split come from ``data_seed`` and are shared by every
    seed; each training seed (initialisation, augmentation order, dropout, validation
    subset, the attacks' random starts) trains and evaluates every model in
    ``OUT/seeds/<seed>/``, with its own ``report.md``. ``OUT/report.md`` states each
    finding per seed and pooled (:mod:`keras_advseg.workflows.replication`).

    Raises:
        InputError: unknown preset, no or repeated seeds, or ``out`` was started with
            another preset, data or data seed.
        DataError / TrainingError / TrackingError: as the steps.
    """
    from keras_advseg.data.phantom import PhantomConfig, synthesize_dataset
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset
    from keras_advseg.tracking import check_reachable
    from keras_advseg.workflows.replication import write_replicated_report

    if preset not in STUDIES:
        raise InputError(f"preset must be one of {sorted(STUDIES)}. Received: {preset!r}")
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise InputError(f"--seeds must be distinct integers >= 0. Received: {seeds}")
    study = STUDIES[preset]
    out = Path(out)
    pending = check_same_study(out, preset, data, data_seed)
    experiment = experiment or f"advseg-reproduce-{preset}"
    # Under `mlflow run` the project's run id is in the environment; the study's runs are its own.
    os.environ.pop("MLFLOW_RUN_ID", None)
    check_reachable(tracking_uri)
    out.mkdir(parents=True, exist_ok=True)
    record_study(out, pending)  # only now: a start that failed before this pins nothing
    plan = ["data", "prepare"]
    for seed in seeds:
        plan += [f"seed {seed}: {step}" for step in seed_plan(study)]
    plan.append("report")
    progress = Progress(plan, out / "progress.json")

    with progress.step("data") as skip:
        if data is None:
            data = out / "phantom"
            if not skip:
                synthesize_dataset(
                    data,
                    study.phantom_subjects,
                    seed=data_seed,
                    config=PhantomConfig(voxel_mm=study.voxel_mm),
                    workers=workers,
                )
    with progress.step("prepare") as skip:
        prepared = prepare_dataset(
            data,
            out / "prepared",
            PrepareConfig(
                shape=(study.shape,) * 3,
                n4=study.n4,
                test_fraction=study.test_fraction,
                seed=data_seed,
            ),
            workers=workers,
        )
    seed_dirs = {}
    for seed in seeds:
        seed_dirs[seed] = seed_dir(out, seed)
        run_seed(
            study,
            preset,
            out / "prepared",
            prepared,
            seed_dirs[seed],
            seed,
            progress.prefixed(f"seed {seed}: "),
            tracking_uri=tracking_uri,
            experiment=experiment,
            corruption_cache=out / "corrupted",
            workers=workers,
        )
    with progress.step("report"):
        report = write_replicated_report(
            out,
            preset,
            study,
            seed_dirs,
            prepared,
            tracking_uri,
            progress.timings(),
            elapsed=progress.elapsed(),
            experiment=experiment,
        )
    return report


CORRUPTION_SEED = 0
"""The corruptions' seed in a study: every training seed's models meet the same corrupted scans."""


def seed_dir(out: Path, seed: int) -> Path:
    """The folder of one training seed's models, evaluations, audits and report."""
    return Path(out) / "seeds" / str(seed)


def run_seed(
    study: Study,
    preset: str,
    prepared_dir: Path,
    prepared,
    out: Path,
    seed: int,
    progress,
    *,
    tracking_uri: str,
    experiment: str,
    corruption_cache: Path | None = None,
    workers: int = 1,
) -> None:
    """Trains, evaluates (under attacks and corruptions), certifies, audits and cards every model
    at one training seed, then its ``report.md``; ``corruption_cache`` holds the corrupted scans
    every seed's models share. With ``workers`` > 1 independent steps run side by side in that
    many processes (:mod:`~keras_advseg.workflows.scheduler`)."""
    from keras_advseg.workflows.report import write_report
    from keras_advseg.workflows.scheduler import run_steps

    steps = seed_steps(
        study,
        preset,
        prepared_dir,
        out,
        seed,
        tracking_uri=tracking_uri,
        experiment=experiment,
        corruption_cache=corruption_cache,
        workers=workers,
    )
    run_steps(steps, progress, workers=workers)
    with progress.step("report"):
        write_report(out, preset, study, prepared, tracking_uri, seed=seed, experiment=experiment)


def seed_steps(
    study: Study,
    preset: str,
    prepared_dir: Path,
    out: Path,
    seed: int,
    *,
    tracking_uri: str,
    experiment: str,
    corruption_cache: Path | None = None,
    workers: int = 1,
) -> list:
    """The steps of one training seed (but its report): each step of
    :func:`~keras_advseg.workflows.study.planned_steps`, in its order, with the function it runs
    and that function's arguments."""
    from keras_advseg.workflows.scheduler import Step

    seed_run = _SeedRun(study, preset, prepared_dir, out, seed, corruption_cache, workers)
    seed_run.tracking = dict(tracking_uri=tracking_uri, experiment=experiment)
    steps = []
    for planned in planned_steps(study):
        run, arguments = getattr(seed_run, planned.kind.replace("-", "_"))(planned)
        steps.append(Step(planned.name, run, arguments, planned.after))
    return steps


class _SeedRun:
    """The function and arguments of each kind of step of one training seed
    (:class:`~keras_advseg.workflows.study.PlannedStep`'s ``kind``), and where each writes:
    ``OUT/models``, ``OUT/evals``, ``OUT/<axis>``, ``OUT/cards``."""

    def __init__(self, study, preset, prepared_dir, out, seed, corruption_cache, workers):
        self.study, self.preset, self.prepared_dir, self.out = study, preset, prepared_dir, out
        self.seed, self.corruption_cache, self.workers = seed, corruption_cache, workers
        models = study.models3d + study.models2d
        self.model_dirs = {spec.name: out / "models" / spec.name for spec in models}
        self.tracking: dict = {}  # the MLflow store and experiment of every tracked step

    def model(self, spec: ModelSpec) -> str:
        return str(self.model_dirs[spec.name] / "model.keras")

    def evaluation(self, spec: ModelSpec, logit: bool = False) -> Path:
        return self.out / "evals" / (f"{spec.name}-logit" if logit else spec.name)

    def scored_dir(self, kind: str, spec: ModelSpec) -> Path:
        return self.out / {"audit": "audits"}.get(kind, kind) / spec.name

    def reference(self, spec: ModelSpec) -> str | None:
        """The audit's transfer source (:func:`~keras_advseg.workflows.study.audit_reference`)."""
        reference = audit_reference(self.study, spec)
        return None if reference is None else self.model(reference)

    def train(self, planned):
        spec, init = planned.spec, {}
        if fine_tunes(self.study, spec):  # from the no-defense model of its family
            init = {"init": str(self.model_dirs[f"{spec.model}-none"] / "model.keras")}
        return train_model, dict(
            study=self.study,
            spec=spec,
            prepared_dir=self.prepared_dir,
            model_dir=self.model_dirs[spec.name],
            seed=self.seed,
            options=init,
            **self.tracking,
        )

    def evaluate(self, planned, logit: bool = False):
        from keras_advseg.workflows.evaluate import run_evaluation

        study, spec = self.study, planned.spec
        eps = tuple(e for e in study.table_eps if e > 0)
        # a carded model's card also reads VAFA (outside the l-inf ball) and native-space Dice
        card = has_cards(study) and spec in carded(study)
        if logit:
            config = EvalConfig(
                attacks=("fgsm",),
                eps=eps,
                steps=study.steps,
                eps_sweep=(),
                attack_temperature=spec.temperature,
                seed=self.seed,
            )
        else:
            baseline = is_baseline(spec)
            attacks = study.attacks
            if spec.model == "unet2d":
                attacks = study.attacks2d or study.attacks
            attacks = attacks if baseline else ("fgsm",)
            if spec.model == "unet3d":  # every 3-D model is judged by the worst case too
                attacks += ("worst",)
            if card:
                attacks += ("vafa",)
            config = EvalConfig(
                attacks=attacks,
                eps=eps,
                iterative_eps=(0.05,),
                steps=study.steps,
                eps_sweep=study.eps_sweep,
                iterations_sweep=baseline and spec.model == "unet3d",
                seed=self.seed,
                ensemble=study.ensemble,
                worst_steps=study.worst_steps,
                # every 3-D model's worst case over the same attacks: the ensemble and FGSM
                worst_weighs=("fgsm",),
                vafa_steps=study.worst_steps,  # VAFA as long as each attack of the worst case
                vafa_setting=study.vafa_setting,
            )
        folder = self.evaluation(spec, logit)
        return run_evaluation, dict(
            model_ref=self.model(spec),
            data=self.prepared_dir,
            out=folder,
            config=config,
            # the card reads the clean row's native Dice and HD95 only
            native=not logit and card and "clean",
            run_name=f"eval-{folder.name}-seed{self.seed}",
            progress=False,
            **self.tracking,
        )

    def evaluate_logit(self, planned):
        return self.evaluate(planned, logit=True)

    def scored(self, planned, run, **options):
        """``run`` on the model into ``OUT/<axis>/<model>``."""
        spec = planned.spec
        return run, dict(
            model_ref=self.model(spec),
            data=self.prepared_dir,
            out=self.scored_dir(planned.kind, spec),
            run_name=f"{planned.kind}-{spec.name}-seed{self.seed}",
            **self.tracking,
            **options,
        )

    def corruptions(self, planned):
        from keras_advseg.workflows.corruptions import run_corruption_evaluation

        study = self.study
        # the first model's step prepares the shared corrupted scans (in `workers` processes);
        # the others, after it, read them
        first = not any(name.startswith("corruptions ") for name in planned.after)
        options = dict(corruptions=study.corruptions, severities=study.corruption_severities)
        options.update(seed=CORRUPTION_SEED, cache=self.corruption_cache, progress=False)
        return self.scored(
            planned, run_corruption_evaluation, workers=self.workers if first else 1, **options
        )

    def certify(self, planned):
        from keras_advseg.workflows.certify import run_certification

        study = self.study
        options = dict(sigmas=study.certify_sigmas, n=study.certify_n, n0=study.certify_n0)
        options.update(subjects=study.certify_subjects, seed=self.seed, progress=False)
        return self.scored(planned, run_certification, **options)

    def audit(self, planned):
        from keras_advseg.workflows.audit import run_audit

        config = replace(self.study.audit, temperature=planned.spec.temperature, seed=self.seed)
        reference = self.reference(planned.spec)
        return self.scored(planned, run_audit, config=config, reference_ref=reference)

    def card(self, planned):
        from keras_advseg.workflows.card import study_plan, write_study_card

        spec = planned.spec
        folders = {
            "adversarial": self.evaluation(spec),
            "corruptions": self.scored_dir("corruptions", spec),
            "certified": self.scored_dir("certify", spec),
            "audit": self.scored_dir("audit", spec),
        }
        return write_study_card, dict(
            out=self.out / "cards" / spec.name,
            folders=folders,
            plan=study_plan(self.study, self.preset),
            model_path=self.model_dirs[spec.name] / "model.keras",
            reference_ref=self.reference(spec),
            seed=self.seed,
            prepared=self.prepared_dir,
            **self.tracking,
        )

    def leaderboard(self, planned):
        from keras_advseg.workflows.leaderboard import run_leaderboard

        cards = [self.out / "cards" / s.name for s in carded(self.study)]
        return run_leaderboard, dict(card_dirs=cards, out=self.out / "leaderboard")

    def compare(self, planned):
        """``advseg compare`` of each family (3-D, 2-D) of the study."""
        study, comparisons = self.study, []
        for family, specs in (("3d", study.models3d), ("2d", study.models2d)):
            if specs:
                others = [self.evaluation(s) for s in specs[1:]]
                others += [self.evaluation(s, True) for s in specs if s.defense == "distillation"]
                comparisons.append(
                    dict(
                        others=others,
                        baseline=self.evaluation(specs[0]),
                        out=self.out / f"compare{family}",
                        table_eps=study.table_eps,
                        title=f"{family.upper()}-UNet",
                    )
                )
        return compare_families, dict(comparisons=comparisons)


def train_model(
    study: Study,
    spec: ModelSpec,
    prepared_dir: Path,
    model_dir: Path,
    seed: int,
    options: dict,
    *,
    tracking_uri: str,
    experiment: str,
) -> None:
    """Trains one model of the study into ``model_dir``, resuming an interrupted training."""
    from keras_advseg.workflows.train import train

    state = read_state(model_dir)
    resume = state is not None and not state.get("finished")
    train(
        spec_config(study, spec, seed=seed, **options),
        prepared_dir,
        model_dir,
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=f"{spec.name}-seed{seed}",
        resume=resume,
        verbose=0,
    )


def compare_families(comparisons: list[dict]) -> None:
    """``advseg compare`` of each family (3-D, 2-D) of the study."""
    from keras_advseg.workflows.compare import run_compare

    for comparison in comparisons:
        run_compare(
            comparison["others"],
            comparison["baseline"],
            comparison["out"],
            table_eps=comparison["table_eps"],
            title=comparison["title"],
        )
