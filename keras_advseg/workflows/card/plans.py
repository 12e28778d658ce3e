"""What a card runs (:class:`CardPlan`, :data:`CARD_PLANS`) and what its numbers can claim."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from keras_advseg.config import AuditConfig
from keras_advseg.corruptions.registry import CORRUPTIONS
from keras_advseg.workflows.card import table


@dataclass(frozen=True)
class CardPlan:
    """What a card runs: its attacks' steps, severities, samples and subjects.

    Attributes:
        name: ``quick``, ``standard`` or ``full``.
        subjects: Test subjects of the attacks, the certificate and the audit (0: all); the
            corruptions and clean scores use every test subject.
        eps: The paper's budgets for FGSM (the worst case runs at the first).
        steps: Iterations of each worst-case attack and of VAFA.
        ensemble: The worst case's attacks.
        corruptions, severities: The corruption benchmark.
        sigmas, n, n0: The certificates.
        audit_steps: The audit's steps (doubled twice for its item 3).
        audit_curve, audit_restarts, audit_queries: The audit's item 2 budgets, item 4 restarts
            and item 7 queries.
        audit_subjects: Subjects of the audit (None: ``subjects``).
        vafa: VAFA's named setting (:data:`~keras_advseg.config.VAFA_SETTINGS`): ``light`` at
            ``quick``, the paper's (32^3 blocks, q_max 20, 20 steps, Dice minus SSIM) at
            ``standard`` and ``full``.
    """

    name: str
    subjects: int
    eps: tuple[float, ...]
    steps: int
    ensemble: tuple[str, ...]
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    sigmas: tuple[float, ...]
    n: int
    n0: int
    audit_steps: int
    audit_curve: tuple[float, ...] = (0.025, 0.1, 0.4)
    audit_restarts: int = 2
    audit_queries: int = 20
    audit_subjects: int | None = None
    vafa: str = "light"

    @property
    def audited(self) -> int:
        """Subjects of the audit (0: all)."""
        return self.subjects if self.audit_subjects is None else self.audit_subjects

    def audit_config(self, seed: int, temperature: float = 1.0) -> AuditConfig:
        """The audit this plan runs."""
        return AuditConfig(
            steps=self.audit_steps,
            attacks=self.ensemble,
            curve=self.audit_curve,
            curve_attacks=("pgd-dice",),
            restarts=self.audit_restarts,
            queries=self.audit_queries,
            subjects=self.audited,
            temperature=temperature,
            seed=seed,
        )

    def key(self, axis: str, **context) -> str:
        """A hash of what the command ``axis`` (an :class:`~keras_advseg.workflows.card.table.
        AxisRun`'s name) depends on: its settings, its version, and ``context`` (the model's
        digest, the seed, the data, the reference): an axis run with anything else is run
        again."""
        run = table.run_named(axis)
        value = [axis, run.version, {f: getattr(self, f) for f in run.settings}, context]
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


CARD_PLANS = {
    "quick": CardPlan(
        "quick",
        2,
        (0.05, 0.1),
        5,
        ("segpgd", "pgd-dice", "pgd-softened"),
        ("motion", "bias-field", "missing-sequence"),
        (3,),
        (0.5,),
        100,
        10,
        5,
    ),
    "standard": CardPlan(
        "standard",
        0,
        (0.05, 0.1),
        10,
        ("apgd-masked-ce", "segpgd", "pgd-dice", "pgd-softened"),
        CORRUPTIONS.names(),
        (1, 3, 5),
        (0.25, 0.5),
        100,
        10,
        10,
        vafa="paper",
    ),
    "full": CardPlan(
        "full",
        0,
        (0.05, 0.1),
        20,
        (
            "apgd-ce",
            "apgd-dice",
            "apgd-masked-ce",
            "apgd-balanced-masked-ce",
            "segpgd",
            "cospgd",
            "pgd-dice",
            "pgd-softened",
        ),
        CORRUPTIONS.names(),
        (1, 2, 3, 4, 5),
        (0.25, 0.5, 1.0),
        1000,
        10,
        20,
        audit_curve=AuditConfig().curve,
        audit_restarts=AuditConfig().restarts,
        audit_queries=AuditConfig().queries,
        vafa="paper",
    ),
}


def claims(plan: CardPlan) -> dict[str, str]:
    """What a card of ``plan`` can and cannot claim, axis by axis (printed on the card), and
    which subjects each axis scored (``subjects``)."""
    said = {axis.name: axis.claim(plan) for axis in table.AXES if axis.claim is not None}
    return {**said, "subjects": _subjects_claim(plan)}


def _subjects_claim(plan: CardPlan) -> str:
    def first(n):
        return "every test subject" if n == 0 else f"the first {n}"

    if plan.subjects == 0 and plan.audited == 0:
        return "every test subject"
    return (
        f"every test subject for the clean, attacked and corrupted scores; "
        f"{first(plan.subjects)} for the certificates and {first(plan.audited)} for the audit"
    )
