"""The report's tables of the study's models: how each was trained, which failed to learn a
region, the worst case with its audit, and the 3-D models under corruptions."""

from __future__ import annotations

from pathlib import Path

from keras_advseg.config import REGION_NAMES, REGIONS, ModelSpec, Study, attack_display
from keras_advseg.evaluation.statistics import mean_sd
from keras_advseg.io import FileFormatError, plural, read_json
from keras_advseg.workflows.report.loading import CERTIFIED, CORRUPTED, corrupted_means
from keras_advseg.workflows.study import fine_tunes, spec_config


def training_lines(study: Study) -> list[str]:
    """One line per model: its epochs, and where a defense started (for the report)."""
    lines, longer = [], False
    for spec in study.models3d + study.models2d:
        config = spec_config(study, spec)
        baseline = spec_config(study, ModelSpec(spec.model, "none")).epochs
        total, how = config.epochs, f"{config.epochs} epochs"
        if spec.defense == "distillation":
            how += f" for the teacher and for the student, both at T = {config.temperature:g}"
        if fine_tunes(study, spec):
            total += baseline
            how += f", fine-tuning {spec.model}-none ({total} in all)"
        if spec.control:
            how += " without a defense: the equal-budget control"
        else:
            longer = longer or total > baseline
        lines.append(f"- {spec.name}: {how}.")
    if longer:
        control = study.control3d
        lines.append(
            "\nAs in the paper, which trains its defenses 400 epochs against 100, defenses here "
            "train longer than the undefended network; part of their advantage may be that "
            "extra training. "
            + (
                f"{control.name} trains as long as the longest defense without one, and "
                "(d-control) and (f-control) test each defense against it.\n"
                if control is not None
                else "\n"
            )
        )
    return lines


def failed_trainings(load, study: Study, share: float = 0.5) -> list[str]:
    """Models that learned nothing of a region: clean Dice 0 on more than ``share`` of the
    test subjects. Their attacked and defended numbers in that region say nothing about a
    defense."""
    lines = []
    for spec in study.models3d + study.models2d:
        try:
            result = load(spec.name)
        except FileFormatError:
            continue
        for region in REGIONS:
            clean = list(result.series("none", 0.0, f"dice_{region}").values())
            zeros = sum(v == 0 for v in clean)
            if clean and zeros > share * len(clean):
                lines.append(
                    f"- **{spec.name} failed to learn {REGION_NAMES[region].lower()}**: clean "
                    f"Dice {region.upper()} is 0 on {zeros} of {plural(len(clean), 'test subject')}. "
                    f"Its {region.upper()} results are a failed training, not a defense's effect."
                )
    return lines


def audit_verdict(folder: Path) -> str:
    """``PASS``, ``WARN (items 3, 6)`` or ``-`` (no readable audit) for one audit folder."""
    from keras_advseg.workflows.audit import read_audit

    try:
        audit = read_audit(folder)
    except FileFormatError:
        return "-"
    warned = [str(i["item"]) for i in audit["items"] if i["verdict"] == "WARN"]
    return audit["verdict"] + (f" (items {', '.join(warned)})" if warned else "")


