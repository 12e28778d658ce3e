"""`advseg leaderboard` on hand-made cards: what each column shows and tests, one family per
column, the cells that cannot reach significance, ROOD-MRI's scores only over levels 1-5."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from keras_advseg.evaluation.results import EvalResults
from keras_advseg.workflows.card import CARD_SCHEMA, CARD_VERSION
from keras_advseg.workflows.card.build import recorded_provenance, results_of, unreliable_of
from keras_advseg.workflows.leaderboard import run_leaderboard

REGIONS = ("wt", "tc", "et")


def write_card(folder: Path, dice: dict, severities=(3,), certified=None, overall=0.9) -> dict:
    """A card folder. ``dice[axis][subject]`` is each subject's Dice (every region the same,
    but for the corrupted scans, ``dice["corrupted"][subject]``: one value per corrupted scan,
    the regions offset by 0, -0.01, -0.02); ``certified[subject]``: certified Dice."""
    folder.mkdir(parents=True)
    (folder / "adversarial").mkdir()
    (folder / "corruptions").mkdir()
    (folder / "certified").mkdir()
    region = "dice_wt,dice_tc,dice_et"
    lines = [f"subject,attack,eps,{region}"]
    for attack, eps, axis in (
        ("none", 0, "clean"),
        ("worst", 0.05, "worst"),
        ("vafa", 0.05, "vafa"),
    ):
        for s, v in dice[axis].items():
            lines.append(f"{s},{attack},{eps},{v},{v},{v}")
    (folder / "adversarial" / "per_subject.csv").write_text("\n".join(lines) + "\n")
    lines = [f"subject,corruption,severity,{region}"]
    for s, v in dice["clean"].items():
        lines.append(f"{s},none,0,{v},{v},{v}")
    for s, values in dice["corrupted"].items():
        for (corruption, severity), v in zip(
            [(c, k) for c in ("motion", "blur") for k in severities], values
        ):
            lines.append(f"{s},{corruption},{severity},{v},{v - 0.01},{v - 0.02}")
    (folder / "corruptions" / "corruptions.csv").write_text("\n".join(lines) + "\n")
    certified = certified if certified is not None else dice["clean"]
    lines = ["subject,sigma,certified_dice_wt,certified_dice_tc,certified_dice_et"]
    lines += [f"{s},0.25,{v},{v},{v}" for s, v in certified.items()]
    (folder / "certified" / "certified.csv").write_text("\n".join(lines) + "\n")

    def means(values):
        return {r: float(np.mean(list(values.values()))) for r in REGIONS}

    card = {
        "schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "plan": {"name": "quick", "eps": [0.05]},
        "clean": {"dice": means(dice["clean"])},
        "adversarial": {
            "fgsm": {},
            "worst": {"0.05": means(dice["worst"])},
            "vafa": {"dice": means(dice["vafa"])},
            "min_eps": {},
        },
        "corruptions": {
            "corruptions": ["motion", "blur"],
            "severities": list(severities),
            "overall": {r: overall for r in REGIONS},
            "degradation": {r: overall / 10 for r in REGIONS},
            "mrr": {r: 0.9 for r in REGIONS},
        },
        "certified": {"0.25": {"certified_dice": means(certified)}},
        "audit": {"verdict": "PASS", "items": []},
        "model": f"{folder.name}.keras",
        "seed": 0,
        "claims": {},
    }
    card.update(  # what a card records besides its sections, as the card's builder derives it
        provenance=recorded_provenance(card),
        results=results_of(card, None),
        unreliable=unreliable_of(card),
    )
    (folder / "card.json").write_text(json.dumps(card))
    return card


def fabricated(rng, subjects, shift=0.0, levels=1):
    values = {s: float(v) for s, v in zip(subjects, rng.uniform(0.5, 0.8, len(subjects)) + shift)}
    corrupted = {
        s: list(values[s] - rng.uniform(0.05, 0.3, 2 * levels)) for s in subjects
    }  # two corruptions x levels
    return {"clean": values, "worst": values, "vafa": values, "corrupted": corrupted}


def read_board(out: Path) -> list[dict]:
    with open(out / "leaderboard.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_corruptions_column_is_the_mean_dice_of_the_corrupted_scans_it_tests(tmp_path):
    rng = np.random.default_rng(0)
    subjects = [f"s{i}" for i in range(12)]
    dice = {name: fabricated(rng, subjects) for name in ("a", "b")}
    for name, values in dice.items():
        write_card(tmp_path / name, values)  # ROOD's overall stored as 0.9: not what is shown
    run_leaderboard([tmp_path / "a", tmp_path / "b"], tmp_path / "board")
    rows = read_board(tmp_path / "board")
    per_subject = {}
    for name in dice:  # each subject's Dice averaged over its corrupted scans, then the regions
        per_subject[name] = {
            s: np.mean([np.mean([v, v - 0.01, v - 0.02]) for v in scans])
            for s, scans in dice[name]["corrupted"].items()
        }
        row = next(r for r in rows if r["model"] == name)
        assert float(row["corruptions"]) == pytest.approx(np.mean(list(per_subject[name].values())))
    p = stats.wilcoxon(
        [per_subject["b"][s] for s in subjects], [per_subject["a"][s] for s in subjects]
    ).pvalue
    assert float(rows[1]["corruptions_p"]) == pytest.approx(p)  # one comparison in the column
    assert rows[1]["corruptions_m"] == "1" and rows[1]["corruptions_n"] == "12"
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "mean Dice of the corrupted scans" in board and "ROOD-MRI overall |" not in board
    assert "ROOD-MRI's overall and degradation scores are not shown" in board
    assert rows[0]["rood_overall"] == ""


def test_rood_mris_scores_are_shown_only_for_cards_that_ran_every_level(tmp_path):
    rng = np.random.default_rng(1)
    subjects = [f"s{i}" for i in range(6)]
    write_card(tmp_path / "full", fabricated(rng, subjects, levels=5), (1, 2, 3, 4, 5), None, 0.7)
    write_card(tmp_path / "one", fabricated(rng, subjects), (3,), None, 0.8)
    run_leaderboard([tmp_path / "full", tmp_path / "one"], tmp_path / "board")
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| ROOD-MRI overall | ROOD-MRI degradation |" in board
    full = next(line for line in board.splitlines() if line.startswith("| full |"))
    one = next(line for line in board.splitlines() if line.startswith("| one |"))
    assert "| 0.700 | 0.070 |" in full
    assert "| n/a (levels 3) | n/a (levels 3) |" in one
    rows = read_board(tmp_path / "board")
    assert float(rows[0]["rood_overall"]) == pytest.approx(0.7) and rows[1]["rood_overall"] == ""


def test_each_column_is_one_family_and_a_cell_says_when_it_cannot_reach_significance(tmp_path):
    """Five cards, certified on 8 subjects: every other card certifies more on all 8, so the
    exact two-sided p is 2/2^8 and, over the column's 4 comparisons, 0.031: significant (over
    all 20 tests of the table it would be 0.156 and never could be). A card certified on 5
    subjects cannot reach 0.05 at all and is marked; finding (h) on the same pairs agrees."""
    from keras_advseg.config import STUDIES
    from keras_advseg.workflows.report import CERTIFIED, certified_findings

    rng = np.random.default_rng(2)
    subjects = [f"s{i}" for i in range(12)]
    names = ["none", "b", "c", "gaussian", "e"]
    reference = {s: 0.2 + 0.01 * i for i, s in enumerate(subjects[:8])}
    certified = {}
    for k, name in enumerate(names):
        if name == "none":
            certified[name] = reference
        elif name == "e":
            certified[name] = {s: v + 0.3 for s, v in list(reference.items())[:5]}
        else:
            certified[name] = {
                s: v + 0.1 * k + 0.005 * i for i, (s, v) in enumerate(reference.items())
            }
        write_card(tmp_path / name, fabricated(rng, subjects), certified=certified[name])
    run_leaderboard([tmp_path / n for n in names], tmp_path / "board")
    rows = {r["model"]: r for r in read_board(tmp_path / "board")}
    for name in ("b", "c", "gaussian"):
        d = [certified[name][s] - reference[s] for s in reference]
        assert float(rows[name]["certified_p"]) == pytest.approx(4 * stats.wilcoxon(d).pvalue)
        assert float(rows[name]["certified_p"]) == pytest.approx(4 * 2 / 2**8)
        assert rows[name]["certified_m"] == "4" and rows[name]["certified_reachable"] == "True"
    assert rows["e"]["certified_n"] == "5" and rows["e"]["certified_reachable"] == "False"
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    lines = {line.split(" |")[0][2:]: line for line in board.splitlines() if line.startswith("| ")}
    certified_cell = 2 + 4  # model, plan, then clean, worst, VAFA, corruptions, certified
    assert "*" in lines["gaussian"].split(" | ")[certified_cell]
    assert "†" in lines["e"].split(" | ")[certified_cell]
    assert "e (n = 5: smallest p 0.062 x 4 = 0.25)" in board
    # finding (h), the same pairs per region (a family of 3): significant too
    rows_of = {
        n: EvalResults(
            n,
            Path(n),
            {
                (CERTIFIED, STUDIES["quick"].certify_sigmas[0]): {
                    s: {f"dice_{r}": v for r in REGIONS} for s, v in certified[n].items()
                }
            },
            None,
        )
        for n in names
    }
    gaussian = next(s for s in STUDIES["quick"].models3d if s.defense == "gaussian")
    loaded = {gaussian.name: rows_of["gaussian"]}
    ((_, passed, evidence),) = certified_findings(
        loaded.__getitem__, STUDIES["quick"], rows_of["none"]
    )
    assert passed is True and f"(p = {3 * 2 / 2**8:.2g})" in evidence


def test_a_model_that_segments_nothing_is_never_ranked_as_robust(tmp_path):
    """An untrained network loses nothing to an attack: its card is flagged and the leaderboard
    lists it after every other model, without a rank."""
    from keras_advseg.workflows.card import card_flags
    from keras_advseg.workflows.leaderboard import rank

    rng = np.random.default_rng(1)
    subjects = [f"s{i}" for i in range(6)]
    trained = fabricated(rng, subjects)
    write_card(tmp_path / "trained", trained)
    # a flat model: every number higher than the trained one's, its clean Dice below 0.2 in ET
    flat = {axis: {s: 0.95 for s in subjects} for axis in ("clean", "worst", "vafa")}
    flat["corrupted"] = {s: [0.95, 0.95] for s in subjects}
    card = write_card(tmp_path / "flat", flat)
    card["clean"]["dice"]["et"] = 0.05
    card["flags"] = []  # a stored flag is not trusted either way: the clean Dice decides
    (tmp_path / "flat" / "card.json").write_text(json.dumps(card))
    assert card_flags(card["clean"]["dice"])
    result = run_leaderboard([tmp_path / "trained", tmp_path / "flat"], tmp_path / "board")
    for axis, order in result["ranks"].items():
        assert order == ["trained", "flat"], axis
    rows = read_board(tmp_path / "board")
    assert rows[1]["flags"] == "low-clean-dice: ET" and rows[0]["flags"] == ""
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "0.950 (not ranked)" in board and "**Not ranked**" in board
    # without the flag the same numbers would lead every column
    assert (
        rank(
            {
                "trained": {a: 0.5 for a in result["ranks"]},
                "flat": {a: 0.9 for a in result["ranks"]},
            }
        )["worst"][0]
        == "flat"
    )


def test_a_card_of_the_previous_version_is_refused_in_one_line(tmp_path):
    from keras_advseg.io import FileFormatError

    rng = np.random.default_rng(3)
    subjects = [f"s{i}" for i in range(4)]
    for name in ("a", "b"):
        write_card(tmp_path / name, fabricated(rng, subjects))
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    card["version"] = 1
    (tmp_path / "b" / "card.json").write_text(json.dumps(card))
    with pytest.raises(FileFormatError, match="version 1, written by another keras-advseg") as info:
        run_leaderboard([tmp_path / "a", tmp_path / "b"], tmp_path / "board")
    assert "\n" not in str(info.value)


def test_a_card_of_version_2_is_read_under_the_new_names(tmp_path):
    """Version 2 named the plan ``budget`` and the corruptions ``artifacts`` (key, claim and
    folder); its numbers mean what version 3's do, so it is read with its keys renamed and
    ranks exactly as the same card written today."""
    import shutil

    from keras_advseg.workflows.card import read_card

    rng = np.random.default_rng(5)
    subjects = [f"s{i}" for i in range(6)]
    for name in ("a", "b"):
        write_card(tmp_path / "now" / name, fabricated(rng, subjects))
    shutil.copytree(tmp_path / "now", tmp_path / "then")
    old = tmp_path / "then" / "b"
    card = json.loads((old / "card.json").read_text())
    card["version"] = 2
    card["budget"] = card.pop("plan")
    card["artifacts"] = card.pop("corruptions")
    card["claims"] = {"artifacts": "Measured, not bounded"}
    card["reused"] = ["adversarial", "artifacts", "audit", "certified"]
    (old / "card.json").write_text(json.dumps(card))
    (old / "corruptions").rename(old / "artifacts")
    read = read_card(old)
    assert read["version"] == CARD_VERSION == 4 and read["upgraded_from"] == 2
    assert read["plan"] == {"name": "quick", "eps": [0.05]} and "budget" not in read
    assert read["corruptions"]["severities"] == [3] and "artifacts" not in read
    assert read["claims"] == {"corruptions": "Measured, not bounded"}
    assert read["reused"] == ["adversarial", "audit", "certified", "corruptions"]
    notices = []
    for when in ("now", "then"):
        run_leaderboard(
            [tmp_path / when / "a", tmp_path / when / "b"],
            tmp_path / when / "board",
            notices.append,
        )
    assert len(notices) == 1 and "then/b/card.json is a version-2 card" in notices[0]
    assert read_board(tmp_path / "then" / "board") == read_board(tmp_path / "now" / "board")
    assert float(read_board(tmp_path / "then" / "board")[1]["corruptions"]) > 0


def test_vafa_of_another_setting_is_named_and_not_tested_against_the_first(tmp_path):
    rng = np.random.default_rng(4)
    subjects = [f"s{i}" for i in range(8)]
    labels = {
        "a": "VAFA light: 8^3 blocks",
        "b": "VAFA paper: 32^3 blocks",
        "c": "VAFA light: 8^3 blocks",
    }
    for name, label in labels.items():
        card = write_card(tmp_path / name, fabricated(rng, subjects))
        card["adversarial"]["vafa"]["label"] = label
        (tmp_path / name / "card.json").write_text(json.dumps(card))
    run_leaderboard([tmp_path / n for n in labels], tmp_path / "board")
    rows = {r["model"]: r for r in read_board(tmp_path / "board")}
    assert rows["b"]["vafa_p"] == "" and rows["c"]["vafa_p"] != ""  # only the same setting
    assert rows["b"]["vafa_setting"] == "VAFA paper: 32^3 blocks"
    assert (
        "VAFA's settings differ between the cards"
        in (tmp_path / "board" / "leaderboard.md").read_text()
    )
