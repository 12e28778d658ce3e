"""Options shared by the ``advseg`` commands, defined once (the pattern of MLflow's ``cli_args``).

Each option's choices and default come from :mod:`keras_advseg.config` or a registry, and its
help text states the default's value. Renamed options and values stay accepted for one
release: hidden, with a deprecation line on standard error.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from keras_advseg import config as cfg
from keras_advseg.errors import InputError
from keras_advseg.registry import Registry

MAX_SEED = 2**31 - 1
"""The largest seed any option accepts (TensorFlow's and NumPy's seeds are 32-bit)."""


def deprecation(old: str, new: str) -> None:
    """Writes the one-line deprecation notice of a renamed option or value to standard error."""
    click.echo(
        f"advseg: {old} is deprecated and will be removed in the next release; use {new}",
        err=True,
    )


def renamed_notice(old: str, new: str) -> None:
    """Writes the one-line notice of a renamed command to standard error: ``old`` still works
    for one release."""
    click.echo(f"`{old}` is now `{new}`; the old spelling goes in the next release", err=True)


class LiveChoice(click.Choice):
    """A choice among names the code defines, read each time they are needed (parsing, help):
    a new entry shows up by itself, and the module that defines them is imported only then.

    Args:
        names: Returns the current names, e.g. ``lambda: tuple(BUDGETS)``.
    """

    def __init__(self, names: Callable[[], Iterable[str]]):
        self.names = names
        super().__init__(())

    @property
    def choices(self):
        return tuple(self.names())

    @choices.setter
    def choices(self, _):  # click.Choice.__init__ assigns it; ``names`` is the source
        pass


class RegistryChoice(LiveChoice):
    """A choice among a registry's current names, read when the command runs: an entry
    registered after import is offered too; a deprecated alias is accepted with a notice."""

    def __init__(self, registry: Registry, **facts):
        self.registry, self.facts = registry, facts
        super().__init__(lambda: registry.names(**facts))

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value in self.registry.aliases:
            current = self.registry.aliases[value]
            deprecation(f"{self.registry.family} {value!r}", repr(current))
            value = current
        return super().convert(value, param, ctx)


def renamed_option(old: str, new: str, dest: str, **kwargs):
    """A hidden option ``old`` kept for one release: its value replaces ``dest``'s (the option
    now called ``new``) with a deprecation notice."""
    hidden = f"deprecated_{dest}"

    def decorate(fn):
        fn = click.option(
            old, hidden, hidden=True, default=None, help=f"Deprecated: use {new}.", **kwargs
        )(fn)

        @functools.wraps(fn)
        def wrapper(*args, **values):
            old_value = values.pop(hidden)
            if old_value is not None:
                deprecation(old, new)
                values[dest] = old_value
            return fn(*args, **values)

        return wrapper

    return decorate


def seed_option(help_text: str, default: int = 0, name: str = "--seed"):
    """A seed in ``[0, 2^31 - 1]``, checked before any work."""
    return click.option(
        name,
        type=click.IntRange(0, MAX_SEED),
        default=default,
        show_default=True,
        help=help_text,
    )


def tracking_options(experiment_default: str | None = cfg.DEFAULT_EXPERIMENT, note: str = ""):
    """``--tracking-uri`` and ``--experiment``, shared by every tracked command."""

    def decorate(fn):
        fn = click.option(
            "--experiment",
            default=experiment_default,
            show_default=experiment_default is not None,
            help="MLflow experiment name" + (f" [{note}]" if note else "") + ".",
        )(fn)
        return click.option(
            "--tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            default=cfg.DEFAULT_TRACKING_URI,
            show_default=True,
            help="MLflow tracking store: a database URI, a folder, or an http(s) tracking "
            "server. Also read from MLFLOW_TRACKING_URI.",
        )(fn)

    return decorate


def split_option(help_text: str, choices: tuple[str, ...] = ("test", "train", "all")):
    """``--split``: which subjects of the prepared cache a command reads [test]."""
    return click.option("--split", type=click.Choice(choices), default="test", help=help_text)


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


def preset_values(name: str, fallback=None) -> str:
    """What each training preset sets ``name`` to, for a help text: ``paper 100, quick 25,
    smoke 2`` (3-D), with the 2-D UNet's values where they differ."""

    def value(preset, model):
        return cfg.TrainConfig.from_preset(preset, model).__dict__[name]

    parts = []
    for model in cfg.MODELS:
        text = ", ".join(f"{p} {value(p, model):g}" for p in cfg.PRESETS)
        if not parts or text != parts[0][1]:
            parts.append((model, text))
    if len(parts) == 1:
        return parts[0][1]
    return "; ".join(f"{model}: {text}" for model, text in parts)


