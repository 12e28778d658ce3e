"""The ``advseg`` command line.

Every error caused by input (a bad file, a bad option value) is printed as one
line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

import keras_advseg
from keras_advseg import __version__
from keras_advseg import config as cfg
from keras_advseg.cli_args import (
    RegistryChoice,
    model_and_data,
    parse_floats,
    parse_seeds,
    parse_shape,
    renamed_option,
    seed_option,
    tracking_options,
    train_options,
)
from keras_advseg.corruptions.registry import CORRUPTIONS
from keras_advseg.io import plural

__all__ = ["main", "parse_floats", "parse_seeds", "parse_shape"]

_EVAL = cfg.EvalConfig()  # the defaults the options show
_AUDIT = cfg.AuditConfig()


class OneLineError(click.ClickException):
    """A one-line error about the user's input or files; exit status 2."""

    exit_code = 2


def one_line(exc: BaseException) -> str:
    """The first line of an error's message; an OS error as ``FILE: reason``."""
    if isinstance(exc, OSError) and exc.filename is not None:
        target = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return f"{target}: {exc.strerror or type(exc).__name__}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def friendly_errors(fn):
    """Turns the package's own errors and OS errors into :class:`OneLineError` (exit 2).

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from keras_advseg.errors import AdvsegError

        try:
            return fn(*args, **kwargs)
        except (AdvsegError, OSError) as exc:
            raise OneLineError(one_line(exc)) from None

    return wrapper


TENSORFLOW_COMMANDS = (
    "train",
    "evaluate",
    "certify",
    "card",
    "audit",
    "reproduce",
    "export",
    "predict",
    "score",
)
"""Commands that use TensorFlow; the others (data, compare) start without it."""


def quiet_logs(verbose: bool, import_tensorflow: bool = True) -> None:
    """Keeps TensorFlow's C++ log and MLflow's notices out of the output unless ``verbose``.

    TensorFlow prints several lines that are not errors (CUDA probing on a CPU
    machine, "remapper failed", oneDNN notices) while it is imported and when
    it compiles a graph; they would bury a real error. Quiet: its C++ log level
    is 3 (unless ``TF_CPP_MIN_LOG_LEVEL`` is set) and the import itself writes
    nothing to standard error. MLflow logs warnings and errors only.
    """
    import logging

    if verbose:
        if not keras_advseg.TF_LOG_LEVEL_SET_BY_USER:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
            keras_advseg.show_tensorflow_log()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # MLflow sets its loggers' level from this variable when it is imported, later
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if not import_tensorflow:
        return
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow  # noqa: F401  (imported here, silently, once)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="advseg")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show TensorFlow's C++ log and MLflow's notices (hidden by default so that errors stand "
    "out).",
)
@click.pass_context
def main(ctx: click.Context, verbose: bool):
    """Measure and improve the adversarial robustness of brain-tumour segmentation networks.

    Reproduces Liu et al. 2021, "Robustifying Deep Networks for Medical Image
    Segmentation", on BraTS-style MRI (four modalities) or on the built-in
    MNI152 phantom.
    """
    if not ctx.resilient_parsing and ctx.invoked_subcommand is not None:
        needs = ctx.invoked_subcommand in TENSORFLOW_COMMANDS
        if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
            needs = False
        quiet_logs(verbose, import_tensorflow=needs)


@main.group()
def data():
    """Make, inspect and prepare datasets."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=40, help="Number of subjects.")
@click.option(
    "--voxel-mm",
    type=click.FloatRange(min=0.5, max=8.0),
    default=2.0,
    help="Isotropic voxel size in millimetres (MNI152 at 2 mm is 99x117x95).",
)
@seed_option("Seed; the same seed gives identical volumes.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Parallel processes.")
@click.option(
    "--preview",
    is_flag=True,
    help="Also write OUT/preview.png: mid-tumour axial slices with labels.",
)
@friendly_errors
def data_synth(out: Path, n: int, voxel_mm: float, seed: int, workers: int, preview: bool):
    """Write a BraTS-2021-layout phantom dataset built from MNI152 anatomy to OUT.

    Existing subjects in OUT are kept, so an interrupted run resumes.
    """
    from keras_advseg.data.phantom import PhantomConfig, save_preview, synthesize_dataset

    folders = synthesize_dataset(
        out, n, seed=seed, config=PhantomConfig(voxel_mm=voxel_mm), workers=workers
    )
    click.echo(f"wrote {plural(len(folders), 'subject')} to {out}")
    if preview:
        click.echo(f"preview: {save_preview(out, out / 'preview.png')}")


