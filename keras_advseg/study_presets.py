"""The study's presets (``advseg reproduce --preset``): which models each trains, how each is
attacked, scored, certified and audited.

Pure Python, above :mod:`keras_advseg.config` (a study is made of its training presets and
audit settings); :mod:`keras_advseg.config` re-exports :data:`STUDIES`, :class:`Study` and
:class:`ModelSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keras_advseg.attacks.registry import DEFAULT_ENSEMBLE
from keras_advseg.config import PAPER_EPS_GRID, AuditConfig
from keras_advseg.corruptions.registry import CORRUPTIONS


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study.

    Attributes:
        model: ``unet3d`` or ``unet2d``.
        defense: One of :data:`~keras_advseg.config.DEFENSES`.
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
