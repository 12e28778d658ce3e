"""Cards side by side (``advseg leaderboard``): one table and one figure that rank models on each
axis, with paired tests where the cards share subjects.

Each column is one family of tests: every card against the first on that axis, paired
two-sided Wilcoxon signed-rank tests of each subject's mean Dice over WT, TC and ET (zero
differences dropped), Bonferroni over the column's comparisons. A cell whose test cannot reach
p <= 0.05 with its ``n`` after that correction says so (``†``) instead of a blank. The columns
are the card's table of axes' (:func:`keras_advseg.workflows.card.table.columns`).

Reads only the cards' own files (untrusted input); starts no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_advseg.errors import InputError
from keras_advseg.io import ensure_writable_folder, rows_to_csv, write_text_atomic
from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.axes.clean import card_flags
from keras_advseg.workflows.card.axes.common import mean_of_regions
from keras_advseg.workflows.card.axes.corruptions import corrupted_dice, levels, rood_scores
from keras_advseg.workflows.card.axes.vafa import vafa_setting

__all__ = [
    "UNREACHABLE",
    "axis_values",
    "column_tests",
    "corrupted_dice",
    "flag_text",
    "per_subject",
    "rank",
    "rood_scores",
    "run_leaderboard",
    "vafa_setting",
]

UNREACHABLE = "†"
"""A cell whose test cannot reach p <= 0.05 after its column's correction."""


def axis_values(card: dict) -> dict[str, float | None]:
    """Each column's mean over WT, TC and ET (the worst case at its first eps, the certificate
    at its middle sigma, the corruptions as :func:`corrupted_dice`).

    Args:
        card: A card read by :func:`keras_advseg.workflows.card.read_card`.

    Returns:
        ``{column: value or None}``.

    Raises:
        FileFormatError: the card's corruption rows are missing or malformed.
    """
    return {column.name: mean_of_regions(column.value(card)) for column in table.columns()}


def rank(values: dict[str, dict[str, float | None]], flagged=frozenset()) -> dict[str, list[str]]:
    """``{column: models from the highest value to the lowest}`` (a missing value ranks last).

    Models in ``flagged`` (cards whose model does not segment a region:
    :func:`~keras_advseg.workflows.card.card_flags`) rank after every other model on every
    column: their robustness numbers measure nothing, and an untrained network would otherwise
    lead the columns that measure what an attack or a corruption takes.
    """
    return {
        column.name: sorted(
            values,
            key=lambda m, axis=column.name: (
                m in flagged,
                -(values[m][axis] if values[m][axis] is not None else -1),
            ),
        )
        for column in table.columns()
    }


def flag_text(card: dict) -> str:
    """The card's flags in a cell ("" when none), computed again from its clean Dice (the stored
    ``flags`` are not trusted: a hand-edited card cannot unflag itself)."""
    return "; ".join(
        f"{f['code']}: {', '.join(r.upper() for r in f['regions'])}"
        for f in card_flags(card["clean"]["dice"])
    )


def per_subject(card: dict, axis: str) -> dict[str, float]:
    """``{subject: mean Dice over the regions}`` of one column, from the card's folder.

    Raises:
        KeyError: no column of that name.
    """
    for column in table.columns():
        if column.name == axis:
            return column.per_subject(card)
    raise KeyError(axis)


def column_tests(cards: list[dict], names: list[str]) -> dict:
    """The leaderboard's tests: per column, one family of every card against the first.

    Args:
        cards: The cards, the reference first.
        names: Their names.

    Returns:
        ``{(name, column): {"p": corrected p, "n": nonzero paired differences, "m": the
        column's comparisons, "reachable": whether p <= 0.05 is attainable}}`` for the cards
        that share at least two subjects with the first on that column (and are comparable:
        another VAFA setting is another attack).
    """
    from keras_advseg.evaluation.statistics import (
        nonzero,
        paired_differences,
        paired_tests,
        reachable,
    )

    tests = {}
    for column in table.columns():
        reference = column.per_subject(cards[0])
        pairs = {}
        for name, card in zip(names[1:], cards[1:]):
            if not column.comparable(card, cards[0]):
                continue
            mine = column.per_subject(card)
            if len(set(mine) & set(reference)) >= 2:
                pairs[name] = (mine, reference)
        if not pairs:
            continue
        _, corrected = paired_tests(pairs)
        for name, (mine, theirs) in pairs.items():
            n = nonzero(paired_differences(mine, theirs))
            tests[(name, column.name)] = {
                "p": corrected[name],
                "n": n,
                "m": len(pairs),
                "reachable": reachable(n, len(pairs)),
            }
    return tests