@data.command("prepare")
@click.argument("root", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Cache folder for the prepared volumes.",
)
@click.option(
    "--shape",
    type=str,
    default="128",
    help="Target shape in voxels: one size (128) or three (128,128,96). Each must be "
    "divisible by 16 for the default 5-level UNet.",
)
@click.option("--n4/--no-n4", default=True, help="N4 bias-field correction (SimpleITK).")
@click.option(
    "--n4-shrink", type=click.IntRange(min=1), default=4, help="Shrink factor of the N4 estimate."
)
@click.option(
    "--normalization",
    type=click.Choice(cfg.NORMALIZATIONS),
    default="global",
    help="global: per-modality mean/std over the training split (paper); volume: per-volume "
    "z-score.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    help="Share of labelled subjects held out for testing.",
)
@seed_option("Seed of the train/test split.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Parallel processes.")
@friendly_errors
def data_prepare(
    root: Path,
    out: Path,
    shape: str,
    n4: bool,
    n4_shrink: int,
    normalization: str,
    test_fraction: float,
    seed: int,
    workers: int,
):
    """Preprocess the dataset under ROOT (any supported layout) into a cache.

    N4 bias correction, crop to the brain, resize (linear for images, nearest
    for labels), standardisation statistics from the training split, and a
    deterministic train/test split. Re-running resumes; a changed
    configuration re-prepares.
    """
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset

    config = PrepareConfig(
        shape=parse_shape(shape),
        n4=n4,
        n4_shrink=n4_shrink,
        normalization=normalization,
        test_fraction=test_fraction,
        seed=seed,
    )
    prepared = prepare_dataset(root, out, config, workers=workers)
    click.echo(
        f"prepared {plural(len(prepared.ids('all')), 'subject')} into {out} "
        f"(train {len(prepared.train_ids)}, test {len(prepared.test_ids)}, shape {prepared.shape})"
    )


@data.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@friendly_errors
def data_info(path: Path):
    """Describe a raw dataset folder or a prepared cache at PATH, as JSON."""
    from keras_advseg.data.prepare import describe

    click.echo(json.dumps(describe(path), indent=2))


@main.command("train")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="A raw dataset folder (any supported layout; prepared into OUT/prepared) or a prepared "
    "cache.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: model.keras (the best epoch by validation Dice), last.keras (the last "
    "epoch), best.keras (the best epoch so far, updated while training runs; model.keras is "
    "its copy at the end), checkpoint/ (to resume).",
)
@click.option(
    "--preset",
    type=click.Choice(list(cfg.PRESETS)),
    default="quick",
    show_default=True,
    help="quick: 32^3, minutes on a CPU; smoke: 16^3, seconds; paper: 128^3 and the paper's "
    "batch/lr/epochs (a GPU job). Options below override the preset.",
)
@train_options
@click.option(
    "--resume", is_flag=True, help="Continue the interrupted run in --out from its last checkpoint."
)
@click.option("--run-name", help="MLflow run name [MODEL-DEFENSE].")
@tracking_options()
@friendly_errors
def train_command(data, out, preset, resume, run_name, tracking_uri, experiment, **options):
    """Train a segmentation network, with or without a defense, tracked in MLflow."""
    from keras_advseg.errors import ClusterError, TrackingError, TrainingError
    from keras_advseg.workflows.train import train

    model, defense = options.pop("model"), options.pop("defense")
    config = cfg.TrainConfig.from_preset(preset, model, defense, **options)
    try:
        result = train(
            config,
            data,
            out,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name or f"{model}-{defense}",
            resume=resume,
        )
    except (TrainingError, TrackingError, ClusterError) as exc:  # exit 1: the input was fine
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"saved {result.model_path} (best mean validation Dice {result.best_score:.3f}); "
        f"MLflow run {result.run_id}"
    )
    _echo_ui(tracking_uri, experiment)


