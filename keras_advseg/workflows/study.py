"""What describes one study preset, apart from running it: each model's training
configuration, whether it fine-tunes the undefended network, and the plan of a seed (its
steps, in order, each with the steps it reads).

The orchestrator (:mod:`~keras_advseg.workflows.reproduce`) and the reports
(:mod:`~keras_advseg.workflows.report`, :mod:`~keras_advseg.workflows.replication`) both read
it, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_advseg.study_presets import ModelSpec, Study
from keras_advseg.train_config import ADVERSARIAL_DEFENSES, TrainConfig


@dataclass(frozen=True)
class PlannedStep:
    """One step of a training seed's plan.

    Attributes:
        name: Its name in the plan and in ``progress.json`` (``"train unet3d-none"``).
        kind: What it does: ``train``, ``evaluate``, ``evaluate-logit`` (a distilled model
            attacked at its temperature), ``corruptions``, ``certify``, ``audit``, ``card``,
            ``leaderboard`` or ``compare``.
        spec: The model it is about (None: ``leaderboard``, ``compare``).
        after: The steps whose files it reads.
    """

    name: str
    kind: str
    spec: ModelSpec | None = None
    after: tuple[str, ...] = ()


def planned_steps(study: Study) -> list[PlannedStep]:
    """The steps of one training seed but its report, in the order they run with one worker,
    each with the steps it reads (:func:`~keras_advseg.workflows.reproduce.seed_steps` gives
    each its function and arguments)."""
    models = study.models3d + study.models2d
    steps = []
    for m in models:
        after = (f"train {m.model}-none",) if fine_tunes(study, m) else ()
        steps.append(PlannedStep(f"train {m.name}", "train", m, after))
    for m in models:
        trained = (f"train {m.name}",)
        steps.append(PlannedStep(f"evaluate {m.name}", "evaluate", m, trained))
        if m.defense == "distillation":
            name = f"evaluate {m.name} at T={m.temperature:g}"
            steps.append(PlannedStep(name, "evaluate-logit", m, trained))
    # the first corruption step prepares the corrupted scans every model is scored on
    corrupted = []
    for m in carded(study) if study.corruptions else ():
        after = (f"train {m.name}", *(s.name for s in corrupted[:1]))
        corrupted.append(PlannedStep(f"corruptions {m.name}", "corruptions", m, after))
    steps += corrupted[:1]
    for m in carded(study) if study.certify_sigmas else ():
        steps.append(PlannedStep(f"certify {m.name}", "certify", m, (f"train {m.name}",)))
    for m in carded(study):
        reference = audit_reference(study, m)
        after = (f"train {m.name}", *([f"train {reference.name}"] if reference else []))
        steps.append(PlannedStep(f"audit {m.name}", "audit", m, after))
    # the others only score a model on those scans, seconds each: late, so that with several
    # workers they fill the time while the last long steps finish
    steps += corrupted[1:]
    if has_cards(study):
        axes = ("evaluate", "corruptions", "certify", "audit")
        for m in carded(study):
            after = tuple(f"{axis} {m.name}" for axis in axes)
            steps.append(PlannedStep(f"card {m.name}", "card", m, after))
        cards = tuple(f"card {m.name}" for m in carded(study))
        steps.append(PlannedStep("leaderboard", "leaderboard", None, cards))
    evaluations = tuple(s.name for s in steps if s.kind.startswith("evaluate"))
    steps.append(PlannedStep("compare", "compare", None, evaluations))
    return steps


def audit_reference(study: Study, spec: ModelSpec) -> ModelSpec | None:
    """The audit's transfer source: the undefended 3-D UNet for a defense, and for the
    undefended 3-D UNet the undefended 2-D UNet (None without one)."""
    if spec.defense != "none":
        return study.models3d[0]
    return study.models2d[0] if study.models2d else None


def carded(study: Study) -> tuple[ModelSpec, ...]:
    """The 3-D models that are scored on every axis (corruptions, certificates, audit) and get
    a robustness card: all but the equal-budget control, an undefended network that exists for
    the paired comparison of training budgets."""
    return tuple(m for m in study.models3d if not m.control)


def has_cards(study: Study) -> bool:
    """Whether the study measures every axis of a card (corruptions and certificates too)."""
    return bool(study.corruptions and study.certify_sigmas and carded(study))


def is_baseline(spec: ModelSpec) -> bool:
    """The undefended network of its family (not the equal-budget control)."""
    return spec.defense == "none" and not spec.control


def spec_config(study: Study, spec: ModelSpec, **overrides) -> TrainConfig:
    """The training configuration of one model of the study."""
    return TrainConfig.from_preset(
        study.train_preset,
        spec.model,
        spec.defense,
        **{"epochs": study.epochs, **dict(spec.options), **overrides},
    )


def fine_tunes(study: Study, spec: ModelSpec) -> bool:
    """Whether ``spec`` starts from its family's trained no-defense model (``study.warm_start``).

    Adversarial training (every kind), noise augmentation (uniform and Gaussian) and the
    equal-budget control do; distillation always trains its own teacher at T, as the paper does: a teacher
    trained at T = 1 (the no-defense model) gave soft labels that made the student no
    more robust than no defense.
    """
    return study.warm_start and (
        spec.defense in ADVERSARIAL_DEFENSES
        or spec.defense in ("noise", "gaussian")
        or spec.control
    )
