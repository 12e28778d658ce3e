"""A training run's configuration: :class:`TrainConfig`, its presets and its choices.

Pure Python; :mod:`keras_advseg.config` re-exports every name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keras_advseg.errors import InputError, check_range

MODELS = ("unet3d", "unet2d")
DEFENSES = (
    "none",
    "adversarial",
    "distillation",
    "noise",
    "pgd",
    "fast",
    "trades",
    "corruptions",
    "gaussian",
)
RENAMED_DEFENSES = {"artifacts": "corruptions"}
"""Defenses of the last release under their current names (accepted for one release)."""
RENAMED_FIELDS = {"artifacts": "corruptions", "artifact_rate": "corruption_rate"}
""":class:`TrainConfig` fields of the last release under their current names (a stored
configuration, e.g. a checkpoint's, is read with them renamed)."""
ADVERSARIAL_DEFENSES = ("adversarial", "pgd", "fast", "trades")
"""Defenses that train on adversarial examples of budget ``adv_eps``."""
DEFENSE_OPTIONS = {
    "adv_eps": ADVERSARIAL_DEFENSES,
    "beta": ("adversarial", "pgd", "fast"),
    "adv_steps": ("pgd", "trades"),
    "trades_beta": ("trades",),
    "adv_mode": ("adversarial",),
    "teacher": ("distillation",),
    "teacher_temperature": ("distillation",),
    "noise_radius": ("noise",),
    "noise_sigma": ("gaussian",),
}
"""The :class:`TrainConfig` fields that only some defenses read: given with another defense,
they would change nothing (:func:`unused_options`)."""


def unused_options(defense: str, given) -> list[str]:
    """The fields in ``given`` (set by the user) that ``defense`` would ignore.

    ``corruptions`` (which corruptions) is read by the corruptions defense, or by any defense
    that is given a ``corruption_rate``.
    """
    unused = [f for f in given if f in DEFENSE_OPTIONS and defense not in DEFENSE_OPTIONS[f]]
    if "corruptions" in given and defense != "corruptions" and "corruption_rate" not in given:
        unused.append("corruptions")
    return unused


ADVERSARIAL_MODES = ("joint", "alternating")
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
LOSSES = ("dice", "dice_ce")
LR_SCHEDULES = ("constant", "cosine")


PRESETS: dict[str, dict] = {
    # The paper: 3-D batch 1, Adam 1e-4, 100 epochs; distillation 400 epochs at 5e-4;
    # adversarial training "the same hyperparameters as in the distillation method";
    # 2-D batch 64, 400 epochs, 1e-5; 128^3 volumes; its augmentation.
    "paper": {
        "shape": 128,
        "base_filters": 16,
        "depth": 5,
        "loss": "dice",
        "unet3d": {"batch_size": 1, "lr": 1e-4, "epochs": 100},
        "unet3d/distillation": {"epochs": 400, "lr": 5e-4},
        "unet3d/adversarial": {"epochs": 400, "lr": 5e-4},
        "unet3d/pgd": {"epochs": 400, "lr": 5e-4},
        "unet3d/fast": {"epochs": 400, "lr": 5e-4},
        "unet3d/trades": {"epochs": 400, "lr": 5e-4},
        "unet3d/gaussian": {"epochs": 400, "lr": 5e-4},
        "unet2d": {"batch_size": 64, "lr": 1e-5, "epochs": 400},
        "adv_steps": 7,
    },
    # Fits a 2-core CPU in minutes: 32^3 volumes, a narrower and shallower network.
    "quick": {
        "shape": 32,
        "base_filters": 8,
        "depth": 4,
        "loss": "dice_ce",
        "lr_schedule": "cosine",
        "unet3d": {"batch_size": 1, "lr": 2e-3, "epochs": 25},
        # Defenses train longer, as in the paper (which gives them 4x the epochs):
        # distillation's teacher and student 15 epochs each at T = 20; adversarial
        # training and Gaussian noise training fine-tune the undefended network for 8 more
        # (the study's `quick` fits 20 minutes on 2 cores with these).
        "unet3d/distillation": {"epochs": 15},
        "unet3d/adversarial": {"epochs": 8},
        "unet3d/pgd": {"epochs": 8},
        "unet3d/fast": {"epochs": 8},
        "unet3d/trades": {"epochs": 8},
        "unet3d/gaussian": {"epochs": 8},
        "unet2d": {"batch_size": 32, "lr": 3e-3, "epochs": 10},
    },
    # Seconds: for tests and a first look.
    "smoke": {
        "shape": 16,
        "base_filters": 4,
        "depth": 2,
        "loss": "dice_ce",
        "unet3d": {"batch_size": 2, "lr": 3e-3, "epochs": 2},
        "unet2d": {"batch_size": 16, "lr": 3e-3, "epochs": 2},
    },
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (all of it is logged to MLflow).

    Raises:
        ValueError: a value outside its allowed choices or range.
    """

    model: str = "unet3d"
    defense: str = "none"
    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-4
    lr_schedule: str = "constant"
    seed: int = 0
    shape: int = 128
    base_filters: int = 16
    depth: int = 5
    dropout: float = 0.3
    loss: str = "dice"
    augment: bool = True
    val_fraction: float = 0.15
    adv_eps: float = 0.05
    beta: float | None = None
    adv_mode: str = "joint"
    adv_steps: int = 3
    trades_beta: float = 6.0
    temperature: float = 1.0
    teacher: str | None = None
    teacher_temperature: float | None = None
    init: str | None = None
    noise_radius: float = 0.01
    noise_sigma: float = 0.5
    corruptions: str = "all"
    corruption_rate: float | None = None
    strategy: str = "default"
    deterministic: bool = True
    precision: str = "float32"
    preset: str | None = None

    def __post_init__(self):
        choices = (
            ("model", MODELS),
            ("defense", DEFENSES),
            ("strategy", STRATEGIES),
            ("loss", LOSSES),
            ("precision", PRECISIONS),
            ("lr_schedule", LR_SCHEDULES),
            ("adv_mode", ADVERSARIAL_MODES),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise InputError(
                    f"{name} must be one of {allowed}. Received: {name}={getattr(self, name)!r}"
                )
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(
                f"epochs and batch_size must be >= 1. Received: epochs={self.epochs}, "
                f"batch_size={self.batch_size}"
            )
        if self.temperature <= 0:
            raise InputError(
                f"temperature must be positive. Received: temperature={self.temperature}"
            )
        if self.teacher_temperature is not None and self.teacher_temperature <= 0:
            raise InputError(
                f"teacher_temperature must be positive. Received: teacher_temperature="
                f"{self.teacher_temperature}"
            )
        if self.adv_steps < 1:
            raise InputError(f"adv_steps must be >= 1. Received: adv_steps={self.adv_steps}")
        for name, low, high in (
            ("lr", 0.0, math.inf),
            ("dropout", 0.0, 1.0),
            ("val_fraction", 0.0, 1.0),
            ("adv_eps", 0.0, 1.0),
            ("beta", 0.0, 1.0),
            ("trades_beta", 0.0, 1e3),
            ("noise_radius", 0.0, 1.0),
            ("noise_sigma", 0.0, 10.0),
            ("temperature", 0.0, 1e6),
        ):
            if name != "beta" or self.beta is not None:
                check_range(name, getattr(self, name), low, high)
        if self.corruption_rate is not None:
            check_range("corruption_rate", self.corruption_rate, 0.0, 1.0)
        from keras_advseg.corruptions import parse_corruptions

        object.__setattr__(self, "corruptions", ",".join(parse_corruptions(self.corruptions)))
        if self.defense == "corruptions" and self.corrupted_share == 0:
            raise InputError("defense 'corruptions' needs corruption_rate > 0. Received: 0")
        if self.lr <= 0 or self.dropout >= 1 or self.val_fraction >= 1:
            raise InputError(
                f"lr must be > 0, dropout and val_fraction < 1. Received: lr={self.lr}, "
                f"dropout={self.dropout}, val_fraction={self.val_fraction}"
            )
        if self.init == "teacher" and self.defense != "distillation":
            raise InputError(
                f"init='teacher' starts a distillation student from its teacher; "
                f"it needs defense='distillation'. Received: defense={self.defense!r}"
            )

    @property
    def clean_weight(self) -> float:
        """Eq. 9's beta: ``beta``, or the defense's default (0 for fast AT, as Wong et al.; 0.5)."""
        if self.beta is not None:
            return self.beta
        return 0.0 if self.defense == "fast" else 0.5

    @property
    def corrupted_share(self) -> float:
        """The share of training volumes corrupted: ``corruption_rate``, or 0.5 for the
        ``corruptions`` defense and 0 (none) for the others."""
        if self.corruption_rate is not None:
            return self.corruption_rate
        return 0.5 if self.defense == "corruptions" else 0.0

    @classmethod
    def from_stored(cls, values: dict) -> TrainConfig:
        """A configuration stored by this release or the last (a checkpoint's): the last
        release's field and defense names (:data:`RENAMED_FIELDS`, :data:`RENAMED_DEFENSES`)
        read under their current ones.

        Raises:
            TypeError: an unknown field.
            ValueError: a value outside its allowed choices or range.
        """
        values = {RENAMED_FIELDS.get(k, k): v for k, v in values.items()}
        if values.get("defense") in RENAMED_DEFENSES:
            values["defense"] = RENAMED_DEFENSES[values["defense"]]
        return cls(**values)

    @property
    def label_temperature(self) -> float:
        """The temperature the distillation teacher was trained at: ``teacher_temperature``, default T."""
        return self.teacher_temperature or self.temperature

    @classmethod
    def from_preset(
        cls, preset: str, model: str = "unet3d", defense: str = "none", **overrides
    ) -> TrainConfig:
        """A config from :data:`PRESETS`, then ``overrides`` (None values ignored).

        Raises:
            ValueError: unknown preset.
        """
        if preset not in PRESETS:
            raise InputError(
                f"preset must be one of {sorted(PRESETS)}. Received: preset={preset!r}"
            )
        table = PRESETS[preset]
        values = {k: v for k, v in table.items() if not isinstance(v, dict)}
        values.update(table.get(model, {}))
        values.update(table.get(f"{model}/{defense}", {}))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, defense=defense, preset=preset, **values)

    def tags(self) -> dict[str, str]:
        """The MLflow tags that line runs up in the UI's comparison view."""
        return {
            "defense": self.defense,
            "model": self.model,
            "temperature": str(self.temperature),
            "adv_eps": str(self.adv_eps if self.defense in ADVERSARIAL_DEFENSES else 0),
            "preset": str(self.preset),
        }


TRAINING_TAGS = ("defense", "model", "temperature", "adv_eps", "preset")
"""Tags of a training run that its evaluation runs copy (see :meth:`TrainConfig.tags`)."""
