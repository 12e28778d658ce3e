"""The per-defense findings (d), (f), (g) and (h): each a pre-specified family of paired tests
of every defense x region against a reference, Bonferroni over the family, each family's claim
said once in the report (:data:`FAMILIES`)."""

from __future__ import annotations

from keras_advseg.config import ADVERSARIAL_DEFENSES, REGIONS, Study
from keras_advseg.evaluation.statistics import (
    ALPHA,
    noninferiority_family,
    superiority_family,
)
from keras_advseg.workflows.report.loading import CERTIFIED, CORRUPTED

NONINFERIORITY_MARGIN = 0.02
"""Finding (g)'s margin, in Dice: a defense "keeps" the undefended network's Dice under
the corruptions when its loss is shown to be smaller than this. Fixed before looking at (g)'s
results, from how much clean Dice moves when nothing but the training run changes: an
earlier version of the quick study, same seed, gave clean WT 0.803 on one machine and 0.818
on another, eight more epochs without a defense (the equal-budget control) moved clean Dice by +0.015 to
+0.017 per region, and over five training seeds one seed's clean WT fell 0.015 or more below
the pooled 0.815 (docs/study.md). A loss below 0.02 is within that seed-to-seed spread; a
loss of 0.05, three times it, must not pass (tests/workflows/test_robustness_findings.py
simulates it)."""


FAMILIES: dict[str, str] = {}
"""What each family of per-defense findings claims, said once in a report (filled as the
findings are checked)."""


def certified_findings(load, study: Study, baseline) -> list[tuple[str, bool | None, str]]:
    """Finding (h): Gaussian-noise training certifies more Dice than no defense at its sigma.

    A pre-specified family: paired two-sided Wilcoxon signed-rank tests of every
    Gaussian-noise-trained 3-D model x region against the undefended 3-D UNet on certified Dice
    at the sigma it was trained at (abstentions count as wrong; zero differences dropped),
    Bonferroni over the family; it holds when, in every region, the Hodges-Lehmann shift of
    the paired differences (the location the test tests) is above 0 and the corrected p at
    most 0.05. The evidence gives each shift with its interval at the family's level
    (``1 - 0.05 / m``) and says where ``n`` subjects cannot reach significance.

    Args:
        load: ``load(evaluation name) -> EvalResults``.
        study: The study.
        baseline: The undefended 3-D UNet's results.

    Returns:
        ``[(claim, passed, evidence)]``, one per Gaussian-noise model.
    """
    gaussian = [s for s in study.models3d if s.defense == "gaussian"]
    if not gaussian or not study.certify_sigmas:
        return []
    results, pairs, sigmas = [], {}, {}
    for spec in gaussian:
        sigma = dict(spec.options).get("noise_sigma", 0.5)
        sigma = min(study.certify_sigmas, key=lambda s: abs(s - sigma))
        mine = load(spec.name)
        sigmas[spec.name] = sigma
        if not mine.has(CERTIFIED, sigma) or not baseline.has(CERTIFIED, sigma):
            results.append(
                (
                    f"(h) {spec.name} certifies more Dice than no defense",
                    None,
                    "not measured: a model has no certificates (re-run its certify step)",
                )
            )
            continue
        pairs.update(region_pairs({spec.name: mine}, baseline, CERTIFIED, sigma))
    if not pairs:
        return results
    compared = compare_regions(pairs)
    for name, beats, evidence in judged(
        compared, dict.fromkeys(n for n, _ in pairs), _beats, shift=True
    ):
        results.append((f"(h) {name} at sigma {sigmas[name]:g}", beats, evidence))
    m = len(compared)
    FAMILIES["(h)"] = (
        "Gaussian-noise training certifies more Dice than no defense at the sigma it was "
        f"trained at (randomized smoothing, n = {study.certify_n}, abstentions count as wrong): "
        "in every region a positive Hodges-Lehmann shift of the paired differences and a "
        "two-sided Wilcoxon signed-rank p <= 0.05 after Bonferroni over the family's "
        f"{m} model x region comparisons (zero differences dropped); the shift's interval is at "
        f"level 1 - 0.05/{m}. The leaderboard's certified column tests the mean over the regions "
        "of the same pairs, Bonferroni over its column"
    )
    return results