def run_leaderboard(card_dirs: list, out, say=None) -> dict:
    """Ranks the cards on each column; on each column, paired Wilcoxon tests of every card
    against the first on the subjects both scored, Bonferroni over that column's comparisons
    (:func:`column_tests`); ROOD-MRI's overall and degradation scores beside them where a card
    ran severities 1-5. Writes ``leaderboard.md``, ``leaderboard.csv`` and
    ``fig_leaderboard.png``.

    Args:
        card_dirs: Card folders, the reference first.
        out: The output folder.
        say: Where the notice of a card converted from an older version goes (None: nowhere).

    Returns:
        ``{"models", "rows", "ranks", "tests": the number of tests, "written": paths}``.

    Raises:
        InputError: fewer than two cards.
        FileFormatError: a folder is not a card.
    """
    from keras_advseg.workflows.card import read_card

    if len(card_dirs) < 2:
        raise InputError("leaderboard needs at least two card folders")
    seen = {}
    for folder in card_dirs:
        key = Path(folder).resolve()
        key = key.parent if key.name == "card.json" else key
        if key in seen:
            raise InputError(
                f"{folder}: the same card as {seen[key]}; a leaderboard ranks each card once"
            )
        seen[key] = folder
    cards = [read_card(d, say=say) for d in card_dirs]
    names = _names(card_dirs)
    values = {n: axis_values(c) for n, c in zip(names, cards)}
    tests = column_tests(cards, names)
    rows = [_row(name, card, values[name], tests) for name, card in zip(names, cards)]
    flagged = {n for n, c in zip(names, cards) if flag_text(c)}
    ranks = rank(values, flagged)
    out = ensure_writable_folder(out)  # its three files replace no file of a card
    fields = (
        ["model", "plan", "audit", "flags", "vafa_setting"]
        + [f for c in table.columns() for f in _column_fields(c.name)]
        + ["severities", "rood_overall", "rood_degradation"]
    )
    written = [write_text_atomic(out / "leaderboard.csv", rows_to_csv(rows, fields))]
    written.append(write_text_atomic(out / "leaderboard.md", _markdown(rows, ranks, names)))
    written.append(_figure(values, names, out / "fig_leaderboard.png"))
    return {"models": names, "rows": rows, "ranks": ranks, "tests": len(tests), "written": written}


def _column_fields(name: str) -> tuple[str, ...]:
    return (name, f"{name}_p", f"{name}_n", f"{name}_m", f"{name}_reachable")


def _row(name: str, card: dict, values: dict, tests: dict) -> dict:
    """One card's row of ``leaderboard.csv``."""
    row = {"model": name, "plan": card["plan"]["name"], "audit": card["audit"]["verdict"]}
    row["flags"] = flag_text(card)
    row["vafa_setting"] = vafa_setting(card)
    for column in table.columns():
        row[column.name] = values[column.name]
        test = tests.get((name, column.name), {})
        for key in ("p", "n", "m", "reachable"):
            row[f"{column.name}_{key}"] = test.get(key)
    rood = rood_scores(card) or {}
    row["rood_overall"] = rood.get("overall")
    row["rood_degradation"] = rood.get("degradation")
    row["severities"] = levels(card)
    return row


def _names(card_dirs) -> list[str]:
    names = [Path(d).name for d in card_dirs]
    if len(set(names)) < len(names):  # cards in folders of one name: use the parent's too
        names = [f"{Path(d).parent.name}/{Path(d).name}" for d in card_dirs]
    return names


def _markdown(rows, ranks, names) -> str:
    """``leaderboard.md``: what the columns and tests are, then the table."""
    lines = [
        "# Leaderboard\n",
        "Mean Dice over WT, TC and ET on each axis (rank in brackets): clean, the worst case at "
        "its first eps, VAFA, the mean Dice of the corrupted scans (each subject's Dice "
        "averaged over every corrupted scan, the clean scan not counted), certified Dice at the "
        "middle sigma (sigma in standardised units): class-wise (SegCertify: a voxel unsure "
        "between two tumour classes abstains) and per region (WT, TC and ET each certified as "
        "its own region). Attack columns are upper bounds; the certified columns are "
        "guarantees.\n",
        _tests_paragraph(names[0]),
    ]
    unreachable = _unreachable_lines(rows)
    if unreachable:
        lines += ["Cells that cannot reach significance:\n", *unreachable, ""]
    warned = [r for r in rows if r["flags"]]
    if warned:
        lines += [
            "**Not ranked** (the model does not segment a region on clean scans: clean Dice "
            "below the card's minimum, so an attack or a corruption has nothing to take there "
            "and its robustness numbers measure nothing):\n",
            *[f"- {r['model']}: {r['flags']}" for r in warned],
            "",
        ]
    rood = any(row["rood_overall"] is not None for row in rows)
    lines.append(_rood_paragraph(rows, rood))
    lines.append(_vafa_paragraph(rows))
    lines += _table(rows, ranks, names, rood)
    return "\n".join(lines) + "\n"


