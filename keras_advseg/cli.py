"""The ``advseg`` command line.

Every error caused by input (a bad file, a bad option value) is printed as one
line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path

import click

from keras_advseg import __version__
from keras_advseg import config as cfg
from keras_advseg.errors import InputError

_TRAIN = cfg.TrainConfig()  # the defaults the options show
_EVAL = cfg.EvalConfig()
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


TENSORFLOW_COMMANDS = ("train", "evaluate", "audit", "reproduce", "export", "predict", "score")
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
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
@click.option("--seed", type=int, default=0, help="Seed; the same seed gives identical volumes.")
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
    click.echo(f"wrote {len(folders)} subjects to {out}")
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
@click.option("--seed", type=int, default=0, help="Seed of the train/test split.")
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
        f"prepared {len(prepared.ids('all'))} subjects into {out} "
        f"(train {len(prepared.train_ids)}, test {len(prepared.test_ids)}, shape {prepared.shape})"
    )


@data.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@friendly_errors
def data_info(path: Path):
    """Describe a raw dataset folder or a prepared cache at PATH, as JSON."""
    from keras_advseg.data.layouts import discover_subjects
    from keras_advseg.data.prepare import load_prepared

    if (path / "prepared.json").is_file():
        prepared = load_prepared(path)
        info = {
            "kind": "prepared",
            "shape": prepared.shape,
            "train": len(prepared.train_ids),
            "test": len(prepared.test_ids),
            "unlabelled": len(prepared.unlabelled_ids),
            "normalization": prepared.config.normalization,
            "data_hash": prepared.data_hash,
        }
    else:
        subjects = discover_subjects(path)
        info = {
            "kind": "raw",
            "subjects": len(subjects),
            "layouts": sorted({s.layout for s in subjects}),
            "labelled": sum(s.has_labels for s in subjects),
        }
    click.echo(json.dumps(info, indent=2, default=list))


def tracking_options(fn):
    """``--tracking-uri`` and ``--experiment``, shared by every tracked command."""
    fn = click.option(
        "--experiment",
        default=cfg.DEFAULT_EXPERIMENT,
        show_default=True,
        help="MLflow experiment name.",
    )(fn)
    return click.option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        default=cfg.DEFAULT_TRACKING_URI,
        show_default=True,
        help="MLflow tracking store: a database URI, a folder, or an http(s) tracking server. "
        "Also read from MLFLOW_TRACKING_URI.",
    )(fn)


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
    help="Output folder: model.keras (best by validation Dice), last.keras, checkpoint/.",
)
@click.option(
    "--model",
    "model_name",
    type=click.Choice(cfg.MODELS),
    default=_TRAIN.model,
    help="The paper's 3-D UNet, or its 2-D UNet trained on axial slices.",
)
@click.option(
    "--defense", type=click.Choice(cfg.DEFENSES), default=_TRAIN.defense, help="Training defense."
)
@click.option(
    "--preset",
    type=click.Choice(list(cfg.PRESETS)),
    default="paper",
    help="paper: 128^3, the paper's batch/lr/epochs (a GPU job); quick: 32^3, minutes on a CPU; "
    "smoke: 16^3, seconds. Options below override the preset.",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs [preset].")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Volumes (3-D) or slices (2-D) per batch [preset].",
)
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), help="Adam learning rate [preset]."
)
@click.option(
    "--lr-schedule",
    type=click.Choice(cfg.LR_SCHEDULES),
    help="constant, or cosine decay to 1% of --lr over the run [preset: quick cosine, else "
    "constant].",
)
@click.option(
    "--seed",
    type=int,
    default=_TRAIN.seed,
    help="Seed of initialisation, data order, augmentation, dropout.",
)
@click.option(
    "--shape",
    type=click.IntRange(min=8),
    help="Cube size raw data is prepared to, in voxels [preset].",
)
@click.option(
    "--base-filters", type=click.IntRange(min=1), help="Filters at the first UNet level [preset]."
)
@click.option("--depth", type=click.IntRange(min=2), help="UNet levels [preset].")
@click.option(
    "--dropout", type=click.FloatRange(0, 1, max_open=True), help="Spatial dropout rate [0.3]."
)
@click.option(
    "--loss",
    type=click.Choice(cfg.LOSSES),
    help="dice: the paper's soft Dice; dice_ce: soft Dice + cross-entropy (converges faster) "
    "[preset].",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    help="Share of training subjects used to pick the best epoch [0.15].",
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="The paper's augmentation (rotations, flips, transposes) [on].",
)
@click.option(
    "--adv-eps",
    type=click.FloatRange(min=0),
    help="Adversarial, PGD, fast and TRADES training: budget relative to each input's intensity "
    "range (max - min) [0.05].",
)
@click.option(
    "--beta",
    type=click.FloatRange(0, 1),
    help="Adversarial, PGD and fast training: weight of the clean loss (eq. 9) [0.5; fast: 0].",
)
@click.option(
    "--adv-steps",
    type=click.IntRange(min=1),
    help="PGD and TRADES training: attack steps K per batch [3; paper preset: 7].",
)
@click.option(
    "--trades-beta",
    type=click.FloatRange(min=0),
    help="TRADES: weight of the KL term [6].",
)
@click.option(
    "--adv-mode",
    type=click.Choice(cfg.ADVERSARIAL_MODES),
    help="Adversarial training: one update on the weighted loss, or the paper's two updates "
    "[joint].",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    help="Softmax temperature T of the training loss; distillation's teacher and student (eq. 4) "
    "[1].",
)
@click.option(
    "--teacher",
    help="Distillation: a teacher trained at --temperature (a .keras file, an MLflow run id or a "
    "runs:/ URI); trained first when omitted.",
)
@click.option(
    "--teacher-temperature",
    type=click.FloatRange(min=0, min_open=True),
    help="Distillation: the temperature --teacher was trained at; its soft labels are softmax(z / "
    "this) "
    "[--temperature]. 1 distils a model trained without a defense.",
)
@click.option(
    "--init",
    help="Warm start from a trained model of the same architecture (.keras, run id or runs:/ "
    "URI), e.g. "
    "to fine-tune the no-defense model with a defense; 'teacher' starts a distillation student "
    "from its teacher, logits rescaled to --temperature.",
)
@click.option(
    "--noise-radius",
    type=click.FloatRange(min=0),
    help="Noise augmentation: uniform noise radius relative to each input's intensity range "
    "[0.01].",
)
@click.option(
    "--strategy",
    type=click.Choice(cfg.STRATEGIES),
    default=_TRAIN.strategy,
    help="tf.distribute: one device, MirroredStrategy (local GPUs), MultiWorkerMirroredStrategy "
    "(TF_CONFIG).",
)
@click.option(
    "--deterministic/--nondeterministic",
    default=_TRAIN.deterministic,
    help="TensorFlow op determinism.",
)
@click.option(
    "--precision",
    type=click.Choice(cfg.PRECISIONS),
    default=_TRAIN.precision,
    help="Keras dtype policy: mixed_bfloat16 cuts a 128^3 step's memory on CPU, mixed_float16 "
    "suits GPUs; "
    "losses and logits stay float32.",
)
@click.option(
    "--resume", is_flag=True, help="Continue the interrupted run in --out from its last checkpoint."
)
@click.option("--run-name", help="MLflow run name [model-defense].")
@tracking_options
@friendly_errors
def train_command(
    data,
    out,
    model_name,
    defense,
    preset,
    epochs,
    batch_size,
    lr,
    lr_schedule,
    seed,
    shape,
    base_filters,
    depth,
    dropout,
    loss,
    val_fraction,
    augment,
    adv_eps,
    beta,
    adv_steps,
    trades_beta,
    adv_mode,
    temperature,
    teacher,
    teacher_temperature,
    init,
    noise_radius,
    strategy,
    deterministic,
    precision,
    resume,
    run_name,
    tracking_uri,
    experiment,
):
    """Train a segmentation network, with or without a defense, tracked in MLflow."""
    from keras_advseg.tracking import TrackingError
    from keras_advseg.training import CheckpointExists, TrainingError
    from keras_advseg.workflows.train import train

    config = cfg.TrainConfig.from_preset(
        preset,
        model_name,
        defense,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        seed=seed,
        shape=shape,
        base_filters=base_filters,
        depth=depth,
        dropout=dropout,
        loss=loss,
        val_fraction=val_fraction,
        augment=augment,
        adv_eps=adv_eps,
        beta=beta,
        adv_steps=adv_steps,
        trades_beta=trades_beta,
        adv_mode=adv_mode,
        temperature=temperature,
        teacher=teacher,
        teacher_temperature=teacher_temperature,
        init=init,
        noise_radius=noise_radius,
        strategy=strategy,
        deterministic=deterministic,
        precision=precision,
    )
    try:
        result = train(
            config,
            data,
            out,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name or f"{model_name}-{defense}",
            resume=resume,
        )
    except CheckpointExists as exc:
        raise click.ClickException(
            f"{exc.folder}: holds a previous run's checkpoint; pass --resume to continue it or "
            "choose a new --out"
        ) from None
    except (TrainingError, TrackingError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"saved {result.model_path} (best mean validation Dice {result.best_score:.3f}); "
        f"MLflow run {result.run_id}"
    )


def parse_seeds(text: str, option: str = "--seeds", limit: int = 100) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-2"`` (or both, ``"0-2,7"``) -> (0, 1, 2[, 7]): distinct seeds >= 0.

    Raises:
        InputError: not such a list, a repeated seed, or more than ``limit`` seeds.
    """
    expected = f"{option}: expected distinct integers >= 0 like 0,1,2,3,4 or 0-4"
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first or last - first >= limit:
                raise ValueError
            seeds += range(first, last + 1)
    except ValueError:
        raise InputError(f"{expected}. Received: {text!r}") from None
    if len(set(seeds)) != len(seeds) or len(seeds) > limit:
        raise InputError(f"{expected} (at most {limit}). Received: {text!r}")
    return tuple(seeds)


