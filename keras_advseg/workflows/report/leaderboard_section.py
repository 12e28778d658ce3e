"""The section that opens a study's report: each carded model's mean over the seeds' cards on
every leaderboard column of the card's table of axes, its range over seeds, and its audits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_advseg.workflows.card import table
from keras_advseg.workflows.leaderboard import (
    UNREACHABLE,
    axis_values,
    flag_text,
    rank,
    vafa_setting,
)


def report_lines(seed_dirs: dict, out: Path) -> list[str]:
    """The section that opens a study's report: each carded model's mean over the seeds' cards
    (``<seed>/cards/<model>/``) on every column, its range over seeds, and its audit verdicts;
    with one seed, that seed's leaderboard. No lines when no seed has cards.

    Args:
        seed_dirs: ``{training seed: its folder}``.
        out: The folder the report is written in (links are relative to it).

    Raises:
        FileFormatError: a card is malformed.
    """
    per_seed = {
        seed: sorted(p for p in (Path(d) / "cards").iterdir() if (p / "card.json").is_file())
        for seed, d in seed_dirs.items()
        if (Path(d) / "cards").is_dir()
    }
    if not any(per_seed.values()):
        return []
    seen = _read_cards(per_seed)
    n = len(per_seed)
    columns = table.columns()
    means = {model: _over_seeds(values) for model, values in seen["values"].items()}
    flagged = seen["flagged"]
    ranks = rank({m: {c.name: means[m][c.name][0] for c in columns} for m in means}, flagged)

    def cell(model, axis):
        mean, spread = means[model][axis]
        if mean is None:
            return "n/a"
        place = "not ranked" if model in flagged else f"#{ranks[axis].index(model) + 1}"
        text = f"{mean:.3f} ({place})"
        return text + (f" [{spread[0]:.3f}, {spread[1]:.3f}]" if spread else "")

    lines = [
        *_opening(seed_dirs, per_seed, out, n),
        "| model | " + " | ".join(c.label for c in columns) + " | audit |",
        "|---|" + "---|" * len(columns) + "---|",
    ]
    for model in means:
        audit = seen["verdicts"][model]
        verdict = audit[0] if n == 1 else f"PASS in {audit.count('PASS')} of {len(audit)}"
        lines.append(
            f"| {model} | " + " | ".join(cell(model, c.name) for c in columns) + f" | {verdict} |"
        )
    lines.append(f"\nVAFA's setting: {'; '.join(sorted(seen['settings']))}.")
    if flagged:
        lines.append(
            "\nNot ranked: "
            + ", ".join(sorted(flagged))
            + " (a card flags the model as not segmenting a region on clean scans)."
        )
    first = Path(seed_dirs[next(iter(per_seed))]) / "leaderboard" / "fig_leaderboard.png"
    if first.is_file():
        lines.append(f"\n![leaderboard]({first.relative_to(out)})\n")
    return lines


def _read_cards(per_seed: dict) -> dict:
    """Each model's column values, audit verdicts and flags over the seeds' cards, and the VAFA
    settings they ran."""
    from keras_advseg.workflows.card import read_card

    seen: dict = {"values": {}, "verdicts": {}, "flagged": set(), "settings": set()}
    for dirs in per_seed.values():
        for folder in dirs:
            card = read_card(folder)
            seen["settings"].add(vafa_setting(card))
            seen["values"].setdefault(folder.name, []).append(axis_values(card))
            seen["verdicts"].setdefault(folder.name, []).append(card["audit"]["verdict"])
            if flag_text(card):
                seen["flagged"].add(folder.name)
    return seen


def _over_seeds(values: list[dict]) -> dict:
    """``{column: (mean over the seeds, (min, max) or None with one value)}``."""
    out = {}
    for column in table.columns():
        known = [v[column.name] for v in values if v[column.name] is not None]
        out[column.name] = (
            float(np.mean(known)) if len(known) else None,
            (min(known), max(known)) if len(known) > 1 else None,
        )
    return out


def _opening(seed_dirs: dict, per_seed: dict, out: Path, n: int) -> list[str]:
    """The section's heading and the paragraph that says what its columns are."""
    links = ", ".join(
        f"[seed {s}]({(Path(seed_dirs[s]) / 'leaderboard' / 'leaderboard.md').relative_to(out)})"
        for s in per_seed
    )
    cards = (Path(seed_dirs[next(iter(per_seed))]) / "cards").relative_to(out)
    return [
        "## Leaderboard: one robustness card per model\n",
        "Mean Dice over WT, TC and ET on each axis (rank in brackets"
        + (f"; mean over {n} seeds, their range in square brackets" if n > 1 else "")
        + "): clean, the worst case at its first eps, VAFA, the mean Dice of the study's "
        "corrupted scans (each subject's Dice averaged over them, as in the worst-case table "
        "and finding (g); ROOD-MRI's overall score, which counts the clean scan, is in the "
        "corruptions table where the study ran severities 1-5), certified Dice at the middle "
        "sigma, class-wise and per region. The attack columns are upper bounds, the certified "
        "columns guarantees, the "
        "audit says whether the attacks show a gradient-masking symptom. Each model's card: "
        f"`{cards}/<model>/card.html`; paired tests (one family per column, every card against "
        f"the first; a cell marked {UNREACHABLE} cannot reach significance with its subjects): "
        f"{links}.\n",
    ]
