"""``report.md`` of one training seed: the findings, the study's tables beside the paper's,
the leaderboard of its cards, its figures and where its runs are."""

from __future__ import annotations

from pathlib import Path

from keras_advseg.config import Study
from keras_advseg.io import write_text_atomic
from keras_advseg.workflows import paper_values
from keras_advseg.workflows.report.findings import findings, findings_table
from keras_advseg.workflows.report.leaderboard_section import report_lines
from keras_advseg.workflows.report.loading import study_loader
from keras_advseg.workflows.report.tables import (
    audit_verdict,
    corruption_lines,
    failed_trainings,
    training_lines,
    worst_case_lines,
)


def write_report(
    out: Path,
    preset: str,
    study: Study,
    prepared,
    tracking_uri: str = "<tracking store>",
    seed: int | None = None,
    experiment: str | None = None,
) -> Path:
    """``report.md`` of one training seed: findings, our tables beside the paper's, figures."""
    at_seed = "" if seed is None else f", training seed {seed}"
    lines = [
        f"# keras-advseg reproduction ({preset} preset{at_seed})\n",
        "**One training seed.** This report shows what this seed's models did on these test "
        "subjects. It cannot show that a finding holds: models trained at another seed, or "
        "on another machine, come out differently, and a verdict here may flip there. The "
        "study's own `report.md` (one folder up from `seeds/`) tests each finding pooled "
        "over seeds; run `advseg reproduce --seeds 0-4` for that.\n",
        f"Data: `{Path(prepared.root).resolve()}` ({len(prepared.train_ids)} training, {len(prepared.test_ids)} "
        "test subjects, "
        f"{study.shape}^3). Models: "
        + ", ".join(m.name for m in study.models3d + study.models2d)
        + ".\n",
    ]
    lines += report_lines({0 if seed is None else seed: out}, out)
    load = study_loader(out)
    lines += _findings_lines(load, study, preset, len(prepared.test_ids))
    lines.append("## How each model was trained\n")
    lines += training_lines(study)
    failed = failed_trainings(load, study)
    if failed:
        lines += ["\n### Failed trainings\n", *failed, ""]
    lines.append("## Ours: attacks and 3D-UNet defenses\n")
    lines.append(
        "Regions in the order WT / TC / ET here and in the paper's tables below. PSNR and "
        "SSIM use each volume's own intensity range; RMSE is in the prepared inputs' units "
        "(z-scores of the brain's intensities), while the paper's RMSE is on inputs scaled to "
        "[0, 1]: the two RMSE columns cannot be compared, PSNR can. Table 1's asterisks "
        "are finding (b)'s test: one family, every attack of the table x region against no "
        "attack. The defense table corrects over all of its cells (every model x region x "
        "eps), a larger family than (d)'s (distillation and FGSM adversarial training x "
        "regions at FGSM 0.05), so one of its cells may lack its asterisk where (d) holds; "
        "(d)'s corrected p-values are in the findings above.\n"
    )
    lines.append((out / "compare3d" / "tables.md").read_text())
    lines.append("\n## Worst case and gradient-masking audit (3-D models)\n")
    lines += worst_case_lines(
        load, lambda name: audit_verdict(out / "audits" / name), study, preset
    )
    corrupted = corruption_lines(out, study)
    if corrupted:
        lines.append("\n## Under corruptions: MRI artifacts and operator errors (3-D models)\n")
        lines += corrupted
    if (out / "compare2d" / "tables.md").is_file():
        lines.append("\n## Ours: 2D-UNet\n")
        lines.append((out / "compare2d" / "tables.md").read_text())
    lines += paper_lines()
    lines += figure_lines(out, study)
    lines += ["\n## MLflow\n", *mlflow_lines(tracking_uri, experiment)]
    return write_text_atomic(out / "report.md", "\n".join(lines))