def parse_floats(
    text: str | None, option: str, *, low: float = 0.0, high: float = 1.0, limit: int = 1000
) -> tuple[float, ...]:
    """``"0.05,0.1"`` -> (0.05, 0.1); ``"0:0.01:0.001"`` -> 0, 0.001, ..., 0.01 (inclusive).

    Args:
        text: The option's value.
        option: The option's name, for the message.
        low, high: The range every value must lie in.
        limit: The most values a range may expand to.

    Raises:
        InputError: not finite numbers, outside ``[low, high]``, or a bad or too long range.
    """
    if not text:
        return ()
    expected = f"{option}: expected numbers in [{low:g}, {high:g}] like 0.05,0.1 or a range START:STOP:STEP"
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if not all(math.isfinite(v) for v in (start, stop, step)) or step <= 0 or stop < start:
                raise ValueError
            count = int(round((stop - start) / step))
            if count + 1 > limit:
                raise InputError(
                    f"{option}: the range {text!r} has {count + 1} values; at most {limit}"
                )
            values = tuple(round(start + i * step, 10) for i in range(count + 1))
        else:
            values = tuple(float(p) for p in text.split(","))
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{expected}, got {text!r}") from None
    if not all(math.isfinite(v) and low <= v <= high for v in values):
        raise InputError(f"{expected}, got {text!r}")
    return values


