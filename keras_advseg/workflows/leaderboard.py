"""Cards side by side (``advseg leaderboard``): one table and one figure that rank models on each
axis, with paired tests where the cards share subjects.

Reads only the cards' own files (untrusted input); starts no TensorFlow.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from keras_advseg.config import REGIONS
from keras_advseg.errors import InputError
from keras_advseg.io import FileFormatError, ensure_writable_folder, rows_to_csv, write_text_atomic

AXES = (
    ("clean", "clean Dice"),
    ("worst", "Dice under the worst case"),
    ("vafa", "Dice under VAFA"),
    ("artifacts", "Dice under artifacts"),
    ("certified", "certified Dice"),
)


def axis_values(card: dict) -> dict[str, float | None]:
    """Each axis's mean over WT, TC and ET (the worst case at its first eps, the certificate at
    its middle sigma)."""

    def mean(values):
        values = [values[r] for r in REGIONS]
        return None if any(v is None for v in values) else float(np.mean(values))

    worst = next(iter(card["adversarial"]["worst"].values()))
    sigmas = sorted(card["certified"], key=float)
    certified = card["certified"][sigmas[len(sigmas) // 2]]["certified_dice"]
    return {
        "clean": mean(card["clean"]["dice"]),
        "worst": mean(worst),
        "vafa": mean(card["adversarial"]["vafa"]["dice"]),
        "artifacts": mean(card["artifacts"]["overall"]),
        "certified": mean(certified),
    }


def rank(values: dict[str, dict[str, float | None]]) -> dict[str, list[str]]:
    """``{axis: models from the highest value to the lowest}`` (a missing value ranks last)."""
    return {
        axis: sorted(
            values, key=lambda m: -(values[m][axis] if values[m][axis] is not None else -1)
        )
        for axis, _ in AXES
    }


def per_subject(card: dict, axis: str) -> dict[str, float]:
    """``{subject: mean Dice over the regions}`` of one axis, from the card's folder."""
    folder = Path(card["path"])
    if axis in ("clean", "worst", "vafa"):
        attack = {"clean": "none", "worst": "worst", "vafa": "vafa"}[axis]
        eps = {"clean": 0.0}.get(axis, float(card["budget"]["eps"][0]))
        rows = _rows(folder / "adversarial" / "per_subject.csv")
        chosen = [r for r in rows if r["attack"] == attack and abs(float(r["eps"]) - eps) < 1e-9]
        return {r["subject"]: _mean(r, "dice") for r in chosen}
    if axis == "artifacts":
        rows = [r for r in _rows(folder / "artifacts" / "corruptions.csv") if r["severity"] != "0"]
        by_subject: dict = {}
        for r in rows:
            by_subject.setdefault(r["subject"], []).append(_mean(r, "dice"))
        return {s: float(np.mean(v)) for s, v in by_subject.items()}
    rows = _rows(folder / "certified" / "certified.csv")
    sigmas = sorted({r["sigma"] for r in rows}, key=float)
    middle = sigmas[len(sigmas) // 2] if sigmas else None
    return {r["subject"]: _mean(r, "certified_dice") for r in rows if r["sigma"] == middle}


def _rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: missing or unreadable ({exc})") from None


def _mean(row: dict, prefix: str) -> float:
    try:
        values = [float(row[f"{prefix}_{r}"]) for r in REGIONS]
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"malformed row {row.get('subject')!r} ({exc})") from None
    if not all(np.isfinite(values)):
        raise FileFormatError(f"malformed row {row.get('subject')!r}: not finite")
    return float(np.mean(values))


def run_leaderboard(card_dirs: list, out) -> dict:
    """Ranks the cards on each axis; paired Wilcoxon tests of each card against the first on the
    subjects both scored (Bonferroni over every test); writes ``leaderboard.md``,
    ``leaderboard.csv`` and ``fig_leaderboard.png``.

    Raises:
        InputError: fewer than two cards. FileFormatError: a folder is not a card.
    """
    from keras_advseg.evaluation.statistics import paired_tests
    from keras_advseg.workflows.card import read_card

    if len(card_dirs) < 2:
        raise InputError("leaderboard needs at least two card folders")
    cards = [read_card(d) for d in card_dirs]
    names = _names(card_dirs)
    values = {n: axis_values(c) for n, c in zip(names, cards)}
    pairs = {}
    for axis, _ in AXES:
        reference = per_subject(cards[0], axis)
        for name, card in zip(names[1:], cards[1:]):
            mine = per_subject(card, axis)
            if len(set(mine) & set(reference)) >= 2:
                pairs[(name, axis)] = (mine, reference)
    _, corrected = paired_tests(pairs) if pairs else ({}, {})
    rows = []
    for name, card in zip(names, cards):
        row = {"model": name, "budget": card["budget"]["name"], "audit": card["audit"]["verdict"]}
        for axis, _ in AXES:
            row[axis] = values[name][axis]
            row[f"{axis}_p"] = corrected.get((name, axis))
        rows.append(row)
    ranks = rank(values)
    out = ensure_writable_folder(out)
    fields = ["model", "budget", "audit"] + [f for a, _ in AXES for f in (a, f"{a}_p")]
    written = [write_text_atomic(out / "leaderboard.csv", rows_to_csv(rows, fields))]
    written.append(
        write_text_atomic(out / "leaderboard.md", _markdown(rows, ranks, names, len(pairs)))
    )
    written.append(_figure(values, names, out / "fig_leaderboard.png"))
    return {"models": names, "rows": rows, "ranks": ranks, "tests": len(pairs), "written": written}


