"""What describes one study preset, apart from running it: each model's training
configuration, whether it fine-tunes the undefended network, and the steps of a seed.

The orchestrator (:mod:`~keras_advseg.workflows.reproduce`) and the reports
(:mod:`~keras_advseg.workflows.report`, :mod:`~keras_advseg.workflows.replication`) both read
it, so neither imports the other.
"""

from __future__ import annotations

from keras_advseg.config import ADVERSARIAL_DEFENSES, ModelSpec, Study, TrainConfig


def seed_plan(study: Study) -> list[str]:
    """The steps of one training seed, in order."""
    models = study.models3d + study.models2d
    plan = [f"train {m.name}" for m in models]
    for m in models:
        plan.append(f"evaluate {m.name}")
        if m.defense == "distillation":
            plan.append(f"evaluate {m.name} at T={m.temperature:g}")
    corrupted = [f"corruptions {m.name}" for m in carded(study)] if study.corruptions else []
    plan += corrupted[:1]  # the first prepares the corrupted scans every model is scored on
    if study.certify_sigmas:
        plan += [f"certify {m.name}" for m in carded(study)]
    plan += [f"audit {m.name}" for m in carded(study)]
    # the others only score a model on those scans, seconds each: late, so that with several
    # workers they fill the time while the last long steps finish
    plan += corrupted[1:]
    if has_cards(study):
        plan += [f"card {m.name}" for m in carded(study)] + ["leaderboard"]
    return plan + ["compare", "report"]


def carded(study: Study) -> tuple[ModelSpec, ...]:
    """The 3-D models that are scored on every axis (corruptions, certificates, audit) and get
    a robustness card: all but the equal-budget control, an undefended network that exists for
    the paired comparison of training budgets."""
    return tuple(m for m in study.models3d if not m.control)


def has_cards(study: Study) -> bool:
    """Whether the study measures every axis of a card (artifacts and certificates too)."""
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