_TRAIN = cfg.TrainConfig()


def _preset(name: str) -> str:
    return f"[preset: {preset_values(name)}]"


TRAIN_OPTIONS = (
    click.option(
        "--model",
        type=click.Choice(cfg.MODELS),
        default=_TRAIN.model,
        show_default=True,
        help="The paper's 3-D UNet, or its 2-D UNet trained on axial slices.",
    ),
    click.option(
        "--defense",
        type=click.Choice(cfg.DEFENSES),
        default=_TRAIN.defense,
        show_default=True,
        help="Training defense: adversarial (FGSM, eq. 9), pgd, fast and trades (robust "
        "training), distillation (eq. 4-7), noise (uniform noise), gaussian (Gaussian noise, "
        "for certification), artifacts (random MRI corruptions, see --artifacts).",
    ),
    click.option("--epochs", type=click.IntRange(min=1), help=f"Epochs {_preset('epochs')}."),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        help=f"Volumes (3-D) or slices (2-D) per batch {_preset('batch_size')}.",
    ),
    click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        help=f"Adam learning rate {_preset('lr')}.",
    ),
    click.option(
        "--lr-schedule",
        type=click.Choice(cfg.LR_SCHEDULES),
        help="constant, or cosine decay to 1% of --lr over the run [preset: paper constant, "
        "quick cosine, smoke constant].",
    ),
    seed_option("Seed of initialisation, data order, augmentation, dropout.", _TRAIN.seed),
    click.option(
        "--shape",
        type=click.IntRange(min=8, max=512),
        help=f"Cube size raw data is prepared to, in voxels {_preset('shape')}.",
    ),
    click.option(
        "--base-filters",
        type=click.IntRange(min=1),
        help=f"Filters at the first UNet level {_preset('base_filters')}.",
    ),
    click.option("--depth", type=click.IntRange(min=2), help=f"UNet levels {_preset('depth')}."),
    click.option(
        "--dropout",
        type=click.FloatRange(0, 1, max_open=True),
        help=f"Spatial dropout rate [{_TRAIN.dropout:g}].",
    ),
    click.option(
        "--loss",
        type=click.Choice(cfg.LOSSES),
        help="dice: the paper's soft Dice; dice_ce: soft Dice + cross-entropy (converges "
        "faster) [preset: paper dice, quick dice_ce, smoke dice_ce].",
    ),
    click.option(
        "--val-fraction",
        type=click.FloatRange(0, 1, max_open=True),
        help=f"Share of training subjects used to pick the best epoch [{_TRAIN.val_fraction:g}].",
    ),
    click.option(
        "--augment/--no-augment",
        default=None,
        help="The paper's augmentation (rotations, flips, transposes) [on].",
    ),
    click.option(
        "--eps",
        "adv_eps",
        type=click.FloatRange(min=0),
        help="Adversarial, PGD, fast and TRADES training: the attack's budget, relative to each "
        f"input's intensity range (max - min) [{_TRAIN.adv_eps:g}].",
    ),
    click.option(
        "--beta",
        type=click.FloatRange(0, 1),
        help="Adversarial, PGD and fast training: weight of the clean loss (eq. 9) [0.5; fast: 0].",
    ),
    click.option(
        "--adv-steps",
        type=click.IntRange(min=1),
        help=f"PGD and TRADES training: attack steps K per batch [{_TRAIN.adv_steps}; paper "
        f"preset: {cfg.PRESETS['paper']['adv_steps']}].",
    ),
    click.option(
        "--trades-beta",
        type=click.FloatRange(min=0),
        help=f"TRADES: weight of the KL term [{_TRAIN.trades_beta:g}].",
    ),
    click.option(
        "--adv-mode",
        type=click.Choice(cfg.ADVERSARIAL_MODES),
        help="Adversarial training: one update on the weighted loss, or the paper's two "
        f"updates [{_TRAIN.adv_mode}].",
    ),
    click.option(
        "--temperature",
        type=click.FloatRange(min=0, min_open=True),
        help="The model's softmax temperature T: the T its training loss uses; distillation's "
        f"teacher and student (eq. 4) [{_TRAIN.temperature:g}].",
    ),
    click.option(
        "--teacher",
        help="Distillation: a teacher trained at --temperature (a .keras file, an MLflow run id "
        "or a runs:/ URI); trained first when omitted.",
    ),
    click.option(
        "--teacher-temperature",
        type=click.FloatRange(min=0, min_open=True),
        help="Distillation: the temperature --teacher was trained at; its soft labels are "
        "softmax(z / this) [--temperature]. 1 distils a model trained without a defense.",
    ),
    click.option(
        "--init",
        help="Warm start from a trained model of the same architecture (.keras, run id or "
        "runs:/ URI), e.g. to fine-tune the no-defense model with a defense; 'teacher' starts a "
        "distillation student from its teacher, logits rescaled to --temperature.",
    ),
    click.option(
        "--noise-radius",
        type=click.FloatRange(min=0),
        help="Noise augmentation: uniform noise radius relative to each input's intensity "
        f"range [{_TRAIN.noise_radius:g}].",
    ),
    click.option(
        "--noise-sigma",
        type=click.FloatRange(min=0, max=10),
        help="Gaussian noise augmentation (--defense gaussian, Cohen et al. 2019): noise standard "
        "deviation in the model's input units (standardised intensities: tissue standard "
        f"deviations, as advseg certify's --sigma) [{_TRAIN.noise_sigma:g}]; train at the sigma "
        "you will certify at.",
    ),
    click.option(
        "--artifacts",
        help="The MRI corruptions drawn from during training (--defense artifacts, or with "
        "--artifact-rate any defense): all, scanner, operator or a list [all].",
    ),
    click.option(
        "--artifact-rate",
        type=click.FloatRange(0, 1),
        help="Share of training volumes corrupted, each by a random corruption at a random "
        "severity 1-5 [0.5 with --defense artifacts, else 0]; combines with adversarial training.",
    ),
    click.option(
        "--strategy",
        type=click.Choice(cfg.STRATEGIES),
        default=_TRAIN.strategy,
        show_default=True,
        help="tf.distribute: one device, MirroredStrategy (local GPUs), "
        "MultiWorkerMirroredStrategy (TF_CONFIG).",
    ),
    click.option(
        "--deterministic/--nondeterministic",
        default=_TRAIN.deterministic,
        show_default=True,
        help="TensorFlow op determinism.",
    ),
    click.option(
        "--precision",
        type=click.Choice(cfg.PRECISIONS),
        default=_TRAIN.precision,
        show_default=True,
        help="Keras dtype policy: mixed_bfloat16 cuts a 128^3 step's memory on CPU, "
        "mixed_float16 suits GPUs; losses and logits stay float32.",
    ),
)
"""Every :class:`~keras_advseg.config.TrainConfig` field the CLI sets, named as the field
(``--eps`` sets ``adv_eps``): ``advseg train`` passes them through unchanged."""