def model_and_data(out_help: str):
    """``MODEL``, ``--data`` and ``--out``: shared by the commands that attack a model."""

    def decorate(fn):
        fn = click.option(
            "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help=out_help
        )(fn)
        fn = click.option(
            "--data",
            type=click.Path(path_type=Path),
            required=True,
            help="Prepared cache, or a raw dataset (prepared into OUT/prepared at the model's "
            "input size).",
        )(fn)
        return click.argument("model_ref", metavar="MODEL")(fn)

    return decorate


@main.command("evaluate")
@model_and_data("Output folder: per_subject.csv, summary.json, iterations.csv, figures.")
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
    type=click.Choice(cfg.ATTACKS),
    default=_EVAL.attacks,
    help="Attack (repeatable). tifgsm is the paper's targeted i-FGSM (all voxels label 1).",
)
@click.option(
    "--eps",
    default="0.05",
    help="Attack budgets, relative to each input's intensity range (max - min): one value or a "
    "list (0,0.05,0.1).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=_EVAL.steps,
    help="Iterations of i-FGSM, targeted i-FGSM, PGD.",
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
    "--restarts", type=click.IntRange(min=1), default=_EVAL.restarts, help="PGD random restarts."
)
@click.option("--seed", type=int, default=_EVAL.seed, help="Seed of PGD's random starts.")
@click.option("--run-name", help="MLflow run name [eval-<attacks>].")
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
    help="mirrored: subjects spread over the local devices; multiworker: also over the machines "
    "in TF_CONFIG (run the same command on each; the chief merges and writes the rows).",
)
@tracking_options
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
    seed,
    run_name,
    native,
    strategy,
    tracking_uri,
    experiment,
):
    """Attack MODEL (a .keras file, an MLflow run id or runs:/ URI) and score it per subject."""
    from keras_advseg.tracking import TrackingError
    from keras_advseg.workflows.evaluate import run_evaluation

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
    except TrackingError as exc:
        raise click.ClickException(str(exc)) from None
    clean = summary["clean"]
    click.echo(
        "clean Dice "
        + ", ".join(f"{r.upper()} {clean[f'dice_{r}']['mean']:.3f}" for r in cfg.REGIONS)
    )
    for attack, by_eps in summary["attacks"].items():
        if attack == "fgsm_sweep":
            continue
        for value, entry in by_eps.items():
            click.echo(
                f"{attack} eps {value}: Dice "
                + ", ".join(f"{r.upper()} {entry[f'dice_{r}']['mean']:.3f}" for r in cfg.REGIONS)
            )
    if "worker" in summary:
        click.echo(f"{summary['worker']}: evaluated its share; the chief writes the rows")
    else:
        click.echo(f"wrote {out / 'per_subject.csv'} and {out / 'summary.json'}")


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
    type=float,
    default=_AUDIT.eps,
    help="Budget of the white-box worst case, relative to the intensity range.",
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
    type=click.Choice(cfg.ENSEMBLE_ATTACKS),
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
    help="Random starts of item 4.",
)
@click.option(
    "--queries",
    type=click.IntRange(min=0),
    default=_AUDIT.queries,
    help="Forward passes of the gradient-free random search (item 7).",
)
@click.option(
    "--tolerance",
    type=float,
    default=_AUDIT.tolerance,
    help="Mean-Dice difference that counts as a change or as stronger.",
)
@click.option(
    "--temperature",
    type=float,
    default=_AUDIT.temperature,
    help="The model's own softmax temperature (a distilled model's T) for item 6.",
)
@click.option("--seed", type=int, default=_AUDIT.seed, help="Random starts and random search.")
@click.option(
    "--fail-on-warn", is_flag=True, help="Exit with status 1 when any item warns (for CI)."
)
@click.option("--run-name", help="MLflow run name [audit].")
@tracking_options
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
    temperature,
    seed,
    fail_on_warn,
    run_name,
    tracking_uri,
    experiment,
):
    """Check MODEL's robustness for gradient masking: seven PASS/WARN items.

    Writes OUT/audit.md and OUT/audit.json and tags an MLflow run (and the
    model's training run) with the verdict. See README, "Auditing for gradient
    masking", for what each item means.
    """
    from keras_advseg.tracking import TrackingError
    from keras_advseg.workflows.audit import run_audit

    config = cfg.AuditConfig(
        eps=eps,
        steps=steps,
        attacks=tuple(attacks),
        curve=parse_floats(curve, "--curve"),
        restarts=restarts,
        queries=queries,
        tolerance=tolerance,
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
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder."
)
@click.option(
    "--eps",
    "table_eps",
    default="0,0.05,0.1",
    help="FGSM budgets of the defense table (paper: 0, 0.05, 0.1); 0 is the clean evaluation.",
)
@click.option(
    "--attack-eps", type=click.FloatRange(min=0), default=0.05, help="Budget of Table 1's attacks."
)
@click.option("--title", default="Defenses", help="Title of the defense table (e.g. '3D-UNet').")
@friendly_errors
def compare_command(eval_dirs, baseline, out, table_eps, attack_eps, title):
    """Paired Wilcoxon tests of EVAL_DIRS against --baseline, Bonferroni-corrected, as the paper's tables.

    Writes table1_attacks.{md,csv} (no attack vs attacks on the baseline),
    table_defenses.{md,csv} (each model vs the baseline under FGSM), tests.csv
    (every test with raw and corrected p) and fig_eps_overlay.png.
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
    help="smoke: about 5 minutes (16^3, 2 epochs); quick: `make demo`, 32^3 on a CPU; "
    "paper: 128^3 and the paper's epochs, temperatures and budgets (a GPU job).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Study folder: phantom/, prepared/, seeds/<seed>/ (models/, evals/, audits/, "
    "compare3d/, compare2d/, report.md), report.md (findings per seed and pooled).",
)
@click.option(
    "--seeds",
    default="0",
    show_default=True,
    help="Training seeds, e.g. 0,1,2,3,4 or 0-4: every model is trained and evaluated once "
    "per seed (initialisation, augmentation order, dropout, attacks' random starts), in "
    "OUT/seeds/<seed>/. Finished seeds are skipped; adding seeds later reuses them.",
)
@click.option(
    "--data-seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the phantom and the train/test split, fixed across --seeds (one per OUT).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    help="Processes for synthesis and preparation.",
)
@tracking_options
@friendly_errors
def reproduce_command(data, preset, out, seeds, data_seed, workers, tracking_uri, experiment):
    """Run the whole study: data, training with every defense, attacks, statistics, report.md.

    With several --seeds, report.md states each finding per seed and pooled over the
    seeds (the pre-specified test on per-subject Dice averaged over seeds), and each
    defense's effect with a 95 % interval over seeds. Re-running skips finished steps.
    All runs go to one MLflow experiment (default: advseg-reproduce-PRESET unless
    --experiment is given).
    """
    from keras_advseg.tracking import TrackingError
    from keras_advseg.training import TrainingError
    from keras_advseg.workflows.reproduce import reproduce

    try:
        report = reproduce(
            preset,
            out,
            data=data,
            tracking_uri=tracking_uri,
            experiment=None if experiment == cfg.DEFAULT_EXPERIMENT else experiment,
            seeds=parse_seeds(seeds),
            data_seed=data_seed,
            workers=workers,
        )
    except (TrainingError, TrackingError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"report: {report}")


@main.command("predict")
@click.argument("model_ref", metavar="MODEL")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: <id>.nii.gz label maps in each scan's own grid, affine and header.",
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
@tracking_options
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
    from keras_advseg.tracking import resolve_model_path
    from keras_advseg.workflows.predict import run_predict, subjects_of

    subjects = subjects_of(input_path, t1=t1, t1gd=t1gd, t2=t2, flair=flair)
    model_path = resolve_model_path(model_ref, tracking_uri)
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
    """Dice and 95% Hausdorff distance (mm) of WT/TC/ET per subject, in each scan's own space."""
    from keras_advseg.workflows.predict import run_score, summary_line

    click.echo(summary_line(run_score(pred_dir, data, out, labels=labels)))


