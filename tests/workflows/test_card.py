"""`advseg card` and `advseg leaderboard` end to end, at a plan shrunk to the test's size."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import assert_help_files_written, fails_cleanly, scoring_args

from keras_advseg.cli import main
from keras_advseg.config import REGIONS
from keras_advseg.data.prepare import load_prepared
from keras_advseg.errors import FileFormatError
from keras_advseg.export import save_model
from keras_advseg.inference import Preprocessing
from keras_advseg.io import write_json_atomic
from keras_advseg.workflows import card as card_module
from keras_advseg.workflows.card import schema as schema_module
from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.axes.common import (
    DICE,
    evaluation_rows,
    region_means,
    result,
    triple,
)
from keras_advseg.workflows.card.logged_model import RANKED

pytestmark = pytest.mark.one_fixture_seed  # the card against its commands' own files

TINY = card_module.CardPlan(
    "quick", 1, (0.05,), 1, ("pgd-dice",), ("missing-sequence",), (5,), (0.25,), 60, 5, 1
)


@pytest.fixture(scope="module")
def carded(fitted_unet, prepared_dir, tmp_path_factory, new_store):
    root = tmp_path_factory.mktemp("card")
    path = save_model(
        fitted_unet, root / "model.keras", Preprocessing.from_prepared(load_prepared(prepared_dir))
    )
    uri = new_store(root)
    patch = pytest.MonkeyPatch()
    patch.setitem(card_module.CARD_PLANS, "quick", TINY)
    args = [
        "card",
        str(path),
        "--data",
        str(prepared_dir),
        "--out",
        str(root / "card"),
        "--tracking-uri",
        uri,
    ]
    first = CliRunner().invoke(main, args)
    second = CliRunner().invoke(main, args)
    patch.undo()
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    return root, path, uri, first, second


def test_the_card_has_every_section_and_the_numbers_of_its_commands(carded, prepared_dir):
    root, path, uri, first, _ = carded
    out = root / "card"
    assert_help_files_written(("card",), out, ignore=("model.keras",))  # with --preprocessing
    card = card_module.read_card(out)
    for section in card_module.SECTIONS:
        assert section in card
    assert card["plan"]["name"] == "quick" and card["claims"]["certified"].startswith("Guarantees")
    evaluation = json.loads((out / "adversarial" / "summary.json").read_text())
    assert card["clean"]["dice"]["wt"] == pytest.approx(evaluation["clean"]["dice_wt"]["mean"])
    for region in ("wt", "tc", "et"):  # BraTS 2023's lesion-wise scores of the clean row
        lesion = evaluation["clean"][f"lesion_hd95_{region}"]["mean"]
        assert card["clean"]["lesion_hd95_mm"][region] == pytest.approx(lesion)
    assert "lesion-wise Dice (BraTS 2023" in (out / "card.md").read_text()
    worst = evaluation["attacks"]["worst"]["0.05"]["dice_et"]["mean"]
    assert card["adversarial"]["worst"]["0.05"]["et"] == pytest.approx(worst)
    assert 20 < card["adversarial"]["vafa"]["psnr"] < 80
    assert set(card["adversarial"]["min_eps"]["per_subject"]) == set(
        load_prepared(prepared_dir).ids("test")
    )
    audit = json.loads((out / "audit" / "audit.json").read_text())
    assert card["audit"]["verdict"] == audit["verdict"] and len(card["audit"]["items"]) == 8
    # the card names its data, code and date
    assert card["data"]["kind"].startswith("phantom")
    assert card["data"]["source"] == str(load_prepared(prepared_dir).source)
    assert card["created"] and "Data: phantom" in (out / "card.md").read_text()
    # its flags follow its own clean Dice; the VAFA row names its setting
    assert card["flags"] == card_module.card_flags(card["clean"]["dice"])
    assert card["adversarial"]["vafa"]["label"].startswith("VAFA light: 8^3 blocks")
    # the certificate equals `advseg certify` run alone with the same settings and seed
    alone = CliRunner().invoke(
        main,
        scoring_args(
            path,
            prepared_dir,
            root / "alone",
            uri,
            "--sigma",
            ",".join(f"{s:g}" for s in TINY.sigmas),
            "--n",
            TINY.n,
            "--n0",
            TINY.n0,
            "--subjects",
            TINY.subjects,
            "--seed",
            "0",
            command="certify",
        ),
    )
    assert alone.exit_code == 0, alone.output
    separate = json.loads((root / "alone" / "certify_summary.json").read_text())["sigmas"]["0.25"]
    assert card["certified"]["0.25"]["certified_dice"]["wt"] == pytest.approx(
        separate["certified_dice_wt"]
    )
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("keras-advseg").experiment_id])
    card_runs = [r for r in runs if r.data.tags.get("card") == "true"]
    assert card_runs and "card.clean_dice_wt" in card_runs[0].data.metrics
    # every logged metric is one the table of axes names (the docs print those names)
    patterns = [
        re.escape(name)
        .replace("<region>", "(wt|tc|et)")
        .replace("<eps>", r"[0-9.]+")
        .replace("<sigma>", r"[0-9.]+")
        for axis in table.AXES
        for name in axis.metrics
    ] + [r"card\.flagged"]
    # the logged model's metrics (MLflow 3 logs them to the card's run too)
    patterns += [f"{name}(_(wt|tc|et))?" for name in RANKED]
    logged = card_runs[0].data.metrics
    assert {"card.worst_dice_eps0.05_wt", "card.certified_dice_sigma0.25_wt"} <= set(logged)
    for name in logged:
        assert any(re.fullmatch(p, name) for p in patterns), name


def test_the_html_page_is_self_contained_and_a_second_run_reuses_every_axis(carded):
    root, _, _, first, second = carded
    page = (root / "card" / "card.html").read_text()

    class Images(HTMLParser):
        sources: list = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.sources.append(dict(attrs)["src"])

    parser = Images()
    parser.feed(page)
    assert len(parser.sources) >= 3
    assert all(s.startswith("data:image/png;base64,") for s in parser.sources)
    assert "http://" not in page and "https://" not in page
    card = json.loads((root / "card" / "card.json").read_text())
    assert card["reused"] == ["adversarial", "audit", "certified", "corruptions"]
    assert "reused: adversarial, audit, certified, corruptions" in second.output


def test_a_tampered_card_and_a_model_without_preprocessing_are_refused(carded, tmp_path, models):
    root, _, _, _, _ = carded
    card = json.loads((root / "card" / "card.json").read_text())
    del card["certified"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(FileFormatError, match="card: certified is missing"):
        card_module.read_card(tmp_path)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(FileFormatError, match=f"{re.escape(str(tmp_path / 'card.json'))}: "):
        card_module.read_card(tmp_path)
    # a certificate of the previous definition (sigma relative to each input's range) is
    # refused in one line, never read as standardised units
    import shutil

    old = tmp_path / "old"
    shutil.copytree(root / "card", old)
    summary = json.loads((old / "certified" / "certify_summary.json").read_text())
    del summary["settings"]["sigma_unit"]
    (old / "certified" / "certify_summary.json").write_text(json.dumps(summary))
    with pytest.raises(FileFormatError, match="sigma in another unit") as info:
        card_module.build_card(old, TINY, "m", None, 0)
    assert "\n" not in str(info.value)
    # an axis's file without what the axis reads is refused naming its folder and the axis
    shutil.copytree(root / "card", tmp_path / "malformed")
    summary = json.loads((old / "corruptions" / "corruption_summary.json").read_text())
    del summary["scores"]
    (tmp_path / "malformed" / "corruptions" / "corruption_summary.json").write_text(
        json.dumps(summary)
    )
    with pytest.raises(FileFormatError, match="malformed for the card's corruptions axis") as info:
        card_module.build_card(tmp_path / "malformed", TINY, "m", None, 0)
    assert str(tmp_path / "malformed" / "corruptions") in str(info.value)
    base = [
        "card",
        models / "a.keras",
        "--data",
        root,
        "--out",
        tmp_path / "x",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    ]
    fails_cleanly(base, contains=("does not record the preprocessing",))
    (tmp_path / "bad.json").write_text("{not json")
    fails_cleanly(
        [*base, "--preprocessing", tmp_path / "bad.json"],
        contains=("bad.json: not a readable JSON file",),
    )


def test_the_leaderboard_ranks_cards_and_tests_them_on_shared_subjects(carded, tmp_path):
    root, _, _, _, _ = carded
    other = tmp_path / "copy"
    shutil.copytree(root / "card", other)
    result = CliRunner().invoke(
        main, ["leaderboard", str(root / "card"), str(other), "--out", str(tmp_path / "board")]
    )
    assert result.exit_code == 0, result.output
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| card | quick |" in board and "| copy | quick |" in board
    assert (tmp_path / "board" / "fig_leaderboard.png").stat().st_size > 5_000
    fails_cleanly(
        ["leaderboard", str(root / "card"), "--out", str(tmp_path / "b2")],
        contains=("at least two card folders",),
    )


def test_another_out_reuses_every_axis_from_the_tracking_store(carded, prepared_dir, tmp_path):
    """The axes logged by the first card's run are downloaded, not run again, for the same model
    bytes, data and seed; the model here names a training run of another store, under which
    MLflow could not nest, so the card's run is not nested and still succeeds."""
    import mlflow

    root, path, uri, _, _ = carded
    elsewhere = tmp_path / "trained-elsewhere"
    (elsewhere / "checkpoint").mkdir(parents=True)
    shutil.copy(path, elsewhere / "model.keras")
    unknown = "0123456789abcdef0123456789abcdef"
    (elsewhere / "checkpoint" / "state.json").write_text(
        json.dumps({"epoch": 1, "config": {}, "run_id": unknown})
    )
    patch = pytest.MonkeyPatch()
    patch.setitem(card_module.CARD_PLANS, "quick", TINY)
    try:
        card = card_module.run_card(
            str(elsewhere / "model.keras"),
            prepared_dir,
            tmp_path / "card",
            tracking_uri=uri,
            experiment="keras-advseg",
            say=lambda line: None,
        )
    finally:
        patch.undo()
    assert card["reused"] == ["adversarial", "audit", "certified", "corruptions"]
    first = card_module.read_card(root / "card")
    for section in ("clean", "adversarial", "corruptions", "certified", "audit"):
        assert card[section] == first[section]
    assert (tmp_path / "card" / "adversarial" / "per_subject.csv").read_bytes() == (
        root / "card" / "adversarial" / "per_subject.csv"
    ).read_bytes()
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("keras-advseg").experiment_id],
        filter_string=f"tags.source_run_id = '{unknown}'",
    )
    assert len(runs) == 1 and "mlflow.parentRunId" not in runs[0].data.tags
    assert runs[0].data.tags["card"] == "true"


