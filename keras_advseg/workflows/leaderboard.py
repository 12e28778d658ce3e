"""Cards side by side (``advseg leaderboard``): one table and one figure that rank models on each
axis, with paired tests where the cards share subjects.

Each column is one family of tests: every card against the first on that axis, paired
two-sided Wilcoxon signed-rank tests of each subject's mean Dice over WT, TC and ET (zero
differences dropped), Bonferroni over the column's comparisons. A cell whose test cannot reach
p <= 0.05 with its ``n`` after that correction says so (``†``) instead of a blank.

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
    ("artifacts", "mean Dice of the corrupted scans"),
    ("certified", "certified Dice"),
    ("certified_regions", "certified Dice per region"),
)


UNREACHABLE = "†"
"""A cell whose test cannot reach p <= 0.05 after its column's correction."""


def axis_values(card: dict) -> dict[str, float | None]:
    """Each axis's mean over WT, TC and ET (the worst case at its first eps, the certificate at
    its middle sigma, the artifacts as :func:`corrupted_dice`).

    Args:
        card: A card read by :func:`keras_advseg.workflows.card.read_card`.

    Returns:
        ``{axis: value or None}``.

    Raises:
        FileFormatError: the card's corruption rows are missing or malformed.
    """

    def mean(values):
        values = [values[r] for r in REGIONS]
        return None if any(v is None for v in values) else float(np.mean(values))

    worst = next(iter(card["adversarial"]["worst"].values()))
    sigmas = sorted(card["certified"], key=float)
    middle = card["certified"][sigmas[len(sigmas) // 2]]
    certified = middle["certified_dice"]
    regions = middle.get("region_certified_dice") or dict.fromkeys(REGIONS)
    return {
        "clean": mean(card["clean"]["dice"]),
        "worst": mean(worst),
        "vafa": mean(card["adversarial"]["vafa"]["dice"]),
        "artifacts": mean(corrupted_dice(card)),
        "certified": mean(certified),
        "certified_regions": mean(regions),
    }


def corrupted_dice(card: dict) -> dict[str, float | None]:
    """``{region: mean over subjects of each subject's Dice averaged over every corrupted
    scan}`` from the card's ``artifacts/corruptions.csv``: the quantity the artifacts column's
    test compares (its per-subject mean over the regions is :func:`per_subject`'s). Unlike
    ROOD-MRI's overall score, it does not count the clean scan.

    Args:
        card: A card read by :func:`keras_advseg.workflows.card.read_card`.

    Returns:
        The means (None where no corrupted scan was scored).

    Raises:
        FileFormatError: the rows are missing or malformed.
    """
    by_subject = _corrupted_means(card)
    return {
        r: float(np.mean([v[f"dice_{r}"] for v in by_subject.values()])) if by_subject else None
        for r in REGIONS
    }


def rood_scores(card: dict) -> dict[str, float | None] | None:
    """ROOD-MRI's overall and degradation scores (mean over WT, TC and ET), as the card stores
    them, where the card ran every severity 1-5; None otherwise: with fewer levels the overall
    score is mostly the clean Dice (at severity 3 alone the clean scan weighs
    ``1 / (1 + (2/3)^3)``, 77 %), not a score under artifacts.

    Args:
        card: A card.

    Returns:
        ``{"overall": ..., "degradation": ...}`` or None.
    """
    from keras_advseg.workflows.card import all_rood_levels

    if not all_rood_levels(card["artifacts"]):
        return None
    out = {}
    for key in ("overall", "degradation"):
        values = [card["artifacts"][key].get(r) for r in REGIONS]
        out[key] = None if any(v is None for v in values) else float(np.mean(values))
    return out


def _levels(card: dict) -> str:
    levels = card["artifacts"].get("severities") or ()
    return ", ".join(str(s) for s in levels) or "none"


def rank(values: dict[str, dict[str, float | None]], flagged=frozenset()) -> dict[str, list[str]]:
    """``{axis: models from the highest value to the lowest}`` (a missing value ranks last).

    Models in ``flagged`` (cards whose model does not segment a region:
    :func:`~keras_advseg.workflows.card.card_flags`) rank after every other model on every
    axis: their robustness numbers measure nothing, and an untrained network would otherwise
    lead the columns that measure what an attack or an artifact takes.
    """
    return {
        axis: sorted(
            values,
            key=lambda m: (
                m in flagged,
                -(values[m][axis] if values[m][axis] is not None else -1),
            ),
        )
        for axis, _ in AXES
    }


def vafa_setting(card: dict) -> str:
    """The VAFA setting a card ran, as it names it (``VAFA light: 8^3 blocks, ...``)."""
    vafa = card["adversarial"]["vafa"]
    return str(vafa.get("label") or vafa.get("setting") or "VAFA (setting not recorded)")


def flag_text(card: dict) -> str:
    """The card's flags in a cell ("" when none), computed again from its clean Dice (the stored
    ``flags`` are not trusted: a hand-edited card cannot unflag itself)."""
    from keras_advseg.workflows.card import card_flags

    return "; ".join(
        f"{f['code']}: {', '.join(r.upper() for r in f['regions'])}"
        for f in card_flags(card["clean"]["dice"])
    )


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
        return {
            s: float(np.mean([v[f"dice_{r}"] for r in REGIONS]))
            for s, v in _corrupted_means(card).items()
        }
    rows = _rows(folder / "certified" / "certified.csv")
    sigmas = sorted({r["sigma"] for r in rows}, key=float)
    middle = sigmas[len(sigmas) // 2] if sigmas else None
    prefix = {"certified": "certified_dice", "certified_regions": "region_certified_dice"}[axis]
    if rows and f"{prefix}_wt" not in rows[0]:
        return {}  # a certificate from before region certificates: nothing to test
    return {r["subject"]: _mean(r, prefix) for r in rows if r["sigma"] == middle}


def _corrupted_means(card: dict) -> dict:
    from keras_advseg.workflows.report import corrupted_means

    return corrupted_means(Path(card["path"]) / "artifacts" / "corruptions.csv")


def column_tests(cards: list[dict], names: list[str]) -> dict:
    """The leaderboard's tests: per axis, one family of every card against the first.

    Args:
        cards: The cards, the reference first.
        names: Their names.

    Returns:
        ``{(name, axis): {"p": corrected p, "n": nonzero paired differences, "m": the
        column's comparisons, "reachable": whether p <= 0.05 is attainable}}`` for the cards
        that share at least two subjects with the first on that axis.
    """
    from keras_advseg.evaluation.statistics import (
        nonzero,
        paired_differences,
        paired_tests,
        reachable,
    )

    tests = {}
    for axis, _ in AXES:
        reference = per_subject(cards[0], axis)
        pairs = {}
        for name, card in zip(names[1:], cards[1:]):
            if axis == "vafa" and vafa_setting(card) != vafa_setting(cards[0]):
                continue  # another VAFA setting is another attack: not compared
            mine = per_subject(card, axis)
            if len(set(mine) & set(reference)) >= 2:
                pairs[name] = (mine, reference)
        if not pairs:
            continue
        _, corrected = paired_tests(pairs)
        for name, (mine, theirs) in pairs.items():
            n = nonzero(paired_differences(mine, theirs))
            tests[(name, axis)] = {
                "p": corrected[name],
                "n": n,
                "m": len(pairs),
                "reachable": reachable(n, len(pairs)),
            }
    return tests


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
    """Ranks the cards on each axis; on each axis, paired Wilcoxon tests of every card against
    the first on the subjects both scored, Bonferroni over that column's comparisons
    (:func:`column_tests`); ROOD-MRI's overall and degradation scores beside them where a card
    ran severities 1-5. Writes ``leaderboard.md``, ``leaderboard.csv`` and
    ``fig_leaderboard.png``.

    Args:
        card_dirs: Card folders, the reference first.
        out: The output folder.

    Returns:
        ``{"models", "rows", "ranks", "tests": the number of tests, "written": paths}``.

    Raises:
        InputError: fewer than two cards.
        FileFormatError: a folder is not a card.
    """
    from keras_advseg.workflows.card import read_card

    if len(card_dirs) < 2:
        raise InputError("leaderboard needs at least two card folders")
    cards = [read_card(d) for d in card_dirs]
    names = _names(card_dirs)
    values = {n: axis_values(c) for n, c in zip(names, cards)}
    tests = column_tests(cards, names)
    rows = []
    flagged = {n for n, c in zip(names, cards) if flag_text(c)}
    for name, card in zip(names, cards):
        row = {"model": name, "budget": card["budget"]["name"], "audit": card["audit"]["verdict"]}
        row["flags"] = flag_text(card)
        row["vafa_setting"] = vafa_setting(card)
        for axis, _ in AXES:
            row[axis] = values[name][axis]
            test = tests.get((name, axis), {})
            row[f"{axis}_p"] = test.get("p")
            row[f"{axis}_n"] = test.get("n")
            row[f"{axis}_m"] = test.get("m")
            row[f"{axis}_reachable"] = test.get("reachable")
        rood = rood_scores(card) or {}
        row["rood_overall"] = rood.get("overall")
        row["rood_degradation"] = rood.get("degradation")
        row["severities"] = _levels(card)
        rows.append(row)
    ranks = rank(values, flagged)
    out = ensure_writable_folder(out)
    fields = (
        ["model", "budget", "audit", "flags", "vafa_setting"]
        + [f for a, _ in AXES for f in (a, f"{a}_p", f"{a}_n", f"{a}_m", f"{a}_reachable")]
        + ["severities", "rood_overall", "rood_degradation"]
    )
    written = [write_text_atomic(out / "leaderboard.csv", rows_to_csv(rows, fields))]
    written.append(write_text_atomic(out / "leaderboard.md", _markdown(rows, ranks, names)))
    written.append(_figure(values, names, out / "fig_leaderboard.png"))
    return {"models": names, "rows": rows, "ranks": ranks, "tests": len(tests), "written": written}


def _names(card_dirs) -> list[str]:
    names = [Path(d).name for d in card_dirs]
    if len(set(names)) < len(names):  # cards in folders of one name: use the parent's too
        names = [f"{Path(d).parent.name}/{Path(d).name}" for d in card_dirs]
    return names


def _markdown(rows, ranks, names) -> str:
    from keras_advseg.evaluation.statistics import ALPHA, smallest_p

    def cell(row, axis):
        value, p = row[axis], row[f"{axis}_p"]
        if value is None:
            return "n/a"
        if row["flags"]:
            return f"{value:.3f} (not ranked)"
        rank = ranks[axis].index(row["model"]) + 1
        if p is not None and p <= ALPHA:
            mark = "*"
        elif row["model"] != names[0] and not row[f"{axis}_reachable"]:
            mark = UNREACHABLE
        else:
            mark = ""
        return f"{value:.3f}{mark} (#{rank})"

    rood = any(row["rood_overall"] is not None for row in rows)

    def rood_cells(row):
        if row["rood_overall"] is None:
            return [f"n/a (levels {row['severities']})"] * 2
        return [f"{row['rood_overall']:.3f}", f"{row['rood_degradation']:.3f}"]

    unreachable = []
    for axis, label in AXES:
        cells = [r for r in rows[1:] if r[axis] is not None and not r[f"{axis}_reachable"]]
        cells = [r for r in cells if not (r[f"{axis}_p"] is not None and r[f"{axis}_p"] <= ALPHA)]
        if cells:
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
            unreachable.append(f"- {label}: " + "; ".join(parts))
    levels = sorted({row["severities"] for row in rows})
    lines = [
        "# Leaderboard\n",
        "Mean Dice over WT, TC and ET on each axis (rank in brackets): clean, the worst case at "
        "its first eps, VAFA, the mean Dice of the corrupted scans (each subject's Dice "
        "averaged over every corrupted scan, the clean scan not counted), certified Dice at the "
        "middle sigma (sigma in standardised units): class-wise (SegCertify: a voxel unsure "
        "between two tumour classes abstains) and per region (WT, TC and ET each certified as "
        "its own region). Attack columns are upper bounds; the certified columns are "
        "guarantees.\n",
        f"Tests: each column is one family, every card against {names[0]}: paired two-sided "
        "Wilcoxon signed-rank tests of each subject's mean Dice over the regions, on the "
        "subjects both cards scored (zero differences dropped), Bonferroni over the column's "
        f"comparisons. `*`: corrected p <= {ALPHA:g}. `{UNREACHABLE}`: the test cannot reach "
        f"p <= {ALPHA:g} with its n: the exact test's smallest p, 2 / 2^n, times the column's "
        "comparisons exceeds it; no mark: tested, not significant. p, n and the column's "
        "size m are in `leaderboard.csv`.\n",
    ]
    if unreachable:
        lines += ["Cells that cannot reach significance:\n", *unreachable, ""]
    warned = [r for r in rows if r["flags"]]
    if warned:
        lines += [
            "**Not ranked** (the model does not segment a region on clean scans: clean Dice "
            "below the card's minimum, so an attack or an artifact has nothing to take there "
            "and its robustness numbers measure nothing):\n",
            *[f"- {r['model']}: {r['flags']}" for r in warned],
            "",
        ]
    if rood:
        lines.append(
            "ROOD-MRI overall and degradation: ROOD-MRI's scores (severity weights (2/3)^s, "
            "the clean Dice counted as level 0 in overall), shown only for cards that ran "
            "every severity 1-5; not tested, not ranked.\n"
        )
    else:
        lines.append(
            "ROOD-MRI's overall and degradation scores are not shown: they are defined over "
            f"severities 1-5 and these cards ran {'; '.join(levels)}, where the overall score "
            "is mostly the clean Dice (the card has them).\n"
        )
    rood_labels = ["ROOD-MRI overall", "ROOD-MRI degradation"] if rood else []
    settings = {row["vafa_setting"] for row in rows}
    if len(settings) == 1:
        lines.append(f"VAFA's setting: {next(iter(settings))}.\n")
    else:
        lines.append(
            "VAFA's settings differ between the cards (each is another attack; only cards of the "
            "first card's setting are tested against it): "
            + "; ".join(f"{r['model']}: {r['vafa_setting']}" for r in rows)
            + ".\n"
        )
    labels = [label for _, label in AXES] + rood_labels
    lines += [
        "| model | budget | " + " | ".join(labels) + " | audit |",
        "|---|---|" + "---|" * len(labels) + "---|",
    ]
    for row in rows:
        cells = [cell(row, a) for a, _ in AXES] + (rood_cells(row) if rood else [])
        lines.append(
            f"| {row['model']} | {row['budget']} | " + " | ".join(cells) + f" | {row['audit']} |"
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
    import textwrap

    ax.set_xticks(range(len(AXES)), [textwrap.fill(label, 16) for _, label in AXES], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean Dice (WT, TC, ET)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
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
    flagged: set = set()
    settings: set = set()
    for dirs in per_seed.values():
        for folder in dirs:
            card = read_card(folder)
            settings.add(vafa_setting(card))
            values.setdefault(folder.name, []).append(axis_values(card))
            verdicts.setdefault(folder.name, []).append(card["audit"]["verdict"])
            if flag_text(card):
                flagged.add(folder.name)
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
    ranks = rank({m: {axis: means[m][axis][0] for axis, _ in AXES} for m in means}, flagged)

    def cell(model, axis):
        mean, spread = means[model][axis]
        if mean is None:
            return "n/a"
        place = "not ranked" if model in flagged else f"#{ranks[axis].index(model) + 1}"
        text = f"{mean:.3f} ({place})"
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
        + "): clean, the worst case at its first eps, VAFA, the mean Dice of the study's "
        "corrupted scans (each subject's Dice averaged over them, as in the worst-case table "
        "and finding (g); ROOD-MRI's overall score, which counts the clean scan, is in the "
        "artifacts table where the study ran severities 1-5), certified Dice at the middle "
        "sigma, class-wise and per region. The attack columns are upper bounds, the certified "
        "columns guarantees, the "
        "audit says whether the attacks show a gradient-masking symptom. Each model's card: "
        f"`{cards}/<model>/card.html`; paired tests (one family per column, every card against "
        f"the first; a cell marked {UNREACHABLE} cannot reach significance with its subjects): "
        f"{links}.\n",
        "| model | " + " | ".join(label for _, label in AXES) + " | audit |",
        "|---|" + "---|" * len(AXES) + "---|",
    ]
    for model in means:
        audit = verdicts[model]
        verdict = audit[0] if n == 1 else f"PASS in {audit.count('PASS')} of {len(audit)}"
        lines.append(
            f"| {model} | " + " | ".join(cell(model, a) for a, _ in AXES) + f" | {verdict} |"
        )
    lines.append(f"\nVAFA's setting: {'; '.join(sorted(settings))}.")
    if flagged:
        lines.append(
            "\nNot ranked: "
            + ", ".join(sorted(flagged))
            + " (a card flags the model as not segmenting a region on clean scans)."
        )
    if first.is_file():
        lines.append(f"\n![leaderboard]({first.relative_to(out)})\n")
    return lines
