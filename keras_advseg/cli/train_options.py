"""The options of ``advseg train``: one per :class:`~keras_advseg.config.TrainConfig` field.

Each states what every training preset sets it to; an option left out takes the preset's value.
"""

from __future__ import annotations

import click

from keras_advseg import config as cfg
from keras_advseg.cli_args import (
    FRACTION,
    RenamedChoice,
    renamed_notice,
    renamed_option,
    seed_option,
)


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


def _field(option: str) -> str:
    return option.split("/")[0].removeprefix("--").replace("-", "_")


def _preset_option(name: str, type_, text: str):
    """A training option whose default comes from the preset: its help ends with each preset's
    value (``Epochs [preset: paper 100, ...].``)."""
    return click.option(name, type=type_, help=f"{text} {_preset(_field(name))}.")


def _stated_default_option(name: str, type_, text: str, dest: str | None = None):
    """A training option left to :class:`~keras_advseg.config.TrainConfig`'s default when
    omitted; its help ends with that default (``Spatial dropout rate [0.1].``)."""
    names = (name,) if dest is None else (name, dest)
    default = getattr(_TRAIN, dest or _field(name))
    return click.option(*names, type=type_, help=f"{text} [{default:g}].")


def _shown_default_option(name: str, help_text: str, type_=None):
    """A training option defaulting to :class:`~keras_advseg.config.TrainConfig`'s value, shown."""
    kwargs = {} if type_ is None else {"type": type_}
    return click.option(
        name, default=getattr(_TRAIN, _field(name)), show_default=True, help=help_text, **kwargs
    )


TRAIN_OPTIONS = (
    _shown_default_option(
        "--model",
        "The paper's 3-D UNet, or its 2-D UNet trained on axial slices.",
        click.Choice(cfg.MODELS),
    ),
    _shown_default_option(
        "--defense",
        "Training defense: adversarial (FGSM, eq. 9), pgd, fast and trades (robust "
        "training), distillation (eq. 4-7), noise (uniform noise), gaussian (Gaussian noise, "
        "for certification), corruptions (random MRI corruptions, see --corruptions).",
        RenamedChoice(cfg.DEFENSES, cfg.RENAMED_DEFENSES, "--defense"),
    ),
    _preset_option("--epochs", click.IntRange(min=1), "Epochs"),
    _preset_option(
        "--batch-size", click.IntRange(min=1), "Volumes (3-D) or slices (2-D) per batch"
    ),
    _preset_option("--lr", click.FloatRange(min=0, min_open=True), "Adam learning rate"),
    click.option(
        "--lr-schedule",
        type=click.Choice(cfg.LR_SCHEDULES),
        help="constant, or cosine decay to 1% of --lr over the run [preset: paper constant, "
        "quick cosine, smoke constant].",
    ),
    seed_option("Seed of initialisation, data order, augmentation, dropout.", _TRAIN.seed),
    _preset_option(
        "--shape", click.IntRange(min=8, max=512), "Cube size raw data is prepared to, in voxels"
    ),
    _preset_option("--base-filters", click.IntRange(min=1), "Filters at the first UNet level"),
    _preset_option("--depth", click.IntRange(min=2), "UNet levels"),
    _stated_default_option("--dropout", FRACTION, "Spatial dropout rate"),
    click.option(
        "--loss",
        type=click.Choice(cfg.LOSSES),
        help="dice: the paper's soft Dice; dice_ce: soft Dice + cross-entropy (converges "
        "faster) [preset: paper dice, quick dice_ce, smoke dice_ce].",
    ),
    _stated_default_option(
        "--val-fraction", FRACTION, "Share of training subjects used to pick the best epoch"
    ),
    click.option(
        "--augment/--no-augment",
        default=None,
        help="The paper's augmentation (rotations, flips, transposes) [on].",
    ),
    _stated_default_option(
        "--eps",
        click.FloatRange(min=0),
        "Adversarial, PGD, fast and TRADES training: the attack's budget, relative to each "
        "input's intensity range (max - min)",
        dest="adv_eps",
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
    _stated_default_option(
        "--trades-beta", click.FloatRange(min=0), "TRADES: weight of the KL term"
    ),
    click.option(
        "--adv-mode",
        type=click.Choice(cfg.ADVERSARIAL_MODES),
        help="Adversarial training: one update on the weighted loss, or the paper's two "
        f"updates [{_TRAIN.adv_mode}].",
    ),
    _stated_default_option(
        "--temperature",
        click.FloatRange(min=0, min_open=True),
        "The model's softmax temperature T: the T its training loss uses; distillation's "
        "teacher and student (eq. 4)",
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
    _stated_default_option(
        "--noise-radius",
        click.FloatRange(min=0),
        "Noise augmentation: uniform noise radius relative to each input's intensity range",
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
        "--corruptions",
        help="The MRI corruptions drawn from during training (--defense corruptions, or with "
        "--corruption-rate any defense): all, scanner, operator or a list [all].",
    ),
    click.option(
        "--corruption-rate",
        type=click.FloatRange(0, 1),
        help="Share of training volumes corrupted, each by a random corruption at a random "
        "severity 1-5 [0.5 with --defense corruptions, else 0]; combines with adversarial "
        "training.",
    ),
    _shown_default_option(
        "--strategy",
        "tf.distribute: one device, MirroredStrategy (local GPUs), "
        "MultiWorkerMirroredStrategy (TF_CONFIG).",
        click.Choice(cfg.STRATEGIES),
    ),
    _shown_default_option("--deterministic/--nondeterministic", "TensorFlow op determinism."),
    _shown_default_option(
        "--precision",
        "Keras dtype policy: mixed_bfloat16 cuts a 128^3 step's memory on CPU, "
        "mixed_float16 suits GPUs; losses and logits stay float32.",
        click.Choice(cfg.PRECISIONS),
    ),
)
"""Every :class:`~keras_advseg.config.TrainConfig` field the CLI sets, named as the field
(``--eps`` sets ``adv_eps``): ``advseg train`` passes them through unchanged."""


def train_options(fn):
    """Applies :data:`TRAIN_OPTIONS` (and the hidden spellings of the last release:
    ``--adv-eps``, ``--artifacts``, ``--artifact-rate``)."""
    for option in reversed(TRAIN_OPTIONS):
        fn = option(fn)
    fn = renamed_option("--artifacts", "--corruptions", "corruptions", notice=renamed_notice)(fn)
    fn = renamed_option(
        "--artifact-rate",
        "--corruption-rate",
        "corruption_rate",
        notice=renamed_notice,
        type=click.FloatRange(0, 1),
    )(fn)
    return renamed_option("--adv-eps", "--eps", "adv_eps", type=click.FloatRange(min=0))(fn)