def test_a_model_that_segments_nothing_is_flagged_first():
    assert card_module.card_flags({"wt": 0.8, "tc": 0.5, "et": 0.3}) == []
    (flag,) = card_module.card_flags({"wt": 0.014, "tc": 0.0, "et": 0.6})
    assert flag["code"] == "low-clean-dice" and flag["regions"] == ["wt", "tc"]
    assert "WT, TC" in flag["message"]
    # evaluate and evaluate --corruptions print the same warning under their clean Dice
    from keras_advseg.workflows.corruptions import low_clean_dice_warning

    assert low_clean_dice_warning({"wt": 0.8, "tc": 0.5, "et": 0.3}) == []
    (line,) = low_clean_dice_warning({"wt": 0.014, "tc": 0.5, "et": None})
    assert line.startswith("WARNING: clean Dice below 0.2 in WT:")


def test_the_min_eps_median_counts_the_subjects_that_never_broke():
    # 2 of 12 broke by 0.1: the median lies above the grid, not at the two that broke
    assert card_module.censored_median([0.05, 0.1] + [None] * 10) is None
    # 7 of 12 broke: the 6th smallest breaking eps is the Kaplan-Meier median
    values = [0.0125, 0.025, 0.025, 0.05, 0.05, 0.1, 0.1] + [None] * 5
    assert card_module.censored_median(values) == 0.1
    assert card_module.censored_median([0.2, 0.05, 0.1]) == 0.1
    assert card_module.censored_median([]) is None