@main.command("export")
@click.argument(
    "model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False, path_type=Path)
)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    help="Softmax temperature of the exported probabilities (deploy distilled models at 1).",
)
@click.option(
    "--with-preprocessing",
    is_flag=True,
    help="The signature takes raw intensities (cropped and resized) and standardises them in the "
    "graph with the statistics stored in the model.",
)
@friendly_errors
def export(model_path: Path, out_dir: Path, temperature: float, with_preprocessing: bool):
    """Export MODEL.keras as a TensorFlow SavedModel in OUT_DIR.

    Its `serve` signature takes a preprocessed float32 batch (B, X, Y, Z, 4)
    and returns `probabilities` and the BraTS `labels` map (0/1/2/4).
    """
    from keras_advseg.config import check_range
    from keras_advseg.export import export_savedmodel, load_model, load_preprocessing

    check_range("--temperature", temperature, 1e-6, 1e6)
    preprocessing = load_preprocessing(model_path) if with_preprocessing else None
    export_savedmodel(
        load_model(model_path), out_dir, temperature=temperature, preprocessing=preprocessing
    )
    click.echo(f"exported {model_path} to {out_dir} (signature 'serve')")


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"64"`` -> (64, 64, 64); ``"64,64,48"`` -> (64, 64, 48).

    Raises:
        ValueError: not one or three positive integers.
    """
    try:
        sizes = [int(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3 or min(sizes) < 1:
        raise InputError(
            f"--shape: expected one or three positive integers like 128 or 128,128,96, got {text!r}"
        )
    return tuple(sizes)


if __name__ == "__main__":
    main()