def train_options(fn):
    """Applies :data:`TRAIN_OPTIONS` (and the hidden ``--adv-eps`` of the last release)."""
    for option in reversed(TRAIN_OPTIONS):
        fn = option(fn)
    return renamed_option("--adv-eps", "--eps", "adv_eps", type=click.FloatRange(min=0))(fn)


def parse_seeds(text: str, option: str = "--seeds", limit: int = 100) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-2"`` (or both, ``"0-2,7"``) -> (0, 1, 2[, 7]): distinct seeds in
    ``[0, 2^31 - 1]``.

    Raises:
        InputError: not such a list, a repeated seed, or more than ``limit`` seeds.
    """
    expected = f"{option}: expected distinct integers in [0, {MAX_SEED}] like 0,1,2,3,4 or 0-4"
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first or last > MAX_SEED or last - first >= limit:
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
        limit: The most values a list or range may hold.

    Raises:
        InputError: not finite numbers, outside ``[low, high]``, or a bad or too long range.
    """
    if not text:
        return ()
    expected = (
        f"{option}: expected numbers in [{low:g}, {high:g}] like 0.05,0.1 or a range "
        "START:STOP:STEP"
    )
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if not all(math.isfinite(v) for v in (start, stop, step)) or step <= 0 or stop < start:
                raise ValueError
            count = (stop - start) / step
            if not math.isfinite(count) or count + 1 > limit:
                many = f"{count + 1:.0f}" if math.isfinite(count) else "too many"
                raise InputError(f"{option}: the range {text!r} has {many} values; at most {limit}")
            count = int(round(count))
            values = tuple(round(start + i * step, 10) for i in range(count + 1))
        else:
            values = tuple(float(p) for p in text.split(","))
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{expected}, got {text!r}") from None
    if len(values) > limit:
        raise InputError(f"{option}: {len(values)} values; at most {limit}")
    if not all(math.isfinite(v) and low <= v <= high for v in values):
        raise InputError(f"{expected}, got {text!r}")
    return values


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"64"`` -> (64, 64, 64); ``"64,64,48"`` -> (64, 64, 48).

    Raises:
        InputError: not one or three positive integers.
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