def test_the_worst_case_says_when_the_audit_found_lower():
    items = [
        {"item": 1, "numbers": {"worst_case": 0.371}},
        {"item": 3, "numbers": {"margin": 0.03}},
        {"item": 4, "numbers": {"best_of": 0.36}},
        {"item": 6, "numbers": {"variants": {"CE": 0.35, "T=16.6": 0.184}}},
        {"item": 7, "numbers": {"random_search": 0.5}},
    ]
    found = card_module.audit_found_lower(items)
    assert found == {"item": 6, "dice": 0.184, "white_box": 0.371, "margin": 0.03}
    items[3]["numbers"]["variants"]["T=16.6"] = 0.35  # within the margin: nothing to say
    assert card_module.audit_found_lower(items) is None
    assert card_module.audit_found_lower([{"item": 1}]) is None  # malformed: absent


def toy_axis():
    """An axis that exists only in this test: half the clean Dice, read from the evaluation
    that the clean axis reads, with one leaderboard column."""

    def read(sources):
        return {"dice": {r: v / 2 for r, v in region_means(sources.summary().clean).items()}}

    def halves(card):
        return {s: v / 2 for s, v in evaluation_rows(card, "none", 0.0).items()}

    return table.Axis(
        "toy",
        "toy axis",
        "adversarial",
        "toy",
        None,
        read,
        rows=lambda card: [("half the clean Dice", triple(card["toy"]["dice"]))],
        headline=lambda card: {"card.toy_dice_wt": card["toy"]["dice"]["wt"]},
        metrics=("card.toy_dice_<region>",),
        shows="half the clean Dice",
        schema={"type": "object", "required": ["dice"], "properties": {"dice": DICE}},
        results=lambda card, sources: [
            result("toy", "dice", card["toy"]["dice"][r], "measured", region=r) for r in REGIONS
        ],
        columns=(table.Column("toy", "toy Dice", lambda card: card["toy"]["dice"], halves),),
    )


