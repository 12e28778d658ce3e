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
    engine=None,
) -> Path:
    """Runs (or resumes) the study once per training seed and returns the path of ``report.md``.

    The phantom and the train/test split come from ``data_seed`` and are shared by every
    seed; each training seed (initialisation, augmentation order, dropout, validation
    subset, the attacks' random starts) trains and evaluates every model in
    ``OUT/seeds/<seed>/``, with its own ``report.md``. ``OUT/report.md`` states each
    finding per seed and pooled (:mod:`keras_advseg.workflows.replication`).

    Args:
        engine: None runs the steps here, ``workers`` at a time
            (:mod:`~keras_advseg.workflows.scheduler`); a
            :class:`~keras_advseg.workflows.ray_engine.RayEngine` runs each as a Ray task.

    Raises:
        InputError: unknown preset, no or repeated seeds, or ``out`` was started with
            another preset, data or data seed.
        DataError / TrainingError / TrackingError / ClusterError: as the steps.
    """
    from keras_advseg.tracking import absolute_uri, check_reachable
    from keras_advseg.workflows.scheduler import run_steps

    if preset not in STUDIES:
        raise InputError(f"preset must be one of {sorted(STUDIES)}. Received: {preset!r}")
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise InputError(f"--seeds must be distinct integers >= 0. Received: {seeds}")
    out = Path(out)
    pending = check_same_study(out, preset, data, data_seed)
    experiment = experiment or f"advseg-reproduce-{preset}"
    # Under `mlflow run` the project's run id is in the environment; the study's runs are its own.
    os.environ.pop("MLFLOW_RUN_ID", None)
    check_reachable(tracking_uri)
    if engine is not None:  # every path as the cluster's workers see it, wherever they start
        out, tracking_uri = out.resolve(), absolute_uri(tracking_uri)
        data = None if data is None else Path(data).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = study_steps(
        preset,
        out,
        data=data,
        tracking_uri=tracking_uri,
        experiment=experiment,
        seeds=seeds,
        data_seed=data_seed,
        workers=workers,
    )
    progress = Progress([step.name for step in steps], out / "progress.json")
    steps[-1].late = lambda: dict(timings=progress.timings(), elapsed=progress.elapsed())
    if engine is None:
        record_study(out, pending)  # only now: a start that failed before this pins nothing
        run_steps(steps, progress, workers=workers)
    else:
        with engine.connected(out, tracking_uri, experiment) as cluster:
            record_study(out, pending)
            cluster.run_steps(steps, progress)
    return out / "report.md"


def study_steps(
    preset: str,
    out: Path,
    *,
    data: Path | None,
    tracking_uri: str,
    experiment: str,
    seeds: tuple[int, ...],
    data_seed: int,
    workers: int,
) -> list:
    """Every step of the study, in plan order: ``data`` (the phantom, without ``data``),
    ``prepare``, each training seed's steps (:func:`seed_steps`) and report, and the study's
    ``report`` (whose timings the caller gives as it starts, :attr:`Step.late`)."""
    from keras_advseg.workflows.scheduler import Step

    study = STUDIES[preset]
    tracking = dict(tracking_uri=tracking_uri, experiment=experiment)
    phantom = data is None
    data = out / "phantom" if phantom else data
    steps = [
        Step(
            "data",
            make_phantom if phantom else None,
            dict(out=data, study=study, seed=data_seed, workers=workers) if phantom else {},
            inline=True,
            cpus=workers,
        ),
        Step(
            "prepare",
            prepare_study_data,
            dict(data=data, out=out / "prepared", study=study, seed=data_seed, workers=workers),
            ("data",),
            inline=True,
            cpus=workers,
        ),
    ]
    seed_dirs = {}
    for seed in seeds:
        seed_dirs[seed] = seed_dir(out, seed)
        prefix = f"seed {seed}: "
        own = seed_steps(
            study,
            preset,
            out / "prepared",
            seed_dirs[seed],
            seed,
            corruption_cache=out / "corrupted",
            workers=workers,
            **tracking,
        )
        manifest = (out / "prepared" / "prepared.json",)  # read by every step of a seed
        for step in own:
            step.name = prefix + step.name
            step.after = ("prepare", *(prefix + name for name in step.after))
            step.reads = manifest
        own.append(
            Step(
                prefix + "report",
                write_seed_report,
                dict(out=seed_dirs[seed], preset=preset, prepared_dir=out / "prepared", seed=seed)
                | tracking,
                ("prepare", *(step.name for step in own)),
                inline=True,
                reads=manifest,
            )
        )
        steps += own
    steps.append(
        Step(
            "report",
            write_study_report,
            dict(out=out, preset=preset, seed_dirs=seed_dirs, prepared_dir=out / "prepared")
            | tracking,
            tuple(f"seed {seed}: report" for seed in seeds),
            inline=True,
        )
    )
    return steps


def make_phantom(out: Path, study: Study, seed: int, workers: int) -> None:
    """The study's phantom: ``study.phantom_subjects`` subjects at its voxel size."""
    from keras_advseg.data.phantom import PhantomConfig, synthesize_dataset

    synthesize_dataset(
        out,
        study.phantom_subjects,
        seed=seed,
        config=PhantomConfig(voxel_mm=study.voxel_mm),
        workers=workers,
    )


def prepare_study_data(data: Path, out: Path, study: Study, seed: int, workers: int) -> None:
    """The study's prepared volumes and split (re-checked on every run; only what is missing
    is prepared)."""
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset

    config = PrepareConfig(
        shape=(study.shape,) * 3, n4=study.n4, test_fraction=study.test_fraction, seed=seed
    )
    prepare_dataset(data, out, config, workers=workers)


def write_seed_report(
    out: Path,
    preset: str,
    prepared_dir: Path,
    seed: int,
    *,
    tracking_uri: str,
    experiment: str,
) -> None:
    """``report.md`` of one training seed (:func:`~keras_advseg.workflows.report.write_report`)."""
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.workflows.report import write_report

    prepared = load_prepared(prepared_dir)
    write_report(
        out, preset, STUDIES[preset], prepared, tracking_uri, seed=seed, experiment=experiment
    )


def write_study_report(
    out: Path,
    preset: str,
    seed_dirs: dict[int, Path],
    prepared_dir: Path,
    *,
    tracking_uri: str,
    experiment: str,
    timings: dict[str, float | None],
    elapsed: float,
) -> None:
    """``OUT/report.md``: each finding per seed and pooled
    (:func:`~keras_advseg.workflows.replication.write_replicated_report`)."""
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.workflows.replication import write_replicated_report

    write_replicated_report(
        out,
        preset,
        STUDIES[preset],
        seed_dirs,
        load_prepared(prepared_dir),
        tracking_uri,
        timings,
        elapsed=elapsed,
        experiment=experiment,
    )


CORRUPTION_SEED = 0
"""The corruptions' seed in a study: every training seed's models meet the same corrupted scans."""


def seed_dir(out: Path, seed: int) -> Path:
    """The folder of one training seed's models, evaluations, audits and report."""
    return Path(out) / "seeds" / str(seed)


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
        step = Step(
            planned.name,
            run,
            arguments,
            planned.after,
            accelerated=planned.kind not in ("leaderboard", "compare"),  # those write files only
            cpus=arguments.get("workers", 1),  # the first corruption step prepares the scans
        )
        steps.append(step)
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
