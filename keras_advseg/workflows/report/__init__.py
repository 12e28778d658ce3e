"""``report.md`` of the study: the paper's findings checked on our results, our tables beside the paper's.

Each finding is a pre-specified family of paired Wilcoxon signed-rank tests,
Bonferroni-corrected over that family's own comparisons; (b)'s family is Table 1's.
A direction ("higher", "lower") is the sign of the Hodges-Lehmann shift of the paired
differences, the location the signed-rank test tests, never a difference of means.

Modules: :mod:`.loading` (a study's results as the report reads them), :mod:`.findings`
((a)-(e) and the findings' table), :mod:`.families` (the per-defense families (d), (f), (g),
(h)), :mod:`.tables` (training, failed trainings, the worst case and audits, corruptions),
:mod:`.leaderboard_section` (the cards' leaderboard that opens a report), :mod:`.seed`
(one training seed's ``report.md``).
"""

from __future__ import annotations

from keras_advseg.workflows.report.families import (
    FAMILIES,
    NONINFERIORITY_MARGIN,
    beats_baseline,
    certified_findings,
    compare_regions,
    corruption_findings,
    unreachable_note,
    worst_case_findings,
)
from keras_advseg.workflows.report.findings import findings, findings_table
from keras_advseg.workflows.report.leaderboard_section import report_lines
from keras_advseg.workflows.report.loading import (
    CERTIFIED,
    CORRUPTED,
    corrupted_means,
    study_loader,
)
from keras_advseg.workflows.report.seed import mlflow_lines, write_report
from keras_advseg.workflows.report.tables import (
    audit_verdict,
    corruption_lines,
    failed_trainings,
    training_lines,
    worst_case_lines,
)

__all__ = [
    "CERTIFIED",
    "CORRUPTED",
    "FAMILIES",
    "NONINFERIORITY_MARGIN",
    "audit_verdict",
    "beats_baseline",
    "certified_findings",
    "compare_regions",
    "corrupted_means",
    "corruption_findings",
    "corruption_lines",
    "failed_trainings",
    "findings",
    "findings_table",
    "mlflow_lines",
    "report_lines",
    "study_loader",
    "training_lines",
    "unreachable_note",
    "worst_case_findings",
    "worst_case_lines",
    "write_report",
]
