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

from keras_advseg.config import (
    STUDIES,
    EvalConfig,
    ModelSpec,
    Study,
)
from keras_advseg.errors import InputError
from keras_advseg.io import FileFormatError, write_json_atomic
from keras_advseg.training import read_state
from keras_advseg.workflows.study import (
    carded,
    fine_tunes,
    has_cards,
    is_baseline,
    seed_plan,
    spec_config,
)


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
    out.mkdir(parents=True, exist_ok=True)
    _check_same_study(out, preset, data, data_seed)
    experiment = experiment or f"advseg-reproduce-{preset}"
    # Under `mlflow run` the project's run id is in the environment; the study's runs are its own.
    os.environ.pop("MLFLOW_RUN_ID", None)
    check_reachable(tracking_uri)
    plan = ["data", "prepare"]
    for seed in seeds:
        plan += [f"seed {seed}: {step}" for step in seed_plan(study)]
    plan.append("report")
    progress = _Progress(plan, out / "progress.json")

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
    """The steps of one training seed (but its report), in the order of
    :func:`~keras_advseg.workflows.study.seed_plan`, each with the steps whose files it reads."""
    from keras_advseg.workflows.audit import run_audit
    from keras_advseg.workflows.certify import run_certification
    from keras_advseg.workflows.corruptions import run_corruption_evaluation
    from keras_advseg.workflows.evaluate import run_evaluation
    from keras_advseg.workflows.scheduler import Step

    common = dict(tracking_uri=tracking_uri, experiment=experiment)
    models = study.models3d + study.models2d
    model_dirs = {spec.name: out / "models" / spec.name for spec in models}
    steps = []
    for spec in models:
        after = ()
        if fine_tunes(study, spec):
            after = (f"train {spec.model}-none",)
        steps.append(
            Step(
                f"train {spec.name}",
                train_model,
                dict(
                    study=study,
                    spec=spec,
                    prepared_dir=prepared_dir,
                    model_dir=model_dirs[spec.name],
                    seed=seed,
                    options=warm_start_options(study, spec, model_dirs),
                    **common,
                ),
                after,
            )
        )

    def model_of(spec):
        return str(model_dirs[spec.name] / "model.keras")

    eval_dirs = {}
    for spec in models:
        baseline = is_baseline(spec)
        attacks = (study.attacks2d or study.attacks) if spec.model == "unet2d" else study.attacks
        attacks = attacks if baseline else ("fgsm",)
        if spec.model == "unet3d":  # every 3-D model is judged by the worst case too
            attacks += ("worst",)
        # a carded model's card also reads VAFA (outside the l-inf ball) and native-space Dice
        card = has_cards(study) and spec in carded(study)
        if card:
            attacks += ("vafa",)
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
            # every 3-D model's worst case over the same attacks: the ensemble and FGSM
            worst_weighs=("fgsm",),
            vafa_steps=study.worst_steps,  # VAFA as long as each attack of the worst case
            vafa_setting=study.vafa_setting,
        )
        # the card reads the clean row's native Dice and HD95 only
        jobs = [(f"evaluate {spec.name}", out / "evals" / spec.name, config, card and "clean")]
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
                    False,
                )
            )
        for label, eval_dir, eval_config, native in jobs:
            eval_dirs[eval_dir.name] = eval_dir
            steps.append(
                Step(
                    label,
                    run_evaluation,
                    dict(
                        model_ref=model_of(spec),
                        data=prepared_dir,
                        out=eval_dir,
                        config=eval_config,
                        native=native,
                        run_name=f"eval-{eval_dir.name}-seed{seed}",
                        progress=False,
                        **common,
                    ),
                    (f"train {spec.name}",),
                )
            )

    def scored(kind, run, spec, after=(), **options):
        """The step ``"<kind> <model>"``: ``run`` on the model into ``OUT/<kind>s/<model>``."""
        folder = {"audit": "audits"}.get(kind, kind)
        arguments = dict(
            model_ref=model_of(spec),
            data=prepared_dir,
            out=out / folder / spec.name,
            run_name=f"{kind}-{spec.name}-seed{seed}",
            **common,
            **options,
        )
        return Step(f"{kind} {spec.name}", run, arguments, (f"train {spec.name}", *after))

    first = None
    corruption_steps = []
    for spec in carded(study) if study.corruptions else ():
        # the first model's step prepares the shared corrupted scans (in `workers` processes);
        # the others read them
        options = dict(corruptions=study.corruptions, severities=study.corruption_severities)
        options.update(seed=CORRUPTION_SEED, cache=corruption_cache, progress=False)
        options["workers"] = workers if first is None else 1
        corruption_steps.append(
            scored(
                "corruptions", run_corruption_evaluation, spec, (first,) if first else (), **options
            )
        )
        first = first or f"corruptions {spec.name}"
    steps += corruption_steps[:1]  # in seed_plan's order: the others after the audits
    for spec in carded(study) if study.certify_sigmas else ():
        options = dict(sigmas=study.certify_sigmas, n=study.certify_n, n0=study.certify_n0)
        options.update(subjects=study.certify_subjects, seed=seed, progress=False)
        steps.append(scored("certify", run_certification, spec, **options))
    for spec in carded(study):
        reference = audit_reference(study, spec, model_dirs)
        after = () if reference is None else (f"train {Path(reference).parent.name}",)
        config = replace(study.audit, temperature=spec.temperature, seed=seed)
        steps.append(
            scored("audit", run_audit, spec, after, config=config, reference_ref=reference)
        )
    steps += corruption_steps[1:]

    if has_cards(study):
        from keras_advseg.workflows.card import study_budget, write_study_card
        from keras_advseg.workflows.leaderboard import run_leaderboard

        budget = study_budget(study, preset)
        for spec in carded(study):
            steps.append(
                Step(
                    f"card {spec.name}",
                    write_study_card,
                    dict(
                        out=out / "cards" / spec.name,
                        folders={
                            "adversarial": out / "evals" / spec.name,
                            "artifacts": out / "corruptions" / spec.name,
                            "certified": out / "certify" / spec.name,
                            "audit": out / "audits" / spec.name,
                        },
                        plan=budget,
                        model_path=model_dirs[spec.name] / "model.keras",
                        reference_ref=audit_reference(study, spec, model_dirs),
                        seed=seed,
                        **common,
                    ),
                    tuple(
                        f"{axis} {spec.name}"
                        for axis in ("evaluate", "corruptions", "certify", "audit")
                    ),
                )
            )
        steps.append(
            Step(
                "leaderboard",
                run_leaderboard,
                dict(
                    card_dirs=[out / "cards" / s.name for s in carded(study)],
                    out=out / "leaderboard",
                ),
                tuple(f"card {s.name}" for s in carded(study)),
            )
        )

    comparisons = []
    for family, specs in (("3d", study.models3d), ("2d", study.models2d)):
        if specs:
            others = [eval_dirs[s.name] for s in specs[1:]]
            others += [eval_dirs[f"{s.name}-logit"] for s in specs if s.defense == "distillation"]
            comparisons.append(
                dict(
                    others=others,
                    baseline=eval_dirs[specs[0].name],
                    out=out / f"compare{family}",
                    table_eps=study.table_eps,
                    title=f"{family.upper()}-UNet",
                )
            )
    steps.append(
        Step(
            "compare",
            compare_families,
            dict(comparisons=comparisons),
            tuple(s.name for s in steps if s.name.startswith("evaluate ")),
        )
    )
    return steps


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