@main.command("evaluate")
@model_and_data(
    "Output folder: per_subject.csv and summary.json; iterations.csv and fig_iterations.png "
    "with --iterations-sweep; fig_example.png; fig_eps.png with --eps-sweep; fig_eps_curve.png "
    "with --eps-curve. With --corruptions instead: corruptions.csv, corruption_tests.csv, "
    "corruption_summary.json, fig_corruption_severity.png, fig_corruption_grid.png "
    "(corruptions_reference.csv with --reference) and the prepared scans in corrupted/."
)
@click.option(
    "--split",
    type=click.Choice(["test", "train", "all"]),
    default="test",
    help="Subjects to evaluate.",
)
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    type=RegistryChoice(cfg.ATTACKS),
    default=_EVAL.attacks,
    show_default=True,
    help="Attack (repeatable): targeted-ifgsm is the paper's targeted i-FGSM (every voxel "
    "towards label 1), pgd-dice PGD on soft Dice, worst the per-subject worst case over the "
    "ensemble and FGSM.",
)
@click.option(
    "--eps",
    default="0.05",
    show_default=True,
    help="Attack budgets, relative to each input's intensity range (max - min): one value or a "
    "list (0,0.05,0.1).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=_EVAL.steps,
    show_default=True,
    help="Iterations of every iterative attack (i-FGSM, targeted i-FGSM, PGD, APGD, ...).",
)
@click.option(
    "--eps-sweep",
    default=None,
    help="FGSM budgets swept from ONE gradient, START:STOP:STEP or a list; the paper's is "
    "0:0.01:0.001.",
)
@click.option(
    "--eps-curve",
    is_flag=True,
    help="Also run every attack at eps 0.0125, 0.025, ..., 0.8 (doubling): Dice down to 0. A "
    "subject whose Dice reached 0 keeps that input for the larger budgets.",
)
@click.option(
    "--iterations-sweep",
    is_flag=True,
    help="Record Dice and PSNR/SSIM/RMSE after every i-FGSM and targeted i-FGSM iteration (one "
    "run each).",
)
@click.option(
    "--attack-temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=_EVAL.attack_temperature,
    help="Softmax temperature of the attack loss; T > 1 attacks distilled models at the logit "
    "level.",
)
@click.option(
    "--transfer-from",
    "transfer_ref",
    default=None,
    help="Craft the attacks on this other model (file, run id or runs:/ URI) and apply them "
    "(transfer).",
)
@click.option(
    "--restarts",
    type=click.IntRange(min=1),
    default=_EVAL.restarts,
    show_default=True,
    help="Random restarts of pgd-dice: per subject the restart with the highest loss is kept.",
)
@click.option(
    "--vafa-setting",
    type=click.Choice(cfg.VAFA_SETTING_NAMES),
    default=_EVAL.vafa_setting,
    show_default=True,
    help="VAFA's setting (--attack vafa): light (8^3 blocks, q_max 10, --steps steps, Dice) or "
    "paper (Hanif et al.: 32^3 blocks, q_max 20, 20 steps, Dice minus SSIM).",
)
@seed_option("Seed of the attacks' random starts.", _EVAL.seed)
@click.option("--run-name", help="MLflow run name [eval-ATTACKS].")
@click.option(
    "--native",
    is_flag=True,
    help="Also score Dice and HD95 (mm) in each scan's own space: the perturbation is made in model "
    "space and the prediction mapped back (needs the raw dataset the cache was prepared from).",
)
@click.option(
    "--strategy",
    type=click.Choice(cfg.STRATEGIES),
    default="default",
    show_default=True,
    help="mirrored: subjects spread over the local devices; multiworker: also over the machines "
    "in TF_CONFIG (run the same command on each; the chief merges and writes the rows).",
)
@click.option(
    "--corruptions",
    default=None,
    help="Score MRI artifacts and operator errors instead of attacks: all, scanner, operator or "
    "a list (" + ", ".join(CORRUPTIONS.names()) + "). Each raw test scan is corrupted in its "
    "own space and goes through the model's stored preprocessing.",
)
@click.option(
    "--severities",
    default="1-5",
    show_default=True,
    help="Corruption severities: 1-5, 3 or 1,3,5 (the clean scans are always scored).",
)
@click.option(
    "--reference",
    "reference_ref",
    default=None,
    help="With --corruptions: a reference model (file, run id or runs:/ URI) scored on the same "
    "scans, for the corruption error mCE.",
)
@click.option(
    "--modalities",
    default=None,
    help="With --corruptions: the sequences they may touch, e.g. flair or t1,t1gd [all].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --corruptions: processes that prepare the corrupted scans (N4, k-space).",
)
@click.option(
    "--corruption-cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --corruptions: folder of prepared corrupted scans, shared by every model "
    "evaluated on them [OUT/corrupted].",
)
@tracking_options()
@friendly_errors
def evaluate_command(
    model_ref,
    data,
    out,
    split,
    attacks,
    eps,
    steps,
    eps_sweep,
    eps_curve,
    iterations_sweep,
    attack_temperature,
    transfer_ref,
    restarts,
    vafa_setting,
    seed,
    run_name,
    native,
    strategy,
    corruptions,
    severities,
    reference_ref,
    modalities,
    workers,
    corruption_cache,
    tracking_uri,
    experiment,
):
    """Attack MODEL (a .keras file, an MLflow run id or runs:/ URI) and score it per subject;
    with --corruptions, score it under MRI artifacts and operator errors instead."""
    from keras_advseg.errors import ClusterError, TrackingError
    from keras_advseg.workflows.evaluate import run_evaluation, summary_lines

    context = click.get_current_context()
    attack_only = (
        "attacks",
        "eps",
        "eps_sweep",
        "eps_curve",
        "iterations_sweep",
        "attack_temperature",
        "transfer_ref",
        "restarts",
        "vafa_setting",
        "steps",
        "strategy",
    )
    corruption_only = ("severities", "reference_ref", "modalities", "corruption_cache", "workers")
    given = [
        name
        for name in attack_only + corruption_only
        if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    if corruptions is not None:
        clash = [n for n in given if n in attack_only]
        if clash:
            raise click.UsageError(
                f"--corruptions scores artifacts, not attacks; drop {_option_name(clash[0])} "
                "(run evaluate twice for both)"
            )
        _evaluate_corruptions(
            model_ref,
            data,
            out,
            split,
            corruptions,
            severities,
            reference_ref,
            modalities,
            corruption_cache,
            seed,
            run_name,
            native,
            tracking_uri,
            experiment,
            workers,
        )
        return
    stray = [n for n in given if n in corruption_only]
    if stray:
        raise click.UsageError(f"{_option_name(stray[0])} needs --corruptions")

    config = cfg.EvalConfig(
        attacks=tuple(attacks),
        eps=parse_floats(eps, "--eps") or (0.05,),
        steps=steps,
        eps_sweep=parse_floats(eps_sweep, "--eps-sweep"),
        eps_curve=eps_curve,
        iterations_sweep=iterations_sweep,
        attack_temperature=attack_temperature,
        seed=seed,
        restarts=restarts,
        vafa_setting=vafa_setting,
    )
    try:
        summary = run_evaluation(
            model_ref,
            data,
            out,
            config,
            split=split,
            transfer_ref=transfer_ref,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
            native=native,
            strategy=strategy,
        )
    except (TrackingError, ClusterError) as exc:  # exit 1: the input was fine
        raise click.ClickException(str(exc)) from None
    for line in summary_lines(summary, out):
        click.echo(line)
    _echo_ui(tracking_uri, experiment)


def _option_name(parameter: str) -> str:
    names = {
        "attacks": "--attack",
        "transfer_ref": "--transfer-from",
        "reference_ref": "--reference",
    }
    return names.get(parameter, "--" + parameter.replace("_", "-"))


def _evaluate_corruptions(
    model_ref,
    data,
    out,
    split,
    corruptions,
    severities,
    reference_ref,
    modalities,
    cache,
    seed,
    run_name,
    native,
    tracking_uri,
    experiment,
    workers=1,
):
    from keras_advseg.corruptions import parse_corruptions, parse_severities
    from keras_advseg.corruptions.core import check_modalities
    from keras_advseg.errors import InputError, TrackingError
    from keras_advseg.workflows.corruptions import run_corruption_evaluation, summary_lines

    try:
        names = parse_corruptions(corruptions)
        levels = parse_severities(severities)
        sequences = check_modalities(modalities) if modalities else None
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        summary = run_corruption_evaluation(
            model_ref,
            data,
            out,
            corruptions=names,
            severities=levels,
            seed=seed,
            split=split,
            native=native,
            reference_ref=reference_ref,
            modalities=sequences,
            cache=cache,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
            workers=workers,
        )
    except TrackingError as exc:  # exit 1: the input was fine
        raise click.ClickException(str(exc)) from None
    for line in summary_lines(summary, out):
        click.echo(line)
    _echo_ui(tracking_uri, experiment)


@main.command("certify")
@model_and_data(
    "Output folder: certified.csv (per subject and sigma), certify_summary.json, "
    "fig_certified.png, fig_certificate.png."
)
@click.option(
    "--sigma",
    "sigmas",
    default="0.25,0.5,1",
    show_default=True,
    help="Noise standard deviations in the model's input units: standardised intensities, "
    "multiples of each sequence's tissue standard deviation, the same noise for every volume "
    "(one value or a list); each certifies l2 radius sigma * Phi^-1(tau) in the same units.",
)
@click.option(
    "--n",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Noisy samples counted per volume for the test (SegCertify: 100 to 1000).",
)
@click.option(
    "--n0",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Noisy samples that choose each voxel's class.",
)
@click.option(
    "--tau",
    type=click.FloatRange(0.5, 1, max_open=True),
    default=0.75,
    show_default=True,
    help="The class probability a voxel must provably exceed; a larger tau certifies a larger "
    "radius and abstains more.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.001,
    show_default=True,
    help="Family-wise error over all voxels of a volume (and, for the region certificates, over "
    "all voxels and regions).",
)
@click.option(
    "--correction",
    type=click.Choice(["holm", "bonferroni"]),
    default="holm",
    show_default=True,
    help="Multiple-testing correction over the voxels (Holm certifies at least as many).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Noisy copies per forward pass.",
)
@click.option(
    "--split", type=click.Choice(["test", "train", "all"]), default="test", help="Subjects."
)
@click.option(
    "--subjects",
    type=click.IntRange(min=0),
    default=0,
    help="Certify the first N subjects of the split (0: all).",
)
@seed_option("Seed of the noise.", 0)
@click.option("--run-name", help="MLflow run name [certify].")
@tracking_options()
@friendly_errors
def certify_command(
    model_ref,
    data,
    out,
    sigmas,
    n,
    n0,
    tau,
    alpha,
    correction,
    batch_size,
    split,
    subjects,
    seed,
    run_name,
    tracking_uri,
    experiment,
):
    """Certify MODEL's segmentation by randomized smoothing: per voxel, a label that provably
    cannot change within an l2 radius, or an abstention (SegCertify, for volumes); and per
    BraTS region (WT, TC, ET), whether the voxel is provably inside or outside it."""
    from keras_advseg.errors import TrackingError
    from keras_advseg.workflows.certify import run_certification, summary_lines

    levels = parse_floats(sigmas, "--sigma")
    if not levels or min(levels) <= 0:
        raise click.UsageError(f"--sigma must be positive numbers. Received: {sigmas!r}")
    try:
        summary = run_certification(
            model_ref,
            data,
            out,
            sigmas=levels,
            n=n,
            n0=n0,
            tau=tau,
            alpha=alpha,
            correction=correction,
            batch_size=batch_size,
            seed=seed,
            split=split,
            subjects=subjects,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
        )
    except TrackingError as exc:  # exit 1: the input was fine
        raise click.ClickException(str(exc)) from None
    for line in summary_lines(summary, out):
        click.echo(line)
    _echo_ui(tracking_uri, experiment)


@main.command("card")
@click.argument("model_ref", metavar="MODEL")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="The raw dataset (its test split; the artifacts need the raw scans).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Card folder: card.json, card.md, card.html, and each axis's own files in "
    "adversarial/, artifacts/, certified/, audit/ (an axis already there at the same budget "
    "is reused).",
)
@click.option(
    "--budget",
    type=click.Choice(["quick", "standard", "full"]),
    default="quick",
    show_default=True,
    help="Attack steps and ensemble, corruptions and severities, sigmas and samples, subjects: "
    "the card states its budget and what it can therefore claim.",
)
@click.option(
    "--reference",
    "reference_ref",
    default=None,
    help="An undefended model (file, run id or runs:/ URI): the audit's transfer check and the "
    "artifacts' mCE.",
)
@click.option(
    "--preprocessing",
    "preprocessing_json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="For a model trained elsewhere: its preprocessing as JSON (shape, n4, n4_shrink, "
    "margin, normalization, mean, std; see the docs); the card writes and uses a copy "
    "OUT/model.keras that carries it.",
)
@seed_option("Seed of the attacks, corruptions and noise.", 0)
@tracking_options()
@friendly_errors
def card_command(
    model_ref,
    data,
    out,
    budget,
    reference_ref,
    preprocessing_json,
    seed,
    tracking_uri,
    experiment,
):
    """One robustness card for MODEL: clean, attacked, corrupted, certified and audited, in
    card.json, card.md and a self-contained card.html.

    Each axis runs once per model file, data, seed, reference and budget: one already in OUT,
    or logged by an earlier card run in the tracking store, is reused.
    """
    from keras_advseg.errors import TrackingError
    from keras_advseg.workflows.card import run_card, summary_lines

    try:
        card = run_card(
            model_ref,
            data,
            out,
            budget=budget,
            reference_ref=reference_ref,
            preprocessing_json=preprocessing_json,
            seed=seed,
            tracking_uri=tracking_uri,
            experiment=experiment,
            say=lambda line: click.echo(line, err=True),
        )
    except TrackingError as exc:  # exit 1: the input was fine
        raise click.ClickException(str(exc)) from None
    for line in summary_lines(card, out):
        click.echo(line)
    _echo_ui(tracking_uri, experiment)


@main.command("leaderboard")
@click.argument(
    "card_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: leaderboard.md, leaderboard.csv, fig_leaderboard.png.",
)
@friendly_errors
def leaderboard_command(card_dirs, out):
    """Rank the models of CARD_DIR... (folders written by advseg card) on every axis, with paired
    tests against the first where the cards share subjects."""
    from keras_advseg.workflows.leaderboard import run_leaderboard

    result = run_leaderboard(list(card_dirs), out)
    click.echo((Path(out) / "leaderboard.md").read_text().rstrip())
    click.echo(f"wrote {', '.join(str(p) for p in result['written'])}")


@main.command("audit")
@model_and_data("Output folder: audit.md and audit.json.")
@click.option(
    "--reference",
    "reference_ref",
    default=None,
    help="An undefended model (file, run id or runs:/ URI) for the transfer check (item 5); "
    "without it item 5 is skipped.",
)
@click.option(
    "--split", type=click.Choice(["test", "train"]), default="test", help="Subjects to audit."
)
@click.option(
    "--subjects",
    type=click.IntRange(min=0),
    default=_AUDIT.subjects,
    help="Audit the first N subjects of the split (0: all).",
)
@click.option(
    "--eps",
    type=click.FloatRange(0, 1, min_open=True),
    default=_AUDIT.eps,
    help="Budget of the white-box worst case, relative to each input's intensity range.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=_AUDIT.steps,
    help="Iterations of each attack; item 3 doubles them twice.",
)
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    type=RegistryChoice(cfg.ATTACKS, ensemble=True),
    default=_AUDIT.attacks,
    help="Members of the worst-case ensemble (repeatable) [the default ensemble].",
)
@click.option(
    "--curve",
    default=",".join(f"{e:g}" for e in _AUDIT.curve),
    help="Budgets of item 2 (Dice must fall with eps); the last is the large budget.",
)
@click.option(
    "--restarts",
    type=click.IntRange(min=1),
    default=_AUDIT.restarts,
    help="Random restarts of item 4's APGD (masked CE): a sound worst case changes little "
    "over them.",
)
@click.option(
    "--queries",
    type=click.IntRange(min=0),
    default=_AUDIT.queries,
    help="Forward passes of the gradient-free random search (item 7).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1),
    default=_AUDIT.tolerance,
    help="Mean-Dice difference that counts as a change or as stronger.",
)
@click.option(
    "--relative-tolerance",
    type=click.FloatRange(0, 1),
    default=_AUDIT.relative_tolerance,
    help="Items 3-7 also ignore differences up to this share of what the white-box worst case "
    "takes off clean Dice.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 1e6, min_open=True),
    default=_AUDIT.temperature,
    help="The model's softmax temperature T (a distilled model's, as in train --temperature) "
    "for item 6.",
)
@seed_option("Seed of the random starts and the random search.", _AUDIT.seed)
@click.option(
    "--fail-on-warn", is_flag=True, help="Exit with status 1 when any item warns (for CI)."
)
@click.option("--run-name", help="MLflow run name [audit].")
@tracking_options()
@friendly_errors
def audit_command(
    model_ref,
    data,
    out,
    reference_ref,
    split,
    subjects,
    eps,
    steps,
    attacks,
    curve,
    restarts,
    queries,
    tolerance,
    relative_tolerance,
    temperature,
    seed,
    fail_on_warn,
    run_name,
    tracking_uri,
    experiment,
):
    """Check MODEL's robustness for gradient masking: eight PASS/WARN items.

    Writes OUT/audit.md and OUT/audit.json and tags an MLflow run (and the
    model's training run) with the verdict. See README, "Auditing for gradient
    masking", for what each item means.
    """
    from keras_advseg.errors import TrackingError
    from keras_advseg.workflows.audit import run_audit

    config = cfg.AuditConfig(
        eps=eps,
        steps=steps,
        attacks=tuple(attacks),
        curve=parse_floats(curve, "--curve"),
        restarts=restarts,
        queries=queries,
        tolerance=tolerance,
        relative_tolerance=relative_tolerance,
        temperature=temperature,
        subjects=subjects,
        seed=seed,
    )
    try:
        document = run_audit(
            model_ref,
            data,
            out,
            config,
            reference_ref=reference_ref,
            split=split,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
            progress=lambda stage: click.echo(f"audit: {stage}", err=True),
        )
    except TrackingError as exc:
        raise click.ClickException(str(exc)) from None
    for item in document["items"]:
        click.echo(f"{item['item']} {item['verdict']:4s} {item['claim']}: {item['evidence']}")
    click.echo(f"audit {document['verdict']}: wrote {out / 'audit.md'} and {out / 'audit.json'}")
    if fail_on_warn and document["verdict"] == "WARN":
        sys.exit(1)


