"""The paper's directional findings, checked on a study's results (:func:`findings`), and the
table that shows them."""

from __future__ import annotations

from keras_advseg.config import REGIONS, Study, attack_display
from keras_advseg.evaluation.statistics import (
    ALPHA,
    attack_tests,
    hodges_lehmann,
    paired_differences,
)
from keras_advseg.io import FileFormatError
from keras_advseg.workflows.report.families import (
    FAMILIES,
    beats_baseline,
    certified_findings,
    corruption_findings,
    worst_case_findings,
)


def findings(load, study: Study) -> list[tuple[str, bool | None, str]]:
    """The paper's directional findings, checked on our results: ``(claim, passed, evidence)``.

    Each finding is a pre-specified family of paired Wilcoxon tests, Bonferroni-corrected
    over that family's own comparisons; (b)'s family is Table 1's (every attack of the table x
    region against no attack), so that (b) and Table 1's asterisks use the same p-values. The
    defense table (Tables 2/3) corrects over all of its cells, a larger family than (d)'s.

    Args:
        load: ``load(evaluation name) -> EvalResults``: one seed's evaluations
            (:func:`~keras_advseg.workflows.report.study_loader`), or their per-subject
            averages over seeds.
        study: The study.

    Returns:
        ``[(claim, passed, evidence)]``: passed is None for what is measured, not tested.

    Raises:
        FileFormatError: the baseline's evaluation has no summary.
    """
    baseline = load(study.models3d[0].name)
    base = _summary(baseline)
    clean = {r: base.mean("none", 0.0, f"dice_{r}") for r in REGIONS}
    results = [("(a) clean 3D-UNet Dice WT >= 0.80", clean["wt"] >= 0.80, f"WT {clean['wt']:.3f}")]
    results.append(attacks_lower_dice(baseline, clean))
    results.append(falls_with_iterations(base))
    defended = [s.name for s in study.defenses3d if s.defense in ("distillation", "adversarial")]
    evaluated = {name: load(name) for name in defended}
    results += beats_baseline("(d)", "at FGSM eps 0.05", "fgsm", defended, evaluated, baseline)
    control = study.control3d
    if control is not None:
        results += beats_baseline(
            "(d-control)",
            "at FGSM eps 0.05",
            "fgsm",
            defended,
            evaluated,
            load(control.name),
            other="the equal-budget control",
        )
    results += gradient_masking_shares(load, study, base)
    results += worst_case_findings(load, study, baseline)
    results += corruption_findings(load, study, baseline)
    results += certified_findings(load, study, baseline)
    return results


def attacks_lower_dice(baseline, clean: dict) -> tuple[str, bool, str]:
    """Finding (b): FGSM at eps 0.05 lowers the undefended network's mean Dice by at least 25 %
    in every region, i-FGSM lowers it more, targeted i-FGSM lowers it, every comparison
    significant in Table 1's family."""
    base = _summary(baseline)

    def attack_mean(name, region):
        return base.mean(name, 0.05, f"dice_{region}")

    def series(result, attack, region, eps=0.05):
        return result.series(attack, eps, f"dice_{region}")

    names = {a: attack_display(a) for a in ("fgsm", "ifgsm", "targeted-ifgsm")}
    _, table1 = attack_tests(baseline, 0.05)  # Table 1's family: its asterisks are (b)'s test
    tests_b = {key: p for key, p in table1.items() if key[0] in names}
    drops = {
        r: (clean[r] - attack_mean("fgsm", r)) / clean[r] if clean[r] else 0.0 for r in REGIONS
    }

    def lowers(attack, region):  # the direction of the paired quantity the test tests
        d = paired_differences(
            series(baseline, attack, region), series(baseline, "none", region, 0)
        )
        return d.size > 0 and hodges_lehmann(d)[0] < 0

    lower = {(a, r): lowers(a, r) for a, r in tests_b}
    significant = len(tests_b) == len(names) * len(REGIONS) and all(
        p <= ALPHA and lower[key] for key, p in tests_b.items()
    )
    ifgsm_stronger = all(attack_mean("ifgsm", r) < attack_mean("fgsm", r) for r in REGIONS)
    targeted_lowers = all(attack_mean("targeted-ifgsm", r) < clean[r] for r in REGIONS)
    passed_b = (
        all(d >= 0.25 for d in drops.values())
        and ifgsm_stronger
        and targeted_lowers
        and significant
    )
    worst = max(tests_b, key=tests_b.get)
    return (
        "(b) FGSM eps 0.05 lowers mean Dice by >= 25% in every region; i-FGSM lowers it more; "
        "targeted i-FGSM lowers it; all p <= 0.05 corrected",
        passed_b,
        "FGSM drops "
        + ", ".join(f"{r.upper()} {d:.1%}" for r, d in drops.items())
        + f"; i-FGSM below FGSM everywhere: {ifgsm_stronger}; targeted below clean: {targeted_lowers}; "
        f"all {len(tests_b)} comparisons with clean lower (Hodges-Lehmann shift below 0) "
        f"and significant after Bonferroni over Table 1's {len(table1)} (its attacks x "
        "regions: the p-values of its asterisks): "
        f"{significant} "
        f"(largest corrected p {tests_b[worst]:.2g}, {names[worst[0]]} {worst[1].upper()})",
    )