STUDY_DEFINITIONS = 2
"""Bumped when a step's outputs change meaning, so that a study folder of an earlier version is
not resumed with its finished steps reused: 2 = per-subject corruption draws, sigma in
standardised units (certificates and Gaussian-noise training), the audit's eighth item, the
cards' version 2."""


def _check_same_study(out: Path, preset: str, data, data_seed: int) -> None:
    """Records the study's preset, data and data seed in ``OUT/study.json``, and refuses to
    continue a folder started with others (its models were trained on another split).

    Raises:
        InputError: naming the option that differs, or ``out`` is a non-empty folder that
            no study started.
    """
    record = out / "study.json"
    current = {
        "preset": preset,
        "data": str(Path(data).resolve()) if data is not None else None,
        "data_seed": data_seed,
        "definitions": STUDY_DEFINITIONS,
    }
    if record.is_file():
        try:
            started = json.loads(record.read_text())
            if not isinstance(started, dict):
                raise ValueError("not an object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise FileFormatError(f"{record}: unreadable study record ({exc})") from None
        if started.get("definitions") != STUDY_DEFINITIONS:
            raise InputError(
                f"{out} holds a study of another keras-advseg (definitions "
                f"{started.get('definitions', 1)}, this one {STUDY_DEFINITIONS}: the corruption "
                "draws, the certificates' sigma and the cards changed meaning, so its finished "
                "steps cannot be reused). Use another --out"
            )
        for key, option in (
            ("preset", "--preset"),
            ("data", "--data"),
            ("data_seed", "--data-seed"),
        ):
            if started.get(key) != current[key]:
                raise InputError(
                    f"{out} holds a study started with {option} {started.get(key)}; "
                    f"received {current[key]}. Use another --out"
                )
        return
    if not (out / "progress.json").is_file() and any(out.iterdir()):
        # never write into (and over) what the tool did not create: a study owns its folder
        raise InputError(
            f"{out}: a non-empty folder that is not a study of advseg reproduce (no study.json); "
            "choose an empty or new --out"
        )
    write_json_atomic(record, current)


def audit_reference(study: Study, spec: ModelSpec, model_dirs: dict[str, Path]) -> str | None:
    """The audit's transfer source: the undefended 3-D UNet for a defense, and for the
    undefended 3-D UNet the undefended 2-D UNet (None without one)."""
    if spec.defense != "none":
        return str(model_dirs[study.models3d[0].name] / "model.keras")
    if study.models2d:
        return str(model_dirs[study.models2d[0].name] / "model.keras")
    return None


def warm_start_options(study: Study, spec: ModelSpec, model_dirs: dict[str, Path]) -> dict:
    """``{"init": <the no-defense model>}`` when :func:`fine_tunes`, else ``{}``."""
    return (
        {"init": str(model_dirs[f"{spec.model}-none"] / "model.keras")}
        if fine_tunes(study, spec)
        else {}
    )


ELAPSED = "(elapsed)"
"""The key of the study's wall-clock seconds in ``progress.json`` (not a step)."""


class _Progress:
    """Numbered steps with timings; finished steps and their seconds are recorded in
    ``progress.json`` and skipped on a re-run (``prepare`` and reports always run)."""

    def __init__(self, plan: list[str], record: Path):
        self.plan, self.record = plan, record
        self.done = _read_record(record) if record.is_file() else {}
        self.earlier = self.done.get(ELAPSED) or 0.0
        self.started = time.time()

    def elapsed(self) -> float:
        """Wall-clock seconds of every run of the study so far (steps run side by side count
        once), this one up to now."""
        return self.earlier + time.time() - self.started

    def _save(self) -> None:
        self.done[ELAPSED] = round(self.elapsed(), 1)
        write_json_atomic(self.record, self.done, indent=None)

    def timings(self) -> dict[str, float | None]:
        """Seconds of each finished step of the plan (None: recorded by an older version)."""
        return {name: self.done[name] for name in self.plan if name in self.done}

    def prefixed(self, prefix: str) -> _Prefixed:
        """The same progress, for steps named ``prefix + name``."""
        return _Prefixed(self, prefix)

    def _number(self, name: str) -> str:
        return f"[{self.plan.index(name) + 1}/{len(self.plan)}] {name}"

    def is_done(self, name: str) -> bool:
        """Whether ``name`` finished before and is skipped (``prepare`` and reports never are)."""
        rerun = name == "prepare" or name.endswith("report")
        return name in self.done and not rerun

    def skipped(self, name: str) -> None:
        _say(f"{self._number(name)}: skipped (done before)")
        self._save()

    def begin(self, name: str) -> float:
        """Announces ``name`` and returns its start time."""
        _say(f"{self._number(name)}: running")
        return time.time()

    def end(self, name: str, started: float) -> None:
        """Records ``name`` as finished, with its seconds since ``started``."""
        seconds = time.time() - started
        self.done[name] = round(seconds, 1)
        _say(f"    {name}: done in {seconds:.0f} s")
        self._save()

    def step(self, name: str):
        """A context manager around one step run here; it yields whether to skip it."""
        progress = self

        class _Step:
            def __enter__(self):
                self.skip = progress.is_done(name)
                if self.skip:
                    progress.skipped(name)
                else:
                    self.start = progress.begin(name)
                return self.skip

            def __exit__(self, kind, value, traceback):
                if kind is None and not self.skip:
                    progress.end(name, self.start)
                return False

        return _Step()


class _Prefixed:
    """A :class:`_Progress` whose step names start with ``prefix``."""

    def __init__(self, progress: _Progress, prefix: str):
        self.progress, self.prefix = progress, prefix

    def step(self, name: str):
        return self.progress.step(self.prefix + name)

    def is_done(self, name: str) -> bool:
        return self.progress.is_done(self.prefix + name)

    def skipped(self, name: str) -> None:
        self.progress.skipped(self.prefix + name)

    def begin(self, name: str) -> float:
        return self.progress.begin(self.prefix + name)

    def end(self, name: str, started: float) -> None:
        self.progress.end(self.prefix + name, started)


def _read_record(path: Path) -> dict[str, float | None]:
    """The finished steps recorded in ``progress.json`` (untrusted input): ``{step: seconds}``,
    or a list of step names (older versions).

    Raises:
        FileFormatError: neither.
    """
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(
            f"{path}: unreadable study progress ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return dict.fromkeys(value)
    if isinstance(value, dict) and all(
        v is None or (isinstance(v, (int, float)) and v >= 0) for v in value.values()
    ):
        return value
    raise FileFormatError(f"{path}: unreadable study progress (expected {{step name: seconds}})")


def _say(line: str) -> None:
    """Progress goes to standard error, so that standard output carries only results."""
    print(line, file=sys.stderr, flush=True)