def corruption_findings(load, study: Study, baseline) -> list[tuple[str, bool | None, str]]:
    """Finding (g): each adversarial defense keeps the undefended network's Dice under the
    corruptions (simulated MRI artifacts and operator errors; each subject's Dice averaged over
    the study's corruptions and severities), to within :data:`NONINFERIORITY_MARGIN`: a
    non-inferiority claim.

    A pre-specified family: for every adversarially trained 3-D model x region, the one-sided
    paired Wilcoxon signed-rank test of ``d + margin > 0`` (``d`` = defense - undefended per
    subject; zero shifted differences dropped), Bonferroni over the family; a defense keeps the
    Dice when every region's corrected p is at most 0.05. The evidence gives each region's
    Hodges-Lehmann shift with its interval at level ``1 - 2 * 0.05 / m``, whose lower end is
    above ``-margin`` exactly when the test passes (without ties).

    Args:
        load: ``load(evaluation name) -> EvalResults``.
        study: The study.
        baseline: The undefended 3-D UNet's results.

    Returns:
        ``[(claim, passed, evidence)]``, one per adversarial defense.
    """
    if not study.corruptions:
        return []
    names = [s.name for s in study.defenses3d if s.defense in ADVERSARIAL_DEFENSES]
    if not names:
        return []
    evaluated = {name: load(name) for name in names}
    if not baseline.has(CORRUPTED, 0.0) or not all(
        r.has(CORRUPTED, 0.0) for r in evaluated.values()
    ):
        return [
            (
                "(g) each adversarial defense keeps the undefended network's Dice under "
                "corruptions",
                None,
                "not measured: a model has no corruption rows (re-run its corruptions step)",
            )
        ]
    pairs = region_pairs(evaluated, baseline, CORRUPTED, 0.0)
    margin = NONINFERIORITY_MARGIN
    compared = noninferiority_family(pairs, margin)
    results = [
        (f"(g) {name}", keeps, evidence)
        for name, keeps, evidence in judged(
            compared, names, lambda c: c.significant, shift=True, test="non-inferiority p"
        )
    ]
    m = len(compared)
    FAMILIES["(g)"] = (
        "each adversarial defense keeps the undefended network's Dice under the corruptions "
        f"({', '.join(study.corruptions)} at severity "
        f"{', '.join(map(str, study.corruption_severities))}, each subject's Dice averaged over "
        f"them) to within a margin of {margin:g} Dice, fixed in advance (about the seed-to-seed "
        "spread of clean Dice): in every region the one-sided Wilcoxon signed-rank test of "
        f"d + {margin:g} > 0 (d = defense - undefended per subject; zero differences dropped) has "
        f"p <= 0.05 after Bonferroni over the family's {m} defense x region comparisons. "
        "Shift: the Hodges-Lehmann estimate of d with its interval at level "
        f"1 - 2 x 0.05/{m}; the test passes exactly when the interval's lower end is above "
        f"-{margin:g} (without ties). No significant drop is not evidence of no drop"
    )
    return results


def worst_case_findings(load, study: Study, baseline) -> list[tuple[str, bool | None, str]]:
    """Finding (f): each defense beats no defense under the worst-case ensemble at eps 0.05,
    and (f-control) the equal-budget control.

    Each a pre-specified family: paired Wilcoxon tests of every 3-D defense x region against
    the undefended 3-D UNet (the control), Bonferroni over the family.
    """
    defended = [s.name for s in study.defenses3d]
    if not defended:
        return []
    evaluated = {name: load(name) for name in defended}
    references = [("(f)", baseline, "no defense")]
    if study.control3d is not None:
        references.append(("(f-control)", load(study.control3d.name), "the equal-budget control"))
    results = []
    for label, reference, other in references:
        if not reference.has("worst", 0.05) or not all(
            r.has("worst", 0.05) for r in evaluated.values()
        ):
            results.append(
                (
                    f"{label} each defense beats {other} under the worst case at eps 0.05",
                    None,
                    "not measured: an evaluation has no worst-case rows (re-run its evaluate step)",
                )
            )
            continue
        results += beats_baseline(
            label,
            "under the worst-case ensemble at eps 0.05",
            "worst",
            defended,
            evaluated,
            reference,
            other=other,
        )
    return results