def worst_case_lines(load, audits, study: Study, preset: str) -> list[str]:
    """The worst-case table of the 3-D models, with what found it, each model's audit, and
    which defense keeps the most Dice under the worst case.

    Args:
        load: ``load(evaluation name) -> EvalResults`` (see :func:`findings`).
        audits: ``audits(model name) -> str``: the audit verdict(s) of that model.
        study: The study.
        preset: Its name.
    """
    certificate = (
        f" Corruptions: mean Dice over the corrupted scans (`corruptions/<model>/`). Certified: "
        f"certified Dice at sigma {study.certify_sigmas[len(study.certify_sigmas) // 2]:g} "
        f"(randomized smoothing, n = {study.certify_n}; abstentions count as wrong; "
        "`certify/<model>/`): a guarantee, where the attacks' columns are upper bounds."
        if study.certify_sigmas
        else ""
    )
    lines = [
        f"Worst case per subject over {', '.join(attack_display(a) for a in study.ensemble)} "
        f"({plural(study.worst_steps or study.steps, 'step')} each; APGD stops a subject once its Dice "
        "is 0) and FGSM, at eps 0.05: the same attacks for every model (the undefended "
        "network's i-FGSM and PGD runs are not weighed, so that the worst cases compare like "
        f"with like). Mean Dice WT / TC / ET.{certificate}\n",
        "| model | clean | FGSM 0.05 | worst case 0.05 | corruptions | certified | found by | "
        "audit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sigma = study.certify_sigmas[len(study.certify_sigmas) // 2] if study.certify_sigmas else None
    kept = {}
    for spec in study.models3d:
        result = load(spec.name)

        def cell(attack, eps, result=result):
            if not result.has(attack, eps):
                return "-"
            return " / ".join(
                f"{mean_sd(result.series(attack, eps, f'dice_{r}'))[0]:.3f}" for r in REGIONS
            )

        if result.has("worst", 0.05):
            kept[spec.name] = sum(
                mean_sd(result.series("worst", 0.05, f"dice_{r}"))[0] for r in REGIONS
            ) / len(REGIONS)
        winners = list(result.found_by.get(("worst", 0.05), {}).values())
        found = ", ".join(f"{attack_display(a)} {winners.count(a)}" for a in sorted(set(winners)))
        verdict = "not audited (control)" if spec.control else audits(spec.name)
        certified = cell(CERTIFIED, round(sigma, 6)) if sigma is not None else "-"
        lines.append(
            f"| {spec.name} | {cell('none', 0.0)} | {cell('fgsm', 0.05)} | "
            f"{cell('worst', 0.05)} | {cell(CORRUPTED, 0.0)} | {certified} | {found or '-'} | "
            f"{verdict} |"
        )
    defenses = sorted((s.name for s in study.defenses3d if s.name in kept), key=lambda n: -kept[n])
    if defenses:
        best = defenses[0]
        lines.append(
            f"\nMost Dice kept under the worst case at eps 0.05 (mean of WT, TC, ET): "
            f"**{best}** ({kept[best]:.3f}, audit: {audits(best)})"
            + "".join(f", then {n} ({kept[n]:.3f})" for n in defenses[1:])
            + "; "
            + ", ".join(
                f"{s.name} {kept[s.name]:.3f}"
                for s in study.models3d
                if s.defense == "none" and s.name in kept
            )
            + ". A ranking of means, not a test: (f) and (f-control) test each defense.\n"
        )
    audit = study.audit
    lines.append(
        f"\nAudit (test subjects: {audit.subjects or 'all'}; eps {audit.eps:g}; "
        f"{plural(audit.steps, 'step')} doubled twice; {plural(audit.restarts, 'restart')}; "
        f"{plural(audit.queries, 'random-search query', 'random-search queries')}; "
        f"tolerance {audit.tolerance:g}): `audits/<model>/audit.md`. The `{preset}` "
        "settings are smaller than `advseg audit`'s defaults so that the study stays short.\n"
    )
    return lines


def corruption_lines(out: Path, study: Study) -> list[str]:
    """The 3-D models under corruptions (simulated MRI artifacts and operator errors), per
    region (WT / TC / ET): clean Dice, the mean Dice of the corrupted scans (what finding (g)
    and the leaderboard compare), ROOD-MRI's overall and degradation scores where the study ran
    every severity 1-5 (``n/a`` otherwise: with fewer levels the overall score is mostly the
    clean Dice), the resilience rate (mRR) and the worst corruption.

    Args:
        out: The seed's folder.
        study: The study.

    Returns:
        The section's lines; none when no model was scored under corruptions.

    Raises:
        FileFormatError: a malformed summary or row table.
    """
    from keras_advseg.corruptions.registry import every_severity

    rood = every_severity(study.corruption_severities)
    levels = ", ".join(map(str, study.corruption_severities))

    def triple(values):
        return " / ".join("n/a" if values[r] is None else f"{values[r]:.3f}" for r in REGIONS)

    rows = []
    for spec in study.models3d:
        path = out / "corruptions" / spec.name / "corruption_summary.json"
        if not path.is_file():
            continue
        summary = read_json(path, "corruption summary")
        try:
            scores = summary["scores"]
            cells = {key: triple(scores[key]) for key in ("clean", "overall", "degradation", "mrr")}
            worst = " / ".join(str(scores["worst"][r]) for r in REGIONS)
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(f"{path}: not a corruption summary ({exc})") from None
        by_subject = corrupted_means(out / "corruptions" / spec.name / "corruptions.csv")
        corrupted = {
            r: sum(v[f"dice_{r}"] for v in by_subject.values()) / len(by_subject)
            if by_subject
            else None
            for r in REGIONS
        }
        scored = (
            [cells["overall"], cells["degradation"]]
            if rood
            else [f"n/a (severity {levels} only)"] * 2
        )
        rows.append(
            f"| {spec.name} | {cells['clean']} | {triple(corrupted)} | "
            + " | ".join(scored)
            + f" | {cells['mrr']} | {worst} |"
        )
    if not rows:
        return []
    return [
        f"Each raw test scan corrupted ({', '.join(study.corruptions)}; severity "
        f"{levels}; corruption seed 0, the same scans for every model and training seed), then "
        "prepared as the model's training data was. Corrupted: the mean over subjects of each "
        "subject's Dice averaged over every corrupted scan (the clean scan not counted), the "
        "quantity finding (g) and the leaderboard test. ROOD-MRI overall and degradation "
        "(severity weights (2/3)^s, the clean Dice counted as level 0 in overall) are shown "
        "only where every severity 1-5 was run; mRR is the mean Dice under corruption over clean "
        "Dice (n/a where the clean Dice is 0). `evaluate --corruptions` writes the rows, tests "
        "and figures (`corruptions/<model>/`).\n",
        "| model | clean | corrupted | ROOD-MRI overall | ROOD-MRI degradation | mRR | "
        "worst corruption |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
