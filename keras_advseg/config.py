"""The single source of every choice and default: configurations, presets, studies, names.

Pure Python with no TensorFlow import, so the CLI reads its choices and
defaults here without starting TensorFlow. Everything that trains, attacks,
evaluates or reports takes its values from this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from keras_advseg.attacks.registry import ATTACKS as _ATTACK_REGISTRY
from keras_advseg.attacks.registry import DEFAULT_ENSEMBLE, canonical_attacks
from keras_advseg.corruptions.registry import CORRUPTIONS
from keras_advseg.errors import InputError

# ---------------------------------------------------------------------------------------------
# Names shared by every layer
# ---------------------------------------------------------------------------------------------

REGIONS = ("wt", "tc", "et")
"""BraTS evaluation regions: whole tumour, tumour core, enhancing tumour."""

REGION_NAMES = {"wt": "Whole tumour", "tc": "Tumour core", "et": "Enhancing tumour"}
REGION_LABELS = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}
"""Each region as a set of BraTS labels (0 background, 1 necrotic core, 2 oedema, 4 enhancing)."""
REGION_CLASS_INDICES = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
"""Each region as a set of one-hot class indices (the models' channel 3 is label 4)."""
DICE_METRICS = tuple(f"dice_{region}" for region in REGIONS)
QUALITY_METRICS = ("psnr", "ssim", "rmse")

MODELS = ("unet3d", "unet2d")
DEFENSES = (
    "none",
    "adversarial",
    "distillation",
    "noise",
    "pgd",
    "fast",
    "trades",
    "artifacts",
    "gaussian",
)
ADVERSARIAL_DEFENSES = ("adversarial", "pgd", "fast", "trades")
"""Defenses that train on adversarial examples of budget ``adv_eps``."""
ADVERSARIAL_MODES = ("joint", "alternating")
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
LOSSES = ("dice", "dice_ce")
LR_SCHEDULES = ("constant", "cosine")
NORMALIZATIONS = ("global", "volume")
"""Standardisation of prepared volumes: training-split statistics (the paper's) or per volume."""

ATTACKS = _ATTACK_REGISTRY
"""The attack registry (:mod:`keras_advseg.attacks.registry`): every attack's name, display name
and facts. ``targeted-ifgsm`` is the paper's targeted i-FGSM."""


def attack_display(name: str) -> str:
    """The printed name of an attack (``"targeted i-FGSM"``)."""
    return ATTACKS.display(name)


PAPER_EPS_GRID = tuple(round(0.001 * i, 3) for i in range(11))
"""The paper's FGSM sweep: eps 0, 0.001, ..., 0.010 (Fig. 5-8)."""

EPS_CURVE = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
"""Budgets of ``advseg evaluate --eps-curve``: doubling until Dice reaches 0."""


@dataclass(frozen=True)
class VafaSetting:
    """A named VAFA setting: block side, the tables' upper bound, the SSIM term and the steps
    (None: the evaluation's own)."""

    block: int
    q_max: float
    ssim: bool
    steps: int | None = None

    def label(self, name: str, steps: int, block: int | None = None) -> str:
        """E.g. ``"VAFA paper: 32^3 blocks, q_max 20, 20 steps, Dice - SSIM"``."""
        loss = "Dice - SSIM" if self.ssim else "Dice"
        return (
            f"VAFA {name}: {block or self.block}^3 blocks, q_max {self.q_max:g}, "
            f"{self.steps or steps} steps, {loss}"
        )


VAFA_SETTINGS = {
    "light": VafaSetting(block=8, q_max=10.0, ssim=False),
    "paper": VafaSetting(block=32, q_max=20.0, ssim=True, steps=20),
}
"""VAFA's named settings (:func:`keras_advseg.attacks.vafa`). ``light``: VAFA's code defaults
(cheap: quick cards and the study); ``paper``: Hanif et al.'s main setting (standard and full
cards)."""

VAFA_SETTING_NAMES = tuple(VAFA_SETTINGS)


def fitting_block(shape, block: int) -> int:
    """The largest of ``block``, ``block / 2``, ... (at least 8) that divides every side of
    ``shape``: a 16^3 volume cannot hold a 32^3 block (VAFA's block for a small input)."""
    while block > 8 and any(int(s) % block for s in shape):
        block //= 2
    return block


MIN_CLEAN_DICE = 0.2
"""A region whose mean clean Dice is below this is one the model does not segment: an attack or
an artifact has nothing to take there, so a high resilience, a small drop or an audit PASS says
nothing about robustness. The card, the leaderboard and the audit (item 8) flag such a model and
never rank it as robust. (The README's smoke model, validated at Dice 0.014, is the example; a
model of the quick study reaches 0.6-0.8.)"""

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "keras-advseg"


def check_range(name: str, value, low: float, high: float) -> None:
    """Checks that ``value`` is a finite number in ``[low, high]``.

    Raises:
        InputError: naming ``name``, otherwise.
    """
    try:
        ok = math.isfinite(value) and low <= value <= high
    except TypeError:
        ok = False
    if not ok:
        raise InputError(
            f"{name} must be a finite number in [{low:g}, {high:g}]. Received: {name}={value!r}"
        )


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

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
        "depth": 3,
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
    artifacts: str = "all"
    artifact_rate: float | None = None
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
        if self.artifact_rate is not None:
            check_range("artifact_rate", self.artifact_rate, 0.0, 1.0)
        from keras_advseg.corruptions import parse_corruptions

        object.__setattr__(self, "artifacts", ",".join(parse_corruptions(self.artifacts)))
        if self.defense == "artifacts" and self.corruption_rate == 0:
            raise InputError("defense 'artifacts' needs artifact_rate > 0. Received: 0")
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
    def corruption_rate(self) -> float:
        """The share of training volumes corrupted: ``artifact_rate``, or 0.5 for the
        ``artifacts`` defense and 0 (none) for the others."""
        if self.artifact_rate is not None:
            return self.artifact_rate
        return 0.5 if self.defense == "artifacts" else 0.0

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

# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """What to evaluate.

    Attributes:
        attacks: Attacks besides the clean evaluation (``none`` is always done).
        eps: Budgets of the attacks, relative to each input's intensity range (paper: 0.05).
        steps: Iterations of i-FGSM, targeted i-FGSM and PGD (paper: 10).
        eps_sweep: FGSM budgets of the sweep (paper: 0..0.010 by 0.001), from one gradient.
        iterations_sweep: Record Dice and input quality after every i-FGSM
            (and targeted i-FGSM) iteration.
        attack_temperature: Softmax temperature of the attack's loss (T > 1
            attacks distilled models at the logit level).
        seed: PGD's random starts.
        restarts: PGD restarts.
        iterative_eps: Budgets of i-FGSM, targeted i-FGSM and PGD when they
            should differ from ``eps`` (the study runs them at Table 1's 0.05
            only); None: ``eps``.
        ensemble: The attacks of ``worst`` (attacks registered with ``ensemble=True``).
        worst_steps: Iterations of each attack of ``worst`` (None: ``steps``).
        vafa_steps: Iterations of VAFA (None: ``steps``; the ``paper`` setting runs its own 20).
        vafa_setting: VAFA's named setting (``light``: 8^3 blocks, q_max 10, no SSIM; ``paper``:
            32^3 blocks, q_max 20, 20 steps, Dice minus SSIM).
        worst_weighs: The other evaluated attacks whose result the worst case also weighs,
            per subject and budget (None: every attack run at that budget). Models compared
            by their worst case must weigh the same attacks: the study gives every 3-D
            model ``("fgsm",)``, although the undefended one is also run under i-FGSM and PGD.
        eps_curve: Also run every attack at each budget of :data:`EPS_CURVE`, in
            increasing order; once a subject's three regions all reach Dice 0, its
            adversarial input is kept for the larger budgets (their balls contain it).

    Raises:
        ValueError: an unknown attack, a negative budget, or ``steps < 1``.
    """

    attacks: tuple[str, ...] = ("fgsm",)
    eps: tuple[float, ...] = (0.05,)
    steps: int = 10
    eps_sweep: tuple[float, ...] = ()
    iterations_sweep: bool = False
    attack_temperature: float = 1.0
    seed: int = 0
    restarts: int = 1
    iterative_eps: tuple[float, ...] | None = None
    eps_curve: bool = False
    ensemble: tuple[str, ...] = DEFAULT_ENSEMBLE
    worst_steps: int | None = None
    worst_weighs: tuple[str, ...] | None = None
    vafa_steps: int | None = None
    vafa_setting: str = "light"

    def __post_init__(self):
        self.attacks = canonical_attacks(self.attacks)
        if self.worst_weighs is not None:
            self.worst_weighs = canonical_attacks(self.worst_weighs, what="worst_weighs")
            if "worst" in self.worst_weighs:
                raise InputError("worst_weighs must not contain 'worst'")
        budgets = tuple(self.eps) + tuple(self.eps_sweep) + tuple(self.iterative_eps or ())
        if not all(math.isfinite(e) and 0 <= e <= 1 for e in budgets):
            raise InputError(
                "eps values must be in [0, 1] (a fraction of the intensity range). "
                f"Received: eps={self.eps}, eps_sweep={self.eps_sweep}, "
                f"iterative_eps={self.iterative_eps}"
            )
        check_range("attack_temperature", self.attack_temperature, 0.0, 1e6)
        if self.attack_temperature <= 0 or self.restarts < 1:
            raise InputError(
                f"attack_temperature must be > 0 and restarts >= 1. Received: "
                f"attack_temperature={self.attack_temperature}, restarts={self.restarts}"
            )
        if self.steps < 1 or any(
            s is not None and s < 1 for s in (self.worst_steps, self.vafa_steps)
        ):
            raise InputError(
                f"steps must be >= 1. Received: steps={self.steps}, worst_steps={self.worst_steps}"
                f", vafa_steps={self.vafa_steps}"
            )
        if not self.ensemble:
            raise InputError("ensemble must name at least one attack. Received: ensemble=()")
        self.ensemble = canonical_attacks(self.ensemble, what="ensemble", ensemble=True)
        if self.vafa_setting not in VAFA_SETTING_NAMES:
            raise InputError(
                f"vafa_setting must be one of {', '.join(VAFA_SETTING_NAMES)}. "
                f"Received: {self.vafa_setting!r}"
            )

    @property
    def budgets_iterative(self) -> tuple[float, ...]:
        """The budgets of the iterative attacks (with the eps curve's, in increasing order)."""
        budgets = tuple(self.iterative_eps or self.eps)
        if self.eps_curve:
            return tuple(sorted(set(budgets) | set(EPS_CURVE)))
        return budgets

    @property
    def budgets_fgsm(self) -> tuple[float, ...]:
        """The budgets of FGSM (with the eps curve's)."""
        return tuple(sorted(set(self.eps) | (set(EPS_CURVE) if self.eps_curve else set())))


AUDIT_ITEMS = {
    1: "iterative attacks at least as strong as FGSM",
    2: "Dice falls monotonically with eps and reaches the floor at a large budget",
    3: "the worst case has converged: the last doubling of the iterations changes Dice little",
    4: "random restarts change worst-case Dice little or find nothing the white-box attack misses",
    5: "a transfer attack from the reference model is not stronger than the white-box attack",
    6: "PGD at a softened temperature or on CE is not stronger than on soft Dice at T = 1 "
    "and the white-box attack",
    7: "a gradient-free attack (random search) is not stronger than the white-box attack",
    8: "the model has Dice to lose: clean Dice of every region at least MIN_CLEAN_DICE",
}
"""The gradient-masking checklist (Carlini et al. 2019), item number -> what PASS means."""


@dataclass(frozen=True)
class AuditConfig:
    """What the gradient-masking audit (``advseg audit``) runs.

    Attributes:
        eps: Budget of the white-box worst case that the items compare with.
        steps: Iterations of each attack (doubled twice for item 3).
        attacks: The worst-case ensemble (attacks registered with ``ensemble=True``).
        curve: Budgets of item 2; its last is the "large budget".
        curve_attacks: The ensemble run at each budget of the curve.
        floor: Item 2 passes when mean Dice at the largest budget is at most this.
        restarts: Random starts of item 4 (APGD masked CE from ``seed``, ``seed + 1``, ...).
        queries: Forward passes of the random search (item 7).
        tolerance: The mean-Dice difference that counts as "changes" or "stronger".
        relative_tolerance: Items 3-7 also ignore differences up to this share of what the
            white-box worst case takes off clean Dice (a masked evaluation misses far more).
        temperature: The model's own softmax temperature (distilled models), for item 6;
            item 6 also attacks at the temperature that brings the median logit margin to 2.
        subjects: At most this many subjects are audited (0: all).
        seed: Random starts and the random search.
    """

    eps: float = 0.05
    steps: int = 10
    attacks: tuple[str, ...] = DEFAULT_ENSEMBLE
    curve: tuple[float, ...] = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
    curve_attacks: tuple[str, ...] = ("apgd-masked-ce", "pgd-dice")
    floor: float = 0.05
    restarts: int = 5
    queries: int = 100
    tolerance: float = 0.01
    relative_tolerance: float = 0.1
    temperature: float = 1.0
    subjects: int = 4
    seed: int = 0

    def __post_init__(self):
        if not self.attacks or not self.curve_attacks:
            raise InputError("the audit needs at least one attack and one curve attack")
        for name in ("attacks", "curve_attacks"):
            value = canonical_attacks(getattr(self, name), what=f"audit {name}", ensemble=True)
            object.__setattr__(self, name, value)
        budgets = (self.eps, *self.curve)
        if not self.curve or not all(math.isfinite(e) and 0 < e <= 1 for e in budgets):
            raise InputError(
                f"audit budgets must be in (0, 1]. Received: eps={self.eps}, curve={self.curve}"
            )
        if self.steps < 1 or self.restarts < 1 or self.queries < 0 or self.subjects < 0:
            raise InputError(
                "audit steps and restarts must be >= 1, queries and subjects >= 0. Received: "
                f"steps={self.steps}, restarts={self.restarts}, queries={self.queries}, "
                f"subjects={self.subjects}"
            )
        check_range("tolerance", self.tolerance, 0.0, 1.0)
        check_range("relative_tolerance", self.relative_tolerance, 0.0, 1.0)
        check_range("temperature", self.temperature, 1e-6, 1e6)
        check_range("floor", self.floor, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# The study (``advseg reproduce``)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study.

    Attributes:
        model: ``unet3d`` or ``unet2d``.
        defense: One of :data:`DEFENSES`.
        options: ``((TrainConfig field, value), ...)`` beyond the preset.
        control: The equal-budget control: no defense, trained as long as the longest
            defense, so that a defense's gain can be told from the gain of more training.
    """

    model: str
    defense: str
    options: tuple = ()
    control: bool = False

    @property
    def name(self) -> str:
        if self.control:
            return f"{self.model}-none-control"
        suffix = "".join(
            f"-{k.replace('adv_eps', 'eps').replace('temperature', 'T').replace('noise_sigma', 'sigma')}{v:g}"
            for k, v in self.options
        )
        return f"{self.model}-{self.defense}{suffix}"

    @property
    def temperature(self) -> float:
        return dict(self.options).get("temperature", 1.0)


@dataclass(frozen=True)
class Study:
    """A preset of the study."""

    phantom_subjects: int
    voxel_mm: float
    shape: int
    n4: bool
    test_fraction: float
    train_preset: str
    models3d: tuple[ModelSpec, ...]
    models2d: tuple[ModelSpec, ...]
    steps: int
    eps_sweep: tuple[float, ...]
    epochs: int | None = None
    table_eps: tuple[float, ...] = (0.0, 0.05, 0.1)
    attacks: tuple[str, ...] = ("fgsm", "ifgsm", "targeted-ifgsm", "pgd-dice")
    attacks2d: tuple[str, ...] | None = None  # the undefended 2-D UNet's attacks [attacks]
    warm_start: bool = False
    extra: dict = field(default_factory=dict)
    ensemble: tuple[str, ...] = DEFAULT_ENSEMBLE  # every 3-D model's worst case at 0.05
    worst_steps: int | None = None  # iterations of each ensemble attack [steps]
    vafa_setting: str = "light"  # VAFA_SETTINGS: the paper preset runs the paper's
    audit: AuditConfig = AuditConfig()  # the audit of every 3-D model
    corruptions: tuple[str, ...] = ()  # MRI corruptions every 3-D model is scored under
    corruption_severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    certify_sigmas: tuple[float, ...] = ()  # randomized-smoothing certificates of every 3-D model
    certify_n: int = 100
    certify_n0: int = 10
    certify_subjects: int = 0  # the first N test subjects are certified (0: all)

    @property
    def defenses3d(self) -> tuple[ModelSpec, ...]:
        """The defended 3-D models (neither the baseline nor the control)."""
        return tuple(s for s in self.models3d if s.defense != "none")

    @property
    def control3d(self) -> ModelSpec | None:
        """The equal-budget control of the 3-D UNet, if the study has one."""
        return next((s for s in self.models3d if s.control), None)


def _defended(
    model: str, temperatures, epsilons, noise=True, robust=(), control=None, gaussian=None
) -> tuple[ModelSpec, ...]:
    """The baseline, then the defenses, then the equal-budget control (``control``: its
    training options, e.g. ``(("epochs", 45),)``; None: no control); ``gaussian``: the sigma
    of a Gaussian-noise-trained model (None: none)."""
    specs = [ModelSpec(model, "none")]
    specs += [ModelSpec(model, "distillation", (("temperature", t),)) for t in temperatures]
    specs += [ModelSpec(model, "adversarial", (("adv_eps", e),)) for e in epsilons]
    if noise:
        specs.append(ModelSpec(model, "noise"))
    specs += [ModelSpec(model, defense, (("adv_eps", 0.05),)) for defense in robust]
    if gaussian is not None:
        specs.append(ModelSpec(model, "gaussian", (("noise_sigma", gaussian),)))
    if control is not None:
        specs.append(ModelSpec(model, "none", control, control=True))
    return tuple(specs)


STUDIES = {
    "smoke": Study(
        phantom_subjects=8,
        voxel_mm=6.0,
        shape=16,
        n4=False,
        test_fraction=0.25,
        train_preset="smoke",
        models3d=_defended("unet3d", (20,), (0.05,), noise=False, control=(("epochs", 2),)),
        models2d=_defended("unet2d", (), (0.05,), noise=False),
        steps=3,
        eps_sweep=(0.0, 0.005, 0.01),
        warm_start=True,
        ensemble=("segpgd", "pgd-dice"),
        worst_steps=2,
        audit=AuditConfig(
            steps=1,
            attacks=("segpgd", "pgd-dice"),
            curve=(0.05, 0.5),
            curve_attacks=("pgd-dice",),
            restarts=2,
            queries=3,
            subjects=1,
        ),
        corruptions=("missing-sequence",),
        corruption_severities=(5,),
        certify_sigmas=(0.5,),
        certify_n=60,
        certify_n0=5,
    ),
    "quick": Study(
        phantom_subjects=48,
        voxel_mm=3.0,
        shape=32,
        n4=True,
        test_fraction=0.25,
        train_preset="quick",
        models3d=_defended(
            "unet3d",
            (20,),
            (0.05,),
            noise=False,
            robust=("fast",),
            control=(("epochs", 8),),
            gaussian=0.5,
        ),
        models2d=(),  # the 2-D UNets are in `smoke` and `paper`
        steps=10,
        eps_sweep=PAPER_EPS_GRID,
        warm_start=True,
        ensemble=("segpgd", "pgd-dice", "pgd-softened"),
        worst_steps=5,
        # 5 steps doubled twice: what an ordinary model's worst case needs to settle (1 step
        # never did, so every audit warned on item 3)
        audit=AuditConfig(
            steps=5,
            attacks=("segpgd", "pgd-dice", "pgd-softened"),
            curve=(0.05, 0.4),
            curve_attacks=("pgd-dice",),
            restarts=2,
            queries=10,
            subjects=1,
        ),
        # one k-space artifact, the one N4 should undo, one operator error, at the middle
        # level: what fits in 15 % of `make demo`'s time
        corruptions=("motion", "bias-field", "missing-sequence"),
        corruption_severities=(3,),
        # 8 of the 12 test subjects: enough for a paired test to reach p < 0.05 / 3
        certify_sigmas=(0.5,),
        certify_n=100,
        certify_n0=10,
        certify_subjects=8,
    ),
    "paper": Study(
        phantom_subjects=285,
        voxel_mm=1.0,
        shape=128,
        n4=True,
        test_fraction=0.2,
        train_preset="paper",
        models3d=_defended(
            "unet3d",
            (20, 100, 500, 5000),
            (0.01, 0.05, 0.1),
            robust=("pgd", "fast", "trades"),
            control=(("epochs", 400), ("lr", 5e-4)),
            gaussian=0.5,
        ),
        models2d=_defended("unet2d", (20, 100, 500, 5000), (0.01, 0.05, 0.1)),
        steps=10,
        eps_sweep=PAPER_EPS_GRID,
        vafa_setting="paper",
        corruptions=CORRUPTIONS.names(),
        # standardised units: a quarter, half and one tissue standard deviation
        certify_sigmas=(0.25, 0.5, 1.0),
        certify_n=1000,
        certify_n0=10,
    ),
}