def test_an_axis_added_to_the_table_alone_is_on_the_card_leaderboard_report_and_docs(
    carded, tmp_path, monkeypatch
):
    from keras_advseg.workflows.leaderboard import run_leaderboard
    from keras_advseg.workflows.report import report_lines

    root = carded[0]
    monkeypatch.setattr(table, "AXES", (*table.AXES, toy_axis()))
    seed = tmp_path / "seed"
    for name in ("a", "b"):
        out = seed / "cards" / name
        shutil.copytree(root / "card", out)
        card = card_module.build_card(out, TINY, name, None, 0)
        card.update(seconds=0.0, reused=[])
        write_json_atomic(out / "card.json", card)
        (out / "card.md").write_text(card_module.card_markdown(card))
    # the card: its JSON section, its row, its metric, its check
    written = json.loads((seed / "cards" / "a" / "card.json").read_text())
    assert list(written)[-6:] == ["toy", "provenance", "results", "unreliable", "seconds", "reused"]
    card = card_module.read_card(seed / "cards" / "a")
    assert card["toy"]["dice"]["wt"] == pytest.approx(card["clean"]["dice"]["wt"] / 2)
    half = card["toy"]["dice"]
    assert (
        f"| toy | half the clean Dice | {triple(half)} |"
        in (seed / "cards" / "a" / "card.md").read_text()
    )
    assert card_module.headline_metrics(card)["card.toy_dice_wt"] == half["wt"]
    assert "toy" in card_module.table.sections()
    assert [e["value"] for e in card["results"] if e["axis"] == "toy"] == [half[r] for r in REGIONS]
    # its schema: part of the published one, and enforced
    assert schema_module.card_schema()["properties"]["toy"]["properties"]["dice"] == DICE
    broken = {**card, "toy": {"dice": {"wt": 2.0}}}
    with pytest.raises(FileFormatError, match="card: toy.dice"):
        card_module.validate_card(broken)
    # the leaderboard: its column in the CSV and the table, tested like the others
    run_leaderboard([seed / "cards" / "a", seed / "cards" / "b"], seed / "leaderboard")
    with open(seed / "leaderboard" / "leaderboard.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    toy = header.index("toy")
    assert header[toy : toy + 5] == ["toy", "toy_p", "toy_n", "toy_m", "toy_reachable"]
    value = float(rows[0]["toy"])
    assert value == pytest.approx(sum(half.values()) / 3)
    assert "| toy Dice | audit |" in (seed / "leaderboard" / "leaderboard.md").read_text()
    # the study's report: its leaderboard section has the column
    lines = report_lines({0: seed}, tmp_path)
    heading = next(line for line in lines if line.startswith("| model |"))
    assert heading.endswith("| toy Dice | audit |")
    row = next(line for line in lines if line.startswith("| a |"))
    assert f"| {value:.3f} (#1) |" in row
    # the docs: the hook's table of axes
    hook = Path(__file__).parents[2] / "docs" / "hooks" / "card_axes.py"
    spec = importlib.util.spec_from_file_location("card_axes_hook", hook)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = module.on_page_markdown(f"before\n{module.MARKER}\nafter", None, None, None)
    line = next(x for x in page.splitlines() if x.startswith("| toy axis |"))
    assert "`toy`" in line and "toy Dice" in line and "`card.toy_dice_<region>`" in line
    assert "| clean |" in page and module.MARKER not in page


def test_every_field_the_leaderboard_reads_is_checked_first(carded, tmp_path, monkeypatch):
    """A tampered card (a field removed, or of another type, at any depth) is refused in one
    line naming the card's field, or ranked: never a KeyError, TypeError or StopIteration."""
    import copy

    from keras_advseg.errors import AdvsegError
    from keras_advseg.workflows import leaderboard

    monkeypatch.setattr(leaderboard, "_figure", lambda values, names, path: path)
    root = carded[0]
    card = json.loads((root / "card" / "card.json").read_text())

    def paths(value, prefix=()):
        if prefix:
            yield prefix
        if isinstance(value, dict) and len(prefix) < 4:
            for key, inner in value.items():
                yield from paths(inner, prefix + (key,))

    tampered = tmp_path / "tampered"
    shutil.copytree(root / "card", tampered)
    tried = 0
    for path in paths(card):
        for kind, value in (("removed", None), ("text", "abc"), ("list", []), ("object", {})):
            changed = copy.deepcopy(card)
            parent = changed
            for key in path[:-1]:
                parent = parent[key]
            if kind == "removed":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            (tampered / "card.json").write_text(json.dumps(changed))
            tried += 1
            try:
                leaderboard.run_leaderboard([root / "card", tampered], tmp_path / "board")
            except AdvsegError as exc:
                assert "\n" not in str(exc) and str(exc), (path, kind)
            except Exception as exc:  # a bug: the field was read before it was checked
                raise AssertionError(f"{'.'.join(path)} {kind}: {exc!r}") from None
    assert tried > 200


def test_card_json_is_version_4_of_the_published_schema_with_its_provenance_and_results(
    carded, prepared_dir, tmp_path
):
    """card.json against the published schema file (plain jsonschema), its provenance against
    the files it names, each result against the section it restates and its interval against
    the per-subject rows; a version-3 card is converted with a notice."""
    import hashlib
    import math
    import os
    from importlib.metadata import version

    import jsonschema
    import numpy as np
    from scipy import stats

    from keras_advseg.tracking import cpu_model

    root, path, _, _, _ = carded
    out = root / "card"
    written = json.loads((out / "card.json").read_text())
    published = json.loads(schema_module.SCHEMA_FILE.read_text())
    assert schema_module.SCHEMA_FILE.read_text() == schema_module.schema_text()  # no drift
    jsonschema.Draft202012Validator(published).validate(written)
    assert written["version"] == 4 and published["properties"]["version"] == {"const": 4}

    # provenance, each field against what it names
    provenance = written["provenance"]
    assert provenance["model"] == {
        "name": "model.keras",
        "reference": str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
    }
    prepared = load_prepared(prepared_dir)
    data = provenance["data"]
    assert sorted(data["subjects"]) == sorted(prepared.ids("test")) and data["split"] == "test"
    assert data["digest"] == prepared.data_hash == written["data_hash"]
    volumes = [prepared.load(s)[0] for s in prepared.ids("test")]
    low, high = min(float(v.min()) for v in volumes), max(float(v.max()) for v in volumes)
    assert data["input"]["value_range"] == pytest.approx([low, high])
    assert data["input"]["normalization"] == prepared.config.normalization
    assert provenance["seeds"] == {"card": 0} and provenance["plan"] == "quick"
    assert provenance["software"]["keras"] == version("keras")
    assert provenance["software"]["tensorflow"] == version("tensorflow")
    assert provenance["hardware"]["cpus"] == os.cpu_count()
    assert provenance["hardware"]["processor"] == cpu_model()  # as the runs' env.cpu tag

    # every result restates its section; attacks are upper bounds, certificates guarantees
    card = card_module.read_card(out)
    results = card["results"]
    plan = card["plan"]
    by_axis: dict = {}
    for entry in results:
        by_axis.setdefault(entry["axis"], []).append(entry)
        region, settings = entry["region"], entry["settings"]
        if entry["axis"] == "clean":
            expected, bound = card["clean"]["dice"][region], "measured"
        elif entry["axis"] in ("adversarial", "worst"):
            attack = "fgsm" if entry["axis"] == "adversarial" else "worst"
            assert settings["attack"] == attack and settings["norm"] == "linf"
            expected = card["adversarial"][attack][f"{settings['eps']:g}"][region]
            bound = "upper"
        elif entry["axis"] == "vafa":
            expected, bound = card["adversarial"]["vafa"]["dice"][region], "upper"
        elif entry["axis"] == "min_eps":
            expected, bound = card["adversarial"]["min_eps"]["median"], "upper"
        elif entry["axis"] == "corruptions":
            expected, bound = card["corruptions"]["corrupted_dice"][region], "measured"
            assert settings["severities"] == plan["severities"]
        else:
            assert entry["axis"] == "certified"
            sigma = card["certified"][f"{settings['sigma']:g}"]
            expected, bound = sigma[entry["metric"]][region], "guarantee"
            assert settings["n"] == plan["n"] and settings["alpha"] == 0.001
        assert entry["value"] == expected and entry["bound"] == bound, entry
    assert {a: len(e) for a, e in by_axis.items()} == {
        "clean": 3,
        "adversarial": 3 * len(plan["eps"]),
        "worst": 3,
        "vafa": 3,
        "min_eps": 1,
        "corruptions": 3,
        "certified": 6 * len(plan["sigmas"]),
    }
    headline = {(e["axis"], e["metric"]) for e in results if e["headline"]}
    assert headline == {
        ("worst", "dice"),
        ("corruptions", "corrupted_dice"),
        ("certified", "certified_dice"),
    }
    # the clean WT interval: the t-interval of the per-subject rows
    rows = [
        float(r["dice_wt"])
        for r in csv.DictReader((out / "adversarial" / "per_subject.csv").open())
        if r["attack"] == "none"
    ]
    (clean_wt,) = [e for e in by_axis["clean"] if e["region"] == "wt"]
    half = stats.t.ppf(0.975, len(rows) - 1) * np.std(rows, ddof=1) / math.sqrt(len(rows))
    expected = [max(0.0, np.mean(rows) - half), min(1.0, np.mean(rows) + half)]  # Dice's range
    assert clean_wt["ci95"] == pytest.approx(expected)
    assert clean_wt["subjects"] == data["subjects"]
    assert card["unreliable"]["flag"] == (card["audit"]["verdict"] != "PASS")

    # a number that is not finite, or a result of no known kind, is refused, naming it
    broken = copy.deepcopy(written)
    broken["clean"]["dice"]["wt"] = float("nan")
    with pytest.raises(FileFormatError, match=r"card: clean\.dice\.wt is missing or malformed"):
        card_module.validate_card(broken)
    broken = copy.deepcopy(written)
    broken["results"][0]["bound"] = "lower"
    with pytest.raises(FileFormatError, match=r"card: results\.0\.bound is missing or malformed"):
        card_module.validate_card(broken)

    # version 3 (before the schema): read as version 4, the same numbers, with a notice
    old = copy.deepcopy(written)
    for key in ("provenance", "results", "unreliable"):
        del old[key]
    old["version"] = 3
    folder = tmp_path / "v3"
    shutil.copytree(out, folder)
    (folder / "card.json").write_text(json.dumps(old))
    notices = []
    converted = card_module.read_card(folder, say=notices.append)
    assert converted["upgraded_from"] == 3 and converted["version"] == 4
    assert len(notices) == 1 and "version-3 card, read as version 4" in notices[0]
    assert [e["value"] for e in converted["results"]] == [e["value"] for e in results]
    assert all(e["ci95"] is None for e in converted["results"])  # not recorded in version 3
    assert all(e["subjects"] is None for e in converted["results"] if e["axis"] != "min_eps")
    assert converted["provenance"]["model"]["sha256"] is None


def test_card_export_writes_a_hugging_face_model_card_with_every_headline_number(carded, tmp_path):
    """README.md's model-index and .eval_results/ against card.json: one metric per clean and
    headline number, each value and setting as the card's result entry."""
    import yaml

    root, _, _, _, _ = carded
    out = tmp_path / "hub"
    args = ["card-export", str(root / "card"), "--out", str(out), "--dataset-id", "org/brats"]
    result = CliRunner().invoke(main, [*args, "--model-name", "unet3d-test"])
    assert result.exit_code == 0, result.output
    card = json.loads((root / "card" / "card.json").read_text())
    readme = (out / "README.md").read_text()
    front, body = readme.split("---\n", 2)[1:]
    metadata = yaml.safe_load(front)
    assert metadata["library_name"] == "keras" and metadata["pipeline_tag"] == "image-segmentation"
    (model,) = metadata["model-index"]
    assert model["name"] == "unet3d-test"
    (entry,) = model["results"]
    assert entry["task"]["type"] == "image-segmentation"
    assert entry["dataset"] == {
        "type": "org/brats",
        "name": entry["dataset"]["name"],
        "split": "test",
    }
    expected = [
        e
        for e in card["results"]
        if (e["headline"] or e["axis"] == "clean") and e["value"] is not None
    ]
    metrics = entry["metrics"]
    assert len(metrics) == len(expected) == 12  # clean, worst, corrupted, certified x WT/TC/ET
    for metric, source in zip(metrics, expected, strict=True):
        assert metric["type"] == "dice" and metric["value"] == source["value"]
        assert metric["args"]["region"] == source["region"]
        assert metric["args"]["bound"] == source["bound"]
        for key, value in source["settings"].items():
            assert metric["args"][key] == value
        assert source["region"].upper() in metric["name"]
    # the body is the card's own Markdown, with the audit's warning when it is unreliable
    assert card_module.card_markdown(card_module.read_card(root / "card")) in body
    assert ("Unreliable evaluation" in body) == card["unreliable"]["flag"]
    # the Hub's evaluation results: the same numbers, each its own task id
    results = yaml.safe_load((out / ".eval_results" / "keras-advseg.yaml").read_text())
    assert [r["value"] for r in results] == [m["value"] for m in metrics]
    assert {r["dataset"]["id"] for r in results} == {"org/brats"}
    assert len({r["dataset"]["task_id"] for r in results}) == len(results)
    # a second export replaces its own README; a README it did not write is refused
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "README.md").write_text("# my model\n")
    refused = CliRunner().invoke(main, ["card-export", str(root / "card"), "--out", str(foreign)])
    assert refused.exit_code == 2 and "README.md: exists and was not written" in refused.output
    assert (foreign / "README.md").read_text() == "# my model\n"
    (foreign / "README.md").unlink()  # the same for the Hub's results file
    (foreign / ".eval_results").mkdir()
    (foreign / ".eval_results" / "keras-advseg.yaml").write_text("- value: 1\n")
    args = ["card-export", str(root / "card"), "--out", str(foreign), "--dataset-id", "org/b"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "keras-advseg.yaml: exists and was not" in refused.output
    assert not (foreign / "README.md").exists()


def test_each_card_is_an_mlflow_logged_model_ranked_by_its_headline_numbers(carded, tmp_path):
    """The card run's logged model: its metrics the means of card.json's headline numbers,
    linked to the evaluation dataset, its artifacts the card; search_logged_models ranks two
    cards by worst-case Dice, and leaderboard --from-mlflow equals the folders' leaderboard."""
    import mlflow
    from keras_advseg.workflows import leaderboard
    from keras_advseg.workflows.card.build import results_of
    from keras_advseg.workflows.card.logged_model import CARD_TAG, logged_name
    from keras_advseg.workflows.card.publish import publish_card

    # MLflow's names hold no dots: the study's model names are changed, and kept in a tag
    assert logged_name("unet3d-adversarial-eps0.05") == "unet3d-adversarial-eps0_05"

    root, path, uri, _, _ = carded
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("keras-advseg").experiment_id

    def card_models(experiment, order_by=None):
        return client.search_logged_models(
            experiment_ids=[experiment],
            filter_string=f"tags.`{CARD_TAG}` = 'true'",
            order_by=order_by,
        )

    card = json.loads((root / "card" / "card.json").read_text())
    # the fixture's card runs (other tests card other models into the same store); the last
    # one wrote the card.json there now
    ours = [m for m in card_models(experiment) if m.params.get("model") == str(path)]
    first = max(ours, key=lambda m: m.creation_timestamp)
    metrics = {m.key: m for m in first.metrics}
    worst = next(iter(card["adversarial"]["worst"].values()))
    assert metrics["worst_dice"].value == pytest.approx(sum(worst.values()) / 3)
    assert metrics["worst_dice_wt"].value == worst["wt"]
    sigma = next(iter(card["certified"].values()))["certified_dice"]
    assert metrics["certified_dice"].value == pytest.approx(sum(sigma.values()) / 3)
    corrupted = card["corruptions"]["corrupted_dice"]
    assert metrics["corrupted_dice"].value == pytest.approx(sum(corrupted.values()) / 3)
    assert metrics["worst_dice"].dataset_digest == card["data_hash"]
    assert first.tags["model.sha256"] == card["provenance"]["model"]["sha256"]
    assert first.source_run_id and str(first.status).endswith("READY")
    downloaded = mlflow.artifacts.download_artifacts(
        artifact_uri=first.artifact_location, dst_path=str(tmp_path / "dl"), tracking_uri=uri
    )
    assert json.loads((Path(downloaded) / "card.json").read_text())["results"] == card["results"]
    assert (Path(downloaded) / "adversarial" / "per_subject.csv").is_file()
    assert not (Path(downloaded) / "model.keras").exists()  # the card, not the model copy

    # two cards in an experiment of their own, one's worst case above the other's: ranked so
    folders = []
    for name, shift in (("raised", 0.5), ("halved", 0.0)):
        folder = tmp_path / name
        shutil.copytree(root / "card", folder, ignore=shutil.ignore_patterns("model.keras"))
        changed = copy.deepcopy(card)
        changed["model"] = str(tmp_path / name / "model.keras")
        for values in changed["adversarial"]["worst"].values():
            values.update({r: v / 2 + shift for r, v in values.items()})
        changed["results"] = results_of(changed, None)
        publish_card(
            changed,
            folder,
            model_ref=changed["model"],
            model_path=path,
            tracking_uri=uri,
            experiment="ranked",
        )
        folders.append(folder)
    ranked_experiment = client.get_experiment_by_name("ranked").experiment_id
    ranked = card_models(
        ranked_experiment, [{"field_name": "metrics.worst_dice", "ascending": False}]
    )
    assert [model.name for model in ranked] == ["raised", "halved"]

    # the leaderboard from the store alone: the same table as from the folders
    result = CliRunner().invoke(
        main,
        [
            "leaderboard",
            "--from-mlflow",
            "--experiment",
            "ranked",
            "--tracking-uri",
            uri,
            "--out",
            str(tmp_path / "board"),
        ],
    )
    assert result.exit_code == 0, result.output
    leaderboard.run_leaderboard(folders, tmp_path / "expected")

    def table_of(board):
        with open(board / "leaderboard.csv", newline="") as handle:
            return [
                {k: v for k, v in row.items() if k != "model"} for row in csv.DictReader(handle)
            ]

    assert table_of(tmp_path / "board") == table_of(tmp_path / "expected")
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| raised |" in board and "| halved |" in board
    # again into the same folder: its own downloads replaced; a folder it did not write refused
    args = ["leaderboard", "--from-mlflow", "--experiment", "ranked", "--tracking-uri", uri]
    args += ["--out", str(tmp_path / "board")]
    assert CliRunner().invoke(main, args).exit_code == 0
    foreign = tmp_path / "board2" / "cards" / "raised"  # a card folder of the user's own
    shutil.copytree(root / "card", foreign, ignore=shutil.ignore_patterns("model.keras"))
    (foreign / "notes.txt").write_text("mine")
    args[-1] = str(tmp_path / "board2")
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "is not a card this command downloaded" in refused.output
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_card_model_in_a_folder_store_reads_back_with_its_dataset(carded, tmp_path, monkeypatch):
    """MLflow 3's folder store (kept with MLFLOW_ALLOW_FILE_STORE) writes a metric's dataset
    name in a space-separated line: the card's dataset name has no spaces, so its model's
    metrics read back, linked."""
    import mlflow
    from keras_advseg.workflows.card.logged_model import CARD_TAG, log_card_model

    root = carded[0]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    card = json.loads((root / "card" / "card.json").read_text())
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    try:
        experiment = mlflow.set_experiment("folder-store")
        with mlflow.start_run() as run:
            log_card_model(card, root / "card", run.info.run_id, experiment.experiment_id)
        (model,) = mlflow.search_logged_models(
            experiment_ids=[experiment.experiment_id],
            filter_string=f"tags.`{CARD_TAG}` = 'true'",
            output_format="list",
        )
    finally:
        mlflow.set_tracking_uri(None)
    metrics = {m.key: m for m in model.metrics}
    worst = next(iter(card["adversarial"]["worst"].values()))
    assert metrics["worst_dice"].value == pytest.approx(sum(worst.values()) / 3)
    assert metrics["worst_dice"].dataset_digest == card["data_hash"]
    assert " " not in metrics["worst_dice"].dataset_name


def test_mlflow_evaluate_runs_the_card_on_a_logged_keras_model(
    carded, fitted_unet, prepared_dir, tmp_path
):
    """``mlflow.models.evaluate(..., evaluators=["advseg"])`` on the Keras model a training run
    logged: the evaluator is found through its entry point, cards the run's model.keras (the
    same bytes as the fixture's, so every axis is reused from the store), nests the card's
    run under the evaluation's, and returns card.json's headline numbers and its files."""
    import pandas as pd

    import mlflow
    from keras_advseg.workflows.train import _log_model

    root, path, uri, _, _ = carded
    assert "advseg" in mlflow.models.list_evaluators()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("evaluated")
    with mlflow.start_run(run_name="trained") as trained:  # as advseg train logs a model
        mlflow.log_artifact(str(path))
        _log_model(path)
    data = pd.DataFrame({"dataset": [str(prepared_dir)]})
    patch = pytest.MonkeyPatch()
    patch.setitem(card_module.CARD_PLANS, "quick", TINY)
    try:
        with mlflow.start_run(run_name="evaluation") as evaluation:
            result = mlflow.models.evaluate(
                f"runs:/{trained.info.run_id}/model",
                data,
                model_type="segmentation",
                evaluators=["advseg"],
                evaluator_config={"advseg": {"out": str(tmp_path / "card")}},
            )
    finally:
        patch.undo()
    fixture_card = json.loads((root / "card" / "card.json").read_text())
    card = json.loads((tmp_path / "card" / "card.json").read_text())
    assert card["reused"] == ["adversarial", "audit", "certified", "corruptions"]
    assert card["results"] == fixture_card["results"]
    assert card["provenance"]["model"]["sha256"] == fixture_card["provenance"]["model"]["sha256"]
    # the metrics, recomputed from card.json's result entries
    for name, (axis, metric) in RANKED.items():
        values = {
            e["region"]: e["value"]
            for e in card["results"]
            if e["axis"] == axis and e["metric"] == metric and (e["headline"] or axis == "clean")
        }
        assert sorted(values) == sorted(REGIONS), name
        assert result.metrics[name] == pytest.approx(sum(values.values()) / 3)
        for region, value in values.items():
            assert result.metrics[f"{name}_{region}"] == value
    assert result.artifacts["card_json"].content["results"] == card["results"]
    assert "Robustness card" in result.artifacts["card_md"].content
    client = mlflow.MlflowClient(uri)
    logged = client.get_run(evaluation.info.run_id)
    assert logged.data.metrics["worst_dice"] == pytest.approx(result.metrics["worst_dice"])
    files = [f.path for f in client.list_artifacts(evaluation.info.run_id, "advseg-card")]
    assert sorted(files) == [
        "advseg-card/card.html",
        "advseg-card/card.json",
        "advseg-card/card.md",
    ]
    nested = client.search_runs(
        [logged.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{evaluation.info.run_id}'",
    )
    assert [run.data.tags["card"] for run in nested] == ["true"]
    assert nested[0].info.status == "FINISHED"
    # the card names the training run's model file, and its run is tagged with that run
    assert card["model"] == f"runs:/{trained.info.run_id}/model.keras"
    assert nested[0].data.tags["source_run_id"] == trained.info.run_id
    # the evaluated logged model holds the evaluation's metrics, once each, and none of the
    # card run's own (card.*), which MLflow would link to it while it is the active model
    (evaluated,) = client.search_logged_models(
        experiment_ids=[logged.info.experiment_id],
        filter_string=f"source_run_id = '{trained.info.run_id}'",
    )
    keys = [m.key for m in evaluated.metrics]
    assert sorted(keys) == sorted(result.metrics) and len(keys) == len(set(keys))
    assert mlflow.active_run() is None and mlflow.get_active_model_id() is None
    # by its models:/ URI (MLflow then logs the returned metrics itself): once each again
    patch.setitem(card_module.CARD_PLANS, "quick", TINY)
    try:
        again = mlflow.models.evaluate(
            f"models:/{evaluated.model_id}",
            data,
            model_type="segmentation",
            evaluators="advseg",
            evaluator_config={"out": str(tmp_path / "card-again")},
        )
    finally:
        patch.undo()
    assert again.metrics == result.metrics
    (evaluated,) = client.search_logged_models(
        experiment_ids=[logged.info.experiment_id],
        filter_string=f"source_run_id = '{trained.info.run_id}'",
    )
    second = [m.key for m in evaluated.metrics if m.run_id == again.run_id]
    assert sorted(second) == sorted(result.metrics)

    # a run of another experiment cannot hold the card's runs: refused in one line
    from keras_advseg.errors import TrackingError
    from keras_advseg.tracking import tracked_run

    with mlflow.start_run(run_name="elsewhere"):
        with pytest.raises(TrackingError, match="active in experiment 'evaluated'"):
            with tracked_run(uri, "keras-advseg", run_name="inner"):
                pass
        assert mlflow.active_run().info.run_name == "elsewhere"

    # refused in one line before any work: an unknown key, a table of neither form, a Keras
    # model logged without its preprocessing, a model that is not a Keras model
    with mlflow.start_run(run_name="logged elsewhere") as elsewhere:
        mlflow.keras.log_model(fitted_unet, name="bare", pip_requirements=["keras"])
    bare = f"runs:/{elsewhere.info.run_id}/bare"
    trained_model = mlflow.pyfunc.load_model(f"runs:/{trained.info.run_id}/model")  # loaded once
    for model, config, frame, message in (
        (trained_model, {"plans": "quick"}, data, "unknown key(s) plans"),
        (trained_model, {"seed": "1"}, data, "seed must be an integer"),
        (trained_model, {}, pd.DataFrame({"image": ["x"]}), "a table with one column 'dataset'"),
        (bare, {}, data, "does not carry the preprocessing it was trained with"),
        (lambda frame: frame, {}, data, "cards Keras models"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            mlflow.models.evaluate(
                model,
                frame,
                model_type="segmentation",
                evaluators="advseg",  # one name: the configuration is not nested
                evaluator_config=config,
            )


def test_a_table_of_subject_files_is_prepared_with_its_rows_as_the_test_split(
    carded, phantom_dir, prepared_dir, tmp_path
):
    """The evaluator's table form: each row's files linked into a raw dataset, prepared as the
    model's stored preprocessing says; the rows marked test (all by default) are the test
    split, and with no training row the model's own statistics standardise. The prepared
    volumes equal those ``advseg data prepare`` wrote from the same scans."""
    import numpy as np
    import pandas as pd

    from keras_advseg.data.layouts import discover_subjects
    from keras_advseg.data.subject import MODALITIES
    from keras_advseg.export import load_preprocessing
    from keras_advseg.workflows.card.evaluator import _card_data

    _, path, _, _, _ = carded
    subjects = discover_subjects(phantom_dir)[:3]
    names = {"t1": "t1", "t1ce": "t1gd", "t2": "t2", "flair": "flair"}
    rows = [
        {
            **{c: str(s.images[MODALITIES.index(m)]) for c, m in names.items()},
            "seg": str(s.seg),
            "subject": s.subject_id,
        }
        for s in subjects
    ]
    out = _card_data(pd.DataFrame(rows), tmp_path / "all", path, {})
    prepared = load_prepared(out)
    stored = load_preprocessing(path)
    assert prepared.test_ids == sorted(s.subject_id for s in subjects) and not prepared.train_ids
    np.testing.assert_allclose(prepared.mean, stored.mean, rtol=1e-6)
    np.testing.assert_allclose(prepared.std, stored.std, rtol=1e-6)
    for subject in subjects:
        ours = np.load(out / "volumes" / f"{subject.subject_id}.npz")
        theirs = np.load(prepared_dir / "volumes" / f"{subject.subject_id}.npz")
        assert sorted(ours.files) == sorted(theirs.files)
        for key in ours.files:
            np.testing.assert_array_equal(ours[key], theirs[key])

    # a split column: the train rows give the statistics and are not carded; an empty cell
    # (NaN in pandas) is the default: test, and an id by row
    marks = ("train", "train", None)
    split = pd.DataFrame([{**r, "split": m} for r, m in zip(rows, marks)])
    split.loc[2, "subject"] = None
    prepared = load_prepared(_card_data(split, tmp_path / "split", path, {}))
    assert prepared.test_ids == ["subject-002"]
    assert prepared.train_ids == sorted(s.subject_id for s in subjects[:2])

    broken = [
        ([{**rows[0], "subject": "../up"}], "is not a plain name"),
        ([rows[0], rows[0]], "appears twice"),
        ([{**rows[0], "t2": str(tmp_path / "none.nii.gz")}], "none.nii.gz: not a NIfTI file"),
        ([{**rows[0], "t2": None}], "t2: (empty): not a NIfTI file"),
        ([{**rows[0], "split": "val"}], "split must be train or test"),
        ([{k: v for k, v in rows[0].items() if k != "seg"}], "and seg"),
    ]
    for number, (frame, message) in enumerate(broken):
        with pytest.raises(ValueError, match=re.escape(message)):
            _card_data(pd.DataFrame(frame), tmp_path / f"broken{number}", path, {})
    # the library's explicit split names labelled subjects of the dataset only
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset

    with pytest.raises(ValueError, match="not labelled or not found: nobody"):
        prepare_dataset(
            tmp_path / "all" / "raw",
            tmp_path / "nobody",
            PrepareConfig(shape=(16, 16, 16), n4=False),
            progress=False,
            test_ids=["nobody"],
        )
    assert not (tmp_path / "nobody").exists()  # refused before any volume is prepared