def _tests_paragraph(first: str) -> str:
    from keras_advseg.evaluation.statistics import ALPHA

    return (
        f"Tests: each column is one family, every card against {first}: paired two-sided "
        "Wilcoxon signed-rank tests of each subject's mean Dice over the regions, on the "
        "subjects both cards scored (zero differences dropped), Bonferroni over the column's "
        f"comparisons. `*`: corrected p <= {ALPHA:g}. `{UNREACHABLE}`: the test cannot reach "
        f"p <= {ALPHA:g} with its n: the exact test's smallest p, 2 / 2^n, times the column's "
        "comparisons exceeds it; no mark: tested, not significant. p, n and the column's "
        "size m are in `leaderboard.csv`.\n"
    )


def _unreachable_lines(rows) -> list[str]:
    """One line per column whose cells cannot reach significance, naming each cell's n."""
    from keras_advseg.evaluation.statistics import ALPHA, smallest_p

    lines = []
    for column in table.columns():
        axis = column.name
        cells = [r for r in rows[1:] if r[axis] is not None and not r[f"{axis}_reachable"]]
        cells = [r for r in cells if not (r[f"{axis}_p"] is not None and r[f"{axis}_p"] <= ALPHA)]
        if not cells:
            continue
        parts = []
        for r in cells:
            n, m = r[f"{axis}_n"], r[f"{axis}_m"]
            if n is None:
                parts.append(f"{r['model']} (fewer than 2 subjects shared: not tested)")
            elif n == 0:
                parts.append(f"{r['model']} (n = 0: no subject's two values differ)")
            else:
                parts.append(
                    f"{r['model']} (n = {n}: smallest p {smallest_p(n):.2g} x {m} = "
                    f"{min(1.0, m * smallest_p(n)):.2g})"
                )
        lines.append(f"- {column.label}: " + "; ".join(parts))
    return lines


def _rood_paragraph(rows, rood: bool) -> str:
    if rood:
        return (
            "ROOD-MRI overall and degradation: ROOD-MRI's scores (severity weights (2/3)^s, "
            "the clean Dice counted as level 0 in overall), shown only for cards that ran "
            "every severity 1-5; not tested, not ranked.\n"
        )
    ran = sorted({row["severities"] for row in rows})
    return (
        "ROOD-MRI's overall and degradation scores are not shown: they are defined over "
        f"severities 1-5 and these cards ran {'; '.join(ran)}, where the overall score "
        "is mostly the clean Dice (the card has them).\n"
    )


def _vafa_paragraph(rows) -> str:
    settings = {row["vafa_setting"] for row in rows}
    if len(settings) == 1:
        return f"VAFA's setting: {next(iter(settings))}.\n"
    return (
        "VAFA's settings differ between the cards (each is another attack; only cards of the "
        "first card's setting are tested against it): "
        + "; ".join(f"{r['model']}: {r['vafa_setting']}" for r in rows)
        + ".\n"
    )


def _table(rows, ranks, names, rood: bool) -> list[str]:
    """The table's lines: one row per card, its cells with rank and test mark."""
    from keras_advseg.evaluation.statistics import ALPHA

    def cell(row, axis):
        value, p = row[axis], row[f"{axis}_p"]
        if value is None:
            return "n/a"
        if row["flags"]:
            return f"{value:.3f} (not ranked)"
        place = ranks[axis].index(row["model"]) + 1
        if p is not None and p <= ALPHA:
            mark = "*"
        elif row["model"] != names[0] and not row[f"{axis}_reachable"]:
            mark = UNREACHABLE
        else:
            mark = ""
        return f"{value:.3f}{mark} (#{place})"

    def rood_cells(row):
        if row["rood_overall"] is None:
            return [f"n/a (levels {row['severities']})"] * 2
        return [f"{row['rood_overall']:.3f}", f"{row['rood_degradation']:.3f}"]

    columns = table.columns()
    labels = [c.label for c in columns] + (
        ["ROOD-MRI overall", "ROOD-MRI degradation"] if rood else []
    )
    lines = [
        "| model | plan | " + " | ".join(labels) + " | audit |",
        "|---|---|" + "---|" * len(labels) + "---|",
    ]
    for row in rows:
        cells = [cell(row, c.name) for c in columns] + (rood_cells(row) if rood else [])
        lines.append(
            f"| {row['model']} | {row['plan']} | " + " | ".join(cells) + f" | {row['audit']} |"
        )
    return lines


def _figure(values, names, path: Path) -> Path:
    import textwrap

    from keras_advseg.evaluation.figures import _pyplot
    from keras_advseg.io import save_figure

    columns = table.columns()
    plt = _pyplot()
    fig, ax = plt.subplots(
        figsize=(max(6, 1.6 * len(columns) + 0.4 * len(names)), 4), layout="constrained"
    )
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        heights = [values[name][c.name] or 0.0 for c in columns]
        ax.bar(
            np.arange(len(columns)) + (i - (len(names) - 1) / 2) * width,
            heights,
            width,
            label=name,
        )
    ax.set_xticks(range(len(columns)), [textwrap.fill(c.label, 16) for c in columns], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean Dice (WT, TC, ET)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Robustness cards side by side (attack bars are upper bounds)", fontsize=10)
    return save_figure(fig, path)