def beats_baseline(
    label, condition, attack, names, evaluated, baseline, other="no defense"
) -> list[tuple]:
    """One finding per defense: it beats ``other`` under ``attack`` at eps 0.05 in every region.

    A pre-specified family: paired two-sided Wilcoxon signed-rank tests of every defense x
    region against the baseline, Bonferroni over the family; a defense passes when, in all
    three regions, the Hodges-Lehmann shift of the paired differences is above 0 and the
    corrected p at most 0.05.

    Args:
        label: The finding's label, ``(d)``.
        condition: What the Dice is measured under, for the claim.
        attack: The attack whose Dice at eps 0.05 is compared.
        names: The defenses.
        evaluated: ``{name: EvalResults}`` of the defenses.
        baseline: The reference's results.
        other: How the claim names the reference.

    Returns:
        ``[(claim, passed, evidence)]``, one per defense.
    """
    pairs = region_pairs({name: evaluated[name] for name in names}, baseline, attack, 0.05)
    compared = compare_regions(pairs)
    results = [
        (f"{label} {name}", beats, evidence)
        for name, beats, evidence in judged(compared, names, _beats)
    ]
    FAMILIES[label] = (
        f"each defense beats {other} {condition} in every region: a positive Hodges-Lehmann "
        "shift of the paired differences and p <= 0.05 after Bonferroni over the family's "
        f"{len(compared)} defense x region comparisons"
    )
    return results


def region_pairs(evaluated: dict, baseline, condition: str, level: float) -> dict:
    """A finding's per-subject pairs: each model's Dice and the baseline's, per region.

    Args:
        evaluated: ``{name: EvalResults}`` of the models, in the finding's order.
        baseline: The reference's results.
        condition, level: The rows compared: an attack and its eps, the corrupted rows at 0,
            or the certificates at a sigma.

    Returns:
        ``{(name, region): (mine, theirs)}``.
    """
    return {
        (name, r): (
            results.series(condition, level, f"dice_{r}"),
            baseline.series(condition, level, f"dice_{r}"),
        )
        for name, results in evaluated.items()
        for r in REGIONS
    }


def judged(compared: dict, names, passes, *, shift: bool = False, test: str = "p"):
    """Each model of a finding's family judged over the regions, with the evidence printed.

    Args:
        compared: ``{(model, region): Comparison}`` of the family.
        names: The models, in the finding's order.
        passes: ``passes(comparison)``: whether one region passes.
        shift: Print each region's Hodges-Lehmann shift with its interval.
        test: How the evidence names each region's corrected p.

    Yields:
        ``(name, passed in every region, evidence)``: the evidence gives each region's means,
        (shift,) p and :func:`unreachable_note`, separated by ``; ``.
    """
    for name in names:
        parts, passed = [], True
        for r in REGIONS:
            c = compared[(name, r)]
            passed = passed and passes(c)
            interval = f", shift {c.interval()}" if shift else ""
            parts.append(
                f"{r.upper()} {c.mine:.3f} vs {c.theirs:.3f}{interval} "
                f"({test} = {c.p:.2g}){unreachable_note(c)}"
            )
        yield name, passed, "; ".join(parts)


def _beats(comparison) -> bool:
    """A region where a model beats its reference: a positive shift, significant after the
    family's correction."""
    return comparison.shift > 0 and comparison.significant


def compare_regions(pairs: dict) -> dict:
    """A finding's family of paired two-sided tests, corrected over every comparison of the
    family (:func:`~keras_advseg.evaluation.statistics.superiority_family`).

    Args:
        pairs: ``{(model, region): (mine, theirs)}`` per-subject series.

    Returns:
        ``{(model, region): Comparison}`` (means, Hodges-Lehmann shift and interval,
        corrected p, ``n``, ``m``, whether ``n`` can reach significance).
    """
    return superiority_family(pairs)


def unreachable_note(comparison) -> str:
    """``, n = 5 cannot reach p <= 0.05 over 6`` where the test's ``n`` nonzero differences
    cannot give a significant result after the family's correction; empty otherwise."""
    if comparison.reachable:
        return ""
    return f", n = {comparison.n} cannot reach p <= {ALPHA:g} after Bonferroni over {comparison.m}"