@main.command("compare")
@click.argument("eval_dirs", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--baseline",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Evaluation folder of the undefended model: Table 1's attacks and the reference of the "
    "defense table.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: tables.md, table1_attacks.csv, table_defenses.csv (with EVAL_DIRS), "
    "compare.json and fig_eps_overlay.png.",
)
@click.option(
    "--eps",
    "table_eps",
    default="0,0.05,0.1",
    help="FGSM budgets of the defense table (paper: 0, 0.05, 0.1); 0 is the clean evaluation.",
)
@click.option(
    "--table1-eps",
    "attack_eps",
    type=click.FloatRange(0, 1),
    default=0.05,
    help="Budget of Table 1's attacks (each attack against no attack on the baseline).",
)
@renamed_option("--attack-eps", "--table1-eps", "attack_eps", type=click.FloatRange(0, 1))
@click.option("--title", default="Defenses", help="Title of the defense table (e.g. '3D-UNet').")
@friendly_errors
def compare_command(eval_dirs, baseline, out, table_eps, attack_eps, title):
    """Paired Wilcoxon tests of EVAL_DIRS against --baseline, Bonferroni-corrected, as the paper's tables.

    Writes tables.md (both tables in Markdown), table1_attacks.csv (no attack vs each
    attack on the baseline), table_defenses.csv (each model vs the baseline under FGSM;
    with EVAL_DIRS), compare.json (both tables with raw and corrected p and the number
    of comparisons) and fig_eps_overlay.png (Dice over the FGSM sweep, every model).
    """
    from keras_advseg.workflows.compare import run_compare

    report = run_compare(
        list(eval_dirs),
        baseline,
        out,
        table_eps=parse_floats(table_eps, "--eps"),
        attack_eps=attack_eps,
        title=title,
    )
    click.echo(report)