def _findings_lines(load, study: Study, preset: str, subjects: int) -> list[str]:
    """The findings' section: the table and what to make of a finding that does not reproduce."""
    lines = ["## The paper's findings, checked\n"]
    checked = findings(load, study)
    verdicts = {True: "**reproduced**", False: "**not reproduced**", None: "*measured*"}
    lines += findings_table(checked, verdicts)
    if any(passed is False for _, passed, _ in checked):
        lines.append(
            "\nWhat does not reproduce is reported as such. Likely reasons: the phantom is "
            "simpler than "
            f"BraTS (one tumour, clean contrasts), the {preset} preset trains small networks "
            "briefly, and "
            f"paired tests on {subjects} test subjects have limited power after "
            "Bonferroni "
            "correction.\n"
        )
    else:
        lines.append("\nEvery checked finding reproduces on this data.\n")
    return lines


def paper_lines() -> list[str]:
    """The paper's published values (BraTS 2017, 128^3): Table 1 and rows of Tables 2 and 3."""
    lines: list[str] = []
    lines.append("\n## The paper's published values (BraTS 2017, 128^3)\n")
    lines.append(
        "Table 1 (3D-UNet, eps 0.05): mean Dice WT / TC / ET (the paper prints TC / ET / WT), "
        "input PSNR / SSIM / RMSE (RMSE on inputs scaled to [0, 1])\n"
    )
    lines.append("| attack | WT | TC | ET | PSNR | SSIM | RMSE |\n|---|---|---|---|---|---|---|")
    for attack, (tc, et, wt, *quality) in paper_values.TABLE1.items():
        values = (wt, tc, et, *quality)
        lines.append(
            f"| {attack} | " + " | ".join("-" if v is None else f"{v:g}" for v in values) + " |"
        )
    for title, values_of in (
        ("Table 2 (3D-UNet)", paper_values.TABLE2_3D),
        ("Table 3 (2D-UNet)", paper_values.TABLE3_2D),
    ):
        lines.append(f"\n{title}, mean Dice under FGSM at eps 0 / 0.05 / 0.1 (selected rows)\n")
        lines.append("| region | model | eps 0 | eps 0.05 | eps 0.1 |\n|---|---|---|---|---|")
        for region, rows in values_of.items():
            for model, values in rows.items():
                lines.append(
                    f"| {region.upper()} | {model} | "
                    + " | ".join(f"{v:.3f}" for v in values)
                    + " |"
                )
    return lines


def figure_lines(out: Path, study: Study) -> list[str]:
    """The figures the study wrote, linked (those it did not write are left out)."""
    lines: list[str] = []
    lines.append("\n## Figures\n")
    base = study.models3d[0].name
    for caption, path in (
        ("Example attack (Fig. 2)", f"evals/{base}/fig_example.png"),
        ("Dice and PSNR vs i-FGSM iterations (Fig. 3/4)", f"evals/{base}/fig_iterations.png"),
        ("Dice vs FGSM eps, 3D-UNet models (Fig. 5/7)", "compare3d/fig_eps_overlay.png"),
        ("Dice vs FGSM eps, 2D-UNet models (Fig. 6/8)", "compare2d/fig_eps_overlay.png"),
    ):
        if (out / path).is_file():
            lines.append(f"![{caption}]({path})\n")
    return lines


def mlflow_lines(tracking_uri: str, experiment: str | None) -> list[str]:
    """Where a report's runs are and the address that opens them in the runs table."""
    from keras_advseg.tracking import absolute_uri, ui_lines

    if experiment is None or tracking_uri.startswith("<"):
        return [f"All runs are in one MLflow experiment in `{tracking_uri}`.\n"]
    try:
        first, *rest = ui_lines(tracking_uri, experiment)
    except Exception:  # the report must not fail on an unreachable store
        return [
            f"All runs are in the MLflow experiment `{experiment}` in `{absolute_uri(tracking_uri)}`.\n"
        ]
    return [f"All runs are in the {first}" + (f", {rest[0]}" if rest else "") + ".\n"]
