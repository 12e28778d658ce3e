"""The gradient-masking audit: seven checks that a robustness number is not an artefact of the attack,
and an eighth that there is a robustness to measure (the model segments every region).

After Carlini et al. 2019 ("On Evaluating Adversarial Robustness", section 5) and Croce,
Singh & Hein 2024 (SEA). Each item compares mean Dice (WT, TC, ET averaged) over the
audited subjects between the evaluation's white-box worst case and a check that a sound
evaluation must not lose to. A WARN means the reported robustness may be gradient masking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from keras_advseg.attacks.auto_pgd import apgd
from keras_advseg.attacks.core import logits_function, mean_region_dice
from keras_advseg.attacks.ensemble import worst_case
from keras_advseg.attacks.fast_gradient import fgsm
from keras_advseg.attacks.gradient_free import random_search
from keras_advseg.attacks.projected_gradient import pgd
from keras_advseg.attacks.softened import logit_scale_temperature
from keras_advseg.config import (
    AUDIT_ITEMS,
    MIN_CLEAN_DICE,
    REGION_CLASS_INDICES,
    REGIONS,
    AuditConfig,
)


@dataclass
class AuditItem:
    """One item of the checklist: its verdict and the numbers behind it."""

    number: int
    verdict: str  # "PASS", "WARN" or "SKIP"
    evidence: str
    numbers: dict = field(default_factory=dict)

    @property
    def claim(self) -> str:
        return AUDIT_ITEMS[self.number]

    def to_json(self) -> dict:
        return {
            "item": self.number,
            "claim": self.claim,
            "verdict": self.verdict,
            "evidence": self.evidence,
            "numbers": self.numbers,
        }


def audit(
    model,
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    config: AuditConfig | None = None,
    *,
    reference=None,
    progress: Callable[[str], None] | None = None,
) -> list[AuditItem]:
    """Runs the checklist on ``model`` over ``samples``.

    Items 3-7 compare with the white-box worst case at its strongest (the lowest mean Dice it
    reaches at ``steps``, twice and four times as many steps), and a check counts as stronger
    (or a change as a change) only beyond ``config.tolerance`` and beyond
    ``config.relative_tolerance`` of what that attack takes off clean Dice.

    Args:
        model: Deployable model (volumes in, logits out).
        samples: ``(x, y)`` pairs, each a batch of one: input ``(1, ..., C)`` and one-hot labels.
        config: What to run (budgets, steps, tolerance; see :class:`AuditConfig`); None: defaults.
        reference: An undefended model for item 5 (transfer); None skips item 5.
        progress: Called with a short description before each stage.

    Returns:
        The eight :class:`AuditItem` in order (item 8: the model has clean Dice to lose).

    Raises:
        ValueError: no samples.
    """
    if not samples:
        raise ValueError("the audit needs at least one sample")
    config = config or AuditConfig()
    say = progress or (lambda _: None)
    tol, eps, steps = config.tolerance, config.eps, config.steps
    dice = _MeanDice(model, samples)

    def worst(m, e, s, attacks=config.attacks):
        def attack(x, y):
            return worst_case(m, x, y, eps=e, steps=s, attacks=attacks, seed=config.seed)[0]

        return attack

    say("clean and FGSM")
    clean = dice.of(lambda x, y: x)
    by_fgsm = dice.of(lambda x, y: fgsm(model, x, y, eps=eps))
    say(f"worst case at {steps}, {2 * steps} and {4 * steps} steps")
    by_steps = {s: dice.of(worst(model, eps, s)) for s in (steps, 2 * steps, 4 * steps)}
    # the white-box result every other check is compared with: the strongest the worst case
    # found at any of the step counts (a check that beats only an unconverged attack is no sign
    # of masking)
    white_box = min(by_steps.values())
    items = []

    stronger = white_box <= by_fgsm + tol
    items.append(
        AuditItem(
            1,
            _verdict(stronger),
            f"worst case {white_box:.3f} vs FGSM {by_fgsm:.3f} (clean {clean:.3f}) at eps {eps:g}",
            {"clean": clean, "fgsm": by_fgsm, "worst_case": white_box},
        )
    )

    say(f"Dice over eps {', '.join(f'{e:g}' for e in config.curve)}")
    curve = [dice.of(worst(model, e, steps, config.curve_attacks)) for e in config.curve]
    rises = [
        (a, b)
        for a, b, da, db in zip(config.curve, config.curve[1:], curve, curve[1:])
        if db > da + tol
    ]
    falls = not rises and curve[-1] <= config.floor
    items.append(
        AuditItem(
            2,
            _verdict(falls),
            "mean Dice "
            + ", ".join(f"{d:.3f} at {e:g}" for e, d in zip(config.curve, curve))
            + ("" if not rises else f"; rises between {rises}")
            + f"; floor {config.floor:g}",
            {"eps": list(config.curve), "dice": curve, "floor": config.floor},
        )
    )

    # what counts as "stronger" or "changes": more than the tolerance and more than a share of
    # what the white-box attack takes off clean Dice (1-4 subjects give noisy means; a masked
    # evaluation misses much more than that)
    margin = max(tol, config.relative_tolerance * max(clean - white_box, 0.0))
    # converged: the last doubling of the steps changes Dice by at most that margin
    last = abs(by_steps[4 * steps] - by_steps[2 * steps])
    items.append(
        AuditItem(
            3,
            _verdict(last <= margin),
            "worst case "
            + " -> ".join(f"{by_steps[s]:.3f} ({s} steps)" for s in sorted(by_steps))
            + f"; last doubling {last:.3f}, margin {margin:.3f}",
            {
                "steps": sorted(by_steps),
                "dice": [by_steps[s] for s in sorted(by_steps)],
                "last_change": last,
                "margin": margin,
            },
        )
    )

    say(f"{config.restarts} random restarts")
    # each restart from its own uniform random point in the ball (seed, seed + 1, ...);
    # the registry's apgd-masked-ce starts deterministically at x, as in the ensemble
    restarts = dice.per_sample_min(
        [
            lambda x, y, r=r: apgd(
                model, x, y, eps=eps, steps=steps, loss="masked-ce", seed=config.seed + r
            )
            for r in range(config.restarts)
        ]
    )
    single = restarts[0]
    best = restarts[-1]
    items.append(
        AuditItem(
            4,
            _verdict(single - best <= margin or best >= white_box - margin),
            f"APGD masked CE: {single:.3f} from one random start, {best:.3f} best of "
            f"{config.restarts}; white-box {white_box:.3f}",
            {"one": single, "best_of": best, "restarts": config.restarts, "white_box": white_box},
        )
    )

    if reference is None:
        items.append(AuditItem(5, "SKIP", "no reference model given", {}))
    else:
        say("transfer from the reference model")
        transfer = dice.of(worst(reference, eps, steps))
        items.append(
            AuditItem(
                5,
                _verdict(transfer >= white_box - margin),
                f"transfer {transfer:.3f} vs white-box {white_box:.3f}",
                {"transfer": transfer, "white_box": white_box},
            )
        )

    say("temperature and cross-entropy")
    softened = logit_scale_temperature(model, samples)
    temperatures = sorted({config.temperature, softened} - {1.0})
    plain = dice.of(lambda x, y: pgd(model, x, y, eps=eps, steps=steps, seed=config.seed))
    variants = {
        "CE": dice.of(
            lambda x, y: pgd(model, x, y, eps=eps, steps=steps, loss="ce", seed=config.seed)
        )
    }
    for t in temperatures:
        variants[f"T={t:.3g}"] = dice.of(
            lambda x, y, t=t: pgd(
                model, x, y, eps=eps, steps=steps, temperature=t, seed=config.seed
            )
        )
    strongest = min(variants, key=variants.get)
    # a variant that only catches up with what more steps or the ensemble found is no sign of
    # masking: it must beat the best of PGD at T = 1 and the white-box worst case
    baseline = min(plain, white_box)
    items.append(
        AuditItem(
            6,
            _verdict(variants[strongest] >= baseline - margin),
            f"PGD on soft Dice at T=1 {plain:.3f} (white-box {white_box:.3f}); "
            + ", ".join(f"with {k} {v:.3f}" for k, v in variants.items()),
            {
                "dice_t1": plain,
                "white_box": white_box,
                "variants": variants,
                "logit_scale_temperature": softened,
            },
        )
    )

    say(f"random search, {config.queries} queries")
    searched = dice.of(
        lambda x, y: random_search(model, x, y, eps=eps, queries=config.queries, seed=config.seed)
    )
    items.append(
        AuditItem(
            7,
            _verdict(searched >= white_box - margin),
            f"random search {searched:.3f} vs white-box {white_box:.3f}",
            {"random_search": searched, "white_box": white_box},
        )
    )

    regions = clean_region_dice(model, samples)
    missed = [r for r, d in regions.items() if d < MIN_CLEAN_DICE]
    items.append(
        AuditItem(
            8,
            _verdict(not missed),
            "clean Dice "
            + ", ".join(f"{r.upper()} {d:.3f}" for r, d in regions.items())
            + (
                f"; below {MIN_CLEAN_DICE:g} in {', '.join(r.upper() for r in missed)}: the model "
                f"does not segment {'it' if len(missed) == 1 else 'them'}, so no attack has "
                "anything to take there"
                if missed
                else ""
            ),
            {"dice": regions, "minimum": MIN_CLEAN_DICE, "missed": missed},
        )
    )
    return items


def clean_region_dice(model, samples) -> dict[str, float]:
    """Mean over ``samples`` of the model's hard Dice of each region on the clean input (an empty
    region in both counts 1, as :func:`~keras_advseg.attacks.core.mean_region_dice`)."""
    forward = logits_function(model)
    totals = dict.fromkeys(REGIONS, 0.0)
    for x, y in samples:
        predicted = np.argmax(np.asarray(forward(x)), -1)
        truth = np.argmax(np.asarray(y), -1)
        for region in REGIONS:
            classes = list(REGION_CLASS_INDICES[region])
            p, t = np.isin(predicted, classes), np.isin(truth, classes)
            total = p.sum() + t.sum()
            totals[region] += 1.0 if total == 0 else 2.0 * (p & t).sum() / total
    return {r: float(v / len(samples)) for r, v in totals.items()}


def overall(items: Sequence[AuditItem]) -> str:
    """``"WARN"`` when any item warns, else ``"PASS"``."""
    return "WARN" if any(i.verdict == "WARN" for i in items) else "PASS"


class _MeanDice:
    """Mean over samples of the mean region Dice of the model on an attack's output."""

    def __init__(self, model, samples):
        self.logits, self.samples = logits_function(model), samples

    def _each(self, attack) -> np.ndarray:
        return np.array(
            [
                float(mean_region_dice(y, self.logits(attack(x, y))).numpy()[0])
                for x, y in self.samples
            ]
        )

    def of(self, attack) -> float:
        return float(self._each(attack).mean())

    def per_sample_min(self, attacks) -> list[float]:
        """Mean of the running per-sample minimum over ``attacks`` (entry k: best of k + 1)."""
        running, means = None, []
        for attack in attacks:
            each = self._each(attack)
            running = each if running is None else np.minimum(running, each)
            means.append(float(running.mean()))
        return means


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "WARN"