@main.command("reproduce")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Dataset in any supported layout; default: the MNI152 phantom, synthesised into "
    "OUT/phantom.",
)
@click.option(
    "--preset",
    type=click.Choice(list(cfg.STUDIES)),
    default="quick",
    show_default=True,
    help="smoke: about 5 minutes (16^3, 2 epochs); quick: `make demo`, 32^3 on a CPU; "
    "paper: 128^3 and the paper's epochs, temperatures and budgets (a GPU job).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Study folder: phantom/ (without --data), prepared/, corrupted/ (the corrupted scans), "
    "study.json, progress.json, seeds/<seed>/ (models/, evals/, corruptions/, certify/, "
    "audits/, compare3d/, compare2d/, report.md), report.md (findings per seed and pooled).",
)
@click.option(
    "--seeds",
    default="0",
    show_default=True,
    help="Training seeds, e.g. 0,1,2,3,4 or 0-4: every model is trained and evaluated once "
    "per seed (initialisation, augmentation order, dropout, attacks' random starts), in "
    "OUT/seeds/<seed>/. Finished seeds are skipped; adding seeds later reuses them.",
)
@seed_option(
    "Seed of the phantom and the train/test split, fixed across --seeds (one per OUT).",
    name="--data-seed",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    help="Processes: synthesis, preparation and the corrupted scans use them, and independent "
    "steps of a seed (another model's training, evaluations, certificates) run side by side "
    "in them (TensorFlow keeps about one core busy per step).",
)
@tracking_options(None, note="advseg-reproduce-PRESET")
@friendly_errors
def reproduce_command(data, preset, out, seeds, data_seed, workers, tracking_uri, experiment):
    """Run the whole study: data, training with every defense, attacks, statistics, report.md.

    With several --seeds, report.md states each finding per seed and pooled over the
    seeds (the pre-specified test on per-subject Dice averaged over seeds), and each
    defense's effect with a 95 % interval over seeds. Re-running skips finished steps.
    All runs go to one MLflow experiment: advseg-reproduce-PRESET unless --experiment
    is given.
    """
    from keras_advseg.errors import TrackingError, TrainingError
    from keras_advseg.workflows.reproduce import reproduce

    try:
        report = reproduce(
            preset,
            out,
            data=data,
            tracking_uri=tracking_uri,
            experiment=experiment,
            seeds=parse_seeds(seeds),
            data_seed=data_seed,
            workers=workers,
        )
    except (TrainingError, TrackingError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"report: {report}")
    _echo_ui(tracking_uri, experiment or f"advseg-reproduce-{preset}")