def falls_with_iterations(base) -> tuple[str, bool | None, str]:
    """Finding (c): the mean Dice falls monotonically with i-FGSM's iterations."""
    curve = base.iterations.get("ifgsm", {})
    mean_curve = [
        sum(curve[f"dice_{r}"][k] for r in REGIONS) / 3
        for k in range(len(curve.get("dice_wt", [])))
    ]
    monotone = (
        all(b <= a + 1e-9 for a, b in zip(mean_curve, mean_curve[1:])) if mean_curve else None
    )
    return (
        "(c) Dice falls monotonically with i-FGSM iterations",
        monotone,
        "mean Dice per iteration " + ", ".join(f"{v:.3f}" for v in mean_curve),
    )


def gradient_masking_shares(load, study: Study, base) -> list[tuple[str, None, str]]:
    """Finding (e), measured: how much of each distilled model's gain at T = 1 survives the
    logit-level attack at its temperature (the rest is gradient masking)."""
    results = []
    for spec in study.models3d:
        if spec.defense != "distillation":
            continue
        normal = _summary(load(spec.name)).attacks["fgsm"][0.05]
        logit = _summary(load(f"{spec.name}-logit")).attacks["fgsm"][0.05]
        parts = []
        for r in REGIONS:
            undefended = base.mean("fgsm", 0.05, f"dice_{r}")
            gain = normal[f"dice_{r}"]["mean"] - undefended
            kept = logit[f"dice_{r}"]["mean"] - undefended
            if gain <= 0:
                parts.append(f"{r.upper()}: no gain over no defense at T=1 ({gain:+.3f})")
            elif kept <= 0:
                parts.append(
                    f"{r.upper()}: gain {gain:+.3f} at T=1, {kept:+.3f} under the "
                    f"T={spec.temperature:g} "
                    "attack (all of the gain is gradient masking)"
                )
            else:
                parts.append(
                    f"{r.upper()}: gain {gain:+.3f} at T=1, {kept:+.3f} under the "
                    f"T={spec.temperature:g} "
                    f"attack ({(gain - kept) / gain:.0%} of the gain is gradient masking)"
                )
        results.append(
            (
                f"(e) logit-level attack on {spec.name}: how much of the gain is gradient masking",
                None,
                "; ".join(parts),
            )
        )
    return results


def findings_table(checked, verdicts: dict) -> list[str]:
    """The findings as one compact table, each family's claim said once below it."""
    lines = ["| finding | verdict | evidence |", "|---|---|---|"]
    lines += [
        f"| {claim} | {verdicts[passed]} | {evidence} |" for claim, passed, evidence in checked
    ]
    labels = {claim.split()[0] for claim, _, _ in checked}
    clauses = [f"- {label}: {FAMILIES[label]}." for label in FAMILIES if label in labels]
    if clauses:
        lines += ["", "Per-defense findings, one row per defense:", "", *clauses]
    return lines


def _summary(result):
    """The result's summary; a study's evaluation folders always have one.

    Raises:
        FileFormatError: ``summary.json`` is missing.
    """
    if result.summary is None:
        raise FileFormatError(f"{result.path}: no summary.json; re-run that evaluation step")
    return result.summary