def _names(card_dirs) -> list[str]:
    names = [Path(d).name for d in card_dirs]
    if len(set(names)) < len(names):  # cards in folders of one name: use the parent's too
        names = [f"{Path(d).parent.name}/{Path(d).name}" for d in card_dirs]
    return names


def _markdown(rows, ranks, names, tests) -> str:
    from keras_advseg.evaluation.statistics import ALPHA

    def cell(row, axis):
        value, p = row[axis], row[f"{axis}_p"]
        if value is None:
            return "n/a"
        rank = ranks[axis].index(row["model"]) + 1
        star = "*" if p is not None and p <= ALPHA else ""
        return f"{value:.3f}{star} (#{rank})"

    lines = [
        "# Leaderboard\n",
        "Mean Dice over WT, TC and ET on each axis (rank in brackets): the worst case at its "
        "first eps, VAFA, ROOD-MRI's overall score under artifacts, certified Dice at the "
        f"middle sigma. `*`: differs from {names[0]} (paired Wilcoxon on the subjects both cards "
        f"scored, Bonferroni over the {tests} tests, p <= 0.05). Attack columns are upper "
        "bounds; the certified column is a guarantee.\n",
        "| model | budget | " + " | ".join(label for _, label in AXES) + " | audit |",
        "|---|---|" + "---|" * len(AXES) + "---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['budget']} | "
            + " | ".join(cell(row, a) for a, _ in AXES)
            + f" | {row['audit']} |"
        )
    return "\n".join(lines) + "\n"


def _figure(values, names, path: Path) -> Path:
    from keras_advseg.evaluation.figures import _pyplot
    from keras_advseg.io import save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(
        figsize=(max(6, 1.6 * len(AXES) + 0.4 * len(names)), 4), layout="constrained"
    )
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        heights = [values[name][a] or 0.0 for a, _ in AXES]
        ax.bar(
            np.arange(len(AXES)) + (i - (len(names) - 1) / 2) * width, heights, width, label=name
        )
    ax.set_xticks(range(len(AXES)), [label for _, label in AXES], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean Dice (WT, TC, ET)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Robustness cards side by side (attack bars are upper bounds)", fontsize=10)
    return save_figure(fig, path)


def report_lines(seed_dirs: dict, out: Path) -> list[str]:
    """The section that opens a study's report: each carded model's mean over the seeds' cards
    (``<seed>/cards/<model>/``) on every axis, its range over seeds, and its audit verdicts; with
    one seed, that seed's leaderboard. No lines when no seed has cards.

    Args:
        seed_dirs: ``{training seed: its folder}``.
        out: The folder the report is written in (links are relative to it).

    Raises:
        FileFormatError: a card is malformed.
    """
    from keras_advseg.workflows.card import read_card

    per_seed = {
        seed: sorted(p for p in (Path(d) / "cards").iterdir() if (p / "card.json").is_file())
        for seed, d in seed_dirs.items()
        if (Path(d) / "cards").is_dir()
    }
    if not any(per_seed.values()):
        return []
    values: dict = {}
    verdicts: dict = {}
    for dirs in per_seed.values():
        for folder in dirs:
            card = read_card(folder)
            values.setdefault(folder.name, []).append(axis_values(card))
            verdicts.setdefault(folder.name, []).append(card["audit"]["verdict"])
    n = len(per_seed)
    means = {
        model: {
            axis: (
                float(np.mean(vs))
                if len(vs := [v[axis] for v in seen if v[axis] is not None])
                else None,
                (min(vs), max(vs)) if len(vs) > 1 else None,
            )
            for axis, _ in AXES
        }
        for model, seen in values.items()
    }
    ranks = rank({m: {axis: means[m][axis][0] for axis, _ in AXES} for m in means})

    def cell(model, axis):
        mean, spread = means[model][axis]
        if mean is None:
            return "n/a"
        text = f"{mean:.3f} (#{ranks[axis].index(model) + 1})"
        return text + (f" [{spread[0]:.3f}, {spread[1]:.3f}]" if spread else "")

    links = ", ".join(
        f"[seed {s}]({(Path(seed_dirs[s]) / 'leaderboard' / 'leaderboard.md').relative_to(out)})"
        for s in per_seed
    )
    first = Path(seed_dirs[next(iter(per_seed))]) / "leaderboard" / "fig_leaderboard.png"
    cards = (Path(seed_dirs[next(iter(per_seed))]) / "cards").relative_to(out)
    lines = [
        "## Leaderboard: one robustness card per model\n",
        "Mean Dice over WT, TC and ET on each axis (rank in brackets"
        + (f"; mean over {n} seeds, their range in square brackets" if n > 1 else "")
        + "): clean, the worst case at its first eps, VAFA, ROOD-MRI's overall score under the "
        "study's artifacts, certified Dice at the middle sigma. The attack columns are upper "
        "bounds, the certified column a guarantee, the audit says whether the attacks show a "
        f"gradient-masking symptom. Each model's card: `{cards}/<model>/card.html`; paired "
        f"tests: {links}.\n",
        "| model | " + " | ".join(label for _, label in AXES) + " | audit |",
        "|---|" + "---|" * len(AXES) + "---|",
    ]
    for model in means:
        audit = verdicts[model]
        verdict = audit[0] if n == 1 else f"PASS in {audit.count('PASS')} of {len(audit)}"
        lines.append(
            f"| {model} | " + " | ".join(cell(model, a) for a, _ in AXES) + f" | {verdict} |"
        )
    if first.is_file():
        lines.append(f"\n![leaderboard]({first.relative_to(out)})\n")
    return lines