@main.command("predict")
@click.argument("model_ref", metavar="MODEL")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: <id>.nii.gz label maps in each scan's own grid, affine and header "
    "(and <id>_probabilities.nii.gz with --probabilities).",
)
@click.option(
    "--t1", type=click.Path(dir_okay=False, path_type=Path), help="T1 file (instead of INPUT)."
)
@click.option(
    "--t1gd", type=click.Path(dir_okay=False, path_type=Path), help="T1Gd file (instead of INPUT)."
)
@click.option(
    "--t2", type=click.Path(dir_okay=False, path_type=Path), help="T2 file (instead of INPUT)."
)
@click.option(
    "--flair",
    type=click.Path(dir_okay=False, path_type=Path),
    help="FLAIR file (instead of INPUT).",
)
@click.option(
    "--labels",
    type=click.Choice(["brats2017", "brats2023"]),
    default="brats2017",
    help="Label values: brats2017 (0/1/2/4) or brats2023 (0/1/2/3).",
)
@click.option(
    "--probabilities", is_flag=True, help="Also write <id>_probabilities.nii.gz (4-D float)."
)
@click.option(
    "--overwrite", is_flag=True, help="Segment again subjects whose output exists [skip them]."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, help="Processes for preprocessing (N4)."
)
@click.option(
    "--sliding-window",
    is_flag=True,
    help="Segment each cropped scan at its own resolution with overlapping, Gaussian-weighted "
    "tiles of the model's input size [resize it to the input size, as in training].",
)
@click.option(
    "--overlap",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.5,
    help="Sliding-window tile overlap.",
)
@tracking_options()
@friendly_errors
def predict_command(
    model_ref,
    input_path,
    out,
    t1,
    t1gd,
    t2,
    flair,
    labels,
    probabilities,
    overwrite,
    workers,
    sliding_window,
    overlap,
    tracking_uri,
    experiment,
):
    """Segment scans with MODEL (a .keras file, run id or runs:/ URI) in their own geometry.

    INPUT is a dataset in any supported layout or one subject folder; or give
    the four modality files. The model's training preprocessing (N4, crop,
    resize, the training split's statistics) is read from the model itself.
    """
    from keras_advseg.errors import TrackingError
    from keras_advseg.tracking import resolve_model_path
    from keras_advseg.workflows.predict import run_predict, subjects_of

    subjects = subjects_of(input_path, t1=t1, t1gd=t1gd, t2=t2, flair=flair)
    try:
        model_path = resolve_model_path(model_ref, tracking_uri)
    except TrackingError as exc:  # exit 1, as train and evaluate (docs: Reliability)
        raise click.ClickException(str(exc)) from None
    written = run_predict(
        model_path,
        subjects,
        out,
        labels=labels,
        probabilities=probabilities,
        overwrite=overwrite,
        workers=workers,
        sliding_window=sliding_window,
        overlap=overlap,
    )
    skipped = len(subjects) - len(written)
    click.echo(
        f"wrote {len(written)} label maps to {out}"
        + (f" ({skipped} existed, skipped)" if skipped else "")
    )


