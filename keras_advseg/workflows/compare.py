"""The comparison workflow (``advseg compare``): paired tests, the paper's tables, the overlay figure."""

from __future__ import annotations

from pathlib import Path

from keras_advseg.evaluation import figures
from keras_advseg.evaluation import statistics as st
from keras_advseg.evaluation.results import load_results
from keras_advseg.io import (
    ensure_writable_folder,
    plural,
    rows_to_csv,
    write_json_atomic,
    write_text_atomic,
)


def run_compare(
    eval_dirs: list,
    baseline_dir,
    out,
    *,
    table_eps=(0.0, 0.05, 0.1),
    attack_eps: float = 0.05,
    title: str = "Defenses",
) -> str:
    """Writes the attack and defense tables, the tests and the overlay figure; returns the Markdown report.

    Raises:
        ValueError: a folder is not an evaluation, or subject sets differ.
    """
    baseline = load_results(baseline_dir)
    models = [
        load_results(d) for d in eval_dirs if Path(d).resolve() != Path(baseline_dir).resolve()
    ]
    st.check_same_subjects(models, baseline)
    out = ensure_writable_folder(out)  # its tables and figure replace no file of an evaluation
    attack_rows, m_attacks = st.attack_table(baseline, attack_eps)
    defense_rows, m_defenses = (
        st.defense_table(models, baseline, tuple(table_eps)) if models else ([], 0)
    )
    n = len(baseline.subjects())
    parts = [
        f"# Robustness comparison ({plural(n, 'subject')}, paired by id)\n",
        f"## Table 1: attacks on {baseline.name} at eps {attack_eps:g}\n",
        f"Wilcoxon signed-rank vs no attack, Bonferroni over {m_attacks} comparisons; "
        f"* marks corrected p <= {st.ALPHA}.\n",
        st.to_markdown(attack_rows),
    ]
    write_text_atomic(out / "table1_attacks.csv", rows_to_csv(attack_rows))
    if defense_rows:
        parts += [
            f"\n## {title}: FGSM, each model vs {baseline.name}\n",
            f"Wilcoxon signed-rank vs {baseline.name}, Bonferroni over {m_defenses} comparisons; "
            f"* marks corrected p <= {st.ALPHA}.\n",
            st.to_markdown(defense_rows),
        ]
        write_text_atomic(out / "table_defenses.csv", rows_to_csv(defense_rows))
    report = "\n".join(parts)
    write_text_atomic(out / "tables.md", report)
    figures.eps_figure(
        st.sweep_curves([baseline] + models),
        out / "fig_eps_overlay.png",
        title=f"{title}: mean Dice vs FGSM eps, each model",
    )
    write_json_atomic(
        out / "compare.json",
        {
            "baseline": str(baseline.path),
            "models": [str(m.path) for m in models],
            "n_subjects": n,
            "comparisons": {"attacks": m_attacks, "defenses": m_defenses},
            "table1": attack_rows,
            "defenses": defense_rows,
        },
    )
    return report