@main.command("score")
@click.argument("pred_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="The dataset with the reference segmentations (any supported layout).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: scores.csv and summary.json.",
)
@click.option(
    "--labels",
    type=click.Choice(["brats2017", "brats2023"]),
    default=None,
    help="Label values of the predictions [brats2023 when they hold 3 and no 4, else brats2017].",
)
@friendly_errors
def score_command(pred_dir, data, out, labels):
    """Dice and 95% Hausdorff distance (mm) of WT/TC/ET per subject, in each scan's own space:
    region-wise, and lesion-wise as BraTS 2023 ranks (missed and spurious lesions score
    Dice 0 and HD95 374 mm)."""
    from keras_advseg.workflows.predict import run_score, summary_line

    click.echo(summary_line(run_score(pred_dir, data, out, labels=labels)))


@main.command("export")
@click.argument(
    "model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False, path_type=Path)
)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--output-temperature",
    "temperature",
    type=click.FloatRange(1e-6, 1e6),
    default=1.0,
    help="Softmax temperature of the exported probabilities (deploy distilled models at 1).",
)
@renamed_option(
    "--temperature", "--output-temperature", "temperature", type=click.FloatRange(1e-6, 1e6)
)
@click.option(
    "--with-preprocessing",
    is_flag=True,
    help="The signature takes raw intensities (cropped and resized) and the brain mask (resized "
    "by nearest neighbour; keras_advseg.inference.crop_resize_and_mask) and standardises them "
    "in the graph with the statistics stored in the model.",
)
@friendly_errors
def export(model_path: Path, out_dir: Path, temperature: float, with_preprocessing: bool):
    """Export MODEL.keras as a TensorFlow SavedModel (saved_model.pb, variables/) in OUT_DIR.

    Its `serve` signature takes a preprocessed float32 batch (B, X, Y, Z, 4)
    and returns `probabilities` and the BraTS `labels` map (0/1/2/4).
    """
    from keras_advseg.export import export_savedmodel, load_model, load_preprocessing

    preprocessing = load_preprocessing(model_path) if with_preprocessing else None
    export_savedmodel(
        load_model(model_path), out_dir, temperature=temperature, preprocessing=preprocessing
    )
    click.echo(f"exported {model_path} to {out_dir} (signature 'serve')")


def _echo_ui(tracking_uri: str, experiment: str) -> None:
    """Prints how to open the experiment's runs in the MLflow UI (nothing if the store fails)."""
    from keras_advseg.tracking import ui_lines

    try:
        for line in ui_lines(tracking_uri, experiment):
            click.echo(line.replace("`", ""))
    except Exception:  # the work is done and written; only the pointer to it is missing
        pass


def run() -> None:
    """The console script: ``main`` with SIGTERM handled like Ctrl-C.

    ``timeout``, Slurm and Kubernetes stop a job with SIGTERM. Raised as
    ``KeyboardInterrupt``, it ends the MLflow run as KILLED, removes the temporaries of
    the files being written, and leaves a checkpoint that ``--resume`` continues exactly.
    """
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    main()


if __name__ == "__main__":
    run()
