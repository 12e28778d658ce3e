"""`advseg data ...` end to end, error handling, help texts and the command line's reference;
`advseg corruptions` and the spelling it replaces."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import assert_help_files_written, read_rows

from keras_advseg.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_synth_prepare_info(tmp_path):
    raw, prepared = tmp_path / "raw", tmp_path / "prep"
    result = run("data", "synth", raw, "--n", 3, "--voxel-mm", 6, "--seed", 1, "--preview")
    assert result.exit_code == 0, result.output
    assert "wrote 3 subjects" in result.output
    assert (raw / "preview.png").stat().st_size > 10_000
    assert_help_files_written(("data", "synth"), raw)
    result = run(
        "data",
        "prepare",
        raw,
        "--out",
        prepared,
        "--shape",
        "16",
        "--no-n4",
        "--test-fraction",
        0.34,
    )
    assert result.exit_code == 0, result.output
    assert "train 2, test 1, shape (16, 16, 16)" in result.output
    info = json.loads(run("data", "info", prepared).output)
    assert info["kind"] == "prepared" and info["train"] == 2 and info["shape"] == [16, 16, 16]
    raw_info = json.loads(run("data", "info", raw).output)
    assert raw_info == {"kind": "raw", "subjects": 3, "layouts": ["brats2021"], "labelled": 3}


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "prepare", "{tmp}/missing", "--out", "{tmp}/o"], "missing: no such folder"),
        (
            ["data", "prepare", "{tmp}", "--out", "{tmp}/o", "--shape", "12,12"],
            "--shape: expected one or three positive integers",
        ),
        (["data", "info", "{tmp}"], "no subjects found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_truncated_file_error_names_file(tmp_path):
    raw = tmp_path / "raw"
    assert run("data", "synth", raw, "--n", 1, "--voxel-mm", 6).exit_code == 0
    flair = next(raw.glob("*/*_flair.nii.gz"))
    flair.write_bytes(flair.read_bytes()[:200])
    result = CliRunner().invoke(
        main, ["data", "prepare", str(raw), "--out", str(tmp_path / "o"), "--no-n4"]
    )
    assert result.exit_code == 2
    assert flair.name in result.output and "Traceback" not in result.output


def test_every_command_has_help_for_every_option():
    def walk(group, path):
        yield path, group
        for name, command in getattr(group, "commands", {}).items():
            yield from walk(command, path + [name])

    for path, command in walk(main, []):
        result = run(*path, "--help")
        assert result.exit_code == 0
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{' '.join(path)} {param.opts} has no help"
                # a hidden option is a deprecated spelling, kept for one release
                shown = re.search(re.escape(param.opts[0]) + r"(?![\w-])", result.output)
                assert bool(shown) != param.hidden, (path, param.opts)


def test_console_script_runs_as_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "keras_advseg.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "advseg" in result.stdout


def test_commands_without_models_start_without_tensorflow(tmp_path):
    code = (
        "import sys; from click.testing import CliRunner; from keras_advseg.cli import main; "
        "r = CliRunner().invoke(main, ['data', 'info', sys.argv[1]]); "
        "print('tensorflow' in sys.modules, r.exit_code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["False", "2"], out.stderr[-500:]


def leaf_commands(group=main, path=()):
    """``("data", "synth")``, ``("train",)``, ...: every command that runs something."""
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name)


def test_the_reference_says_advseg_and_the_table_lists_every_command():
    spec = importlib.util.spec_from_file_location(
        "cli_reference", DOCS / "hooks" / "cli_reference.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    reference = hook.on_page_markdown(hook.MARKER, None, None, None)
    assert "Usage: main" not in reference
    assert "Usage: advseg corruptions [OPTIONS] MODEL" in reference
    page = (DOCS / "cli.md").read_text()
    table = {m.group(1) for m in re.finditer(r"^\| `advseg ([^`]+)`", page, re.M)}
    for path in leaf_commands():
        name = " ".join(path)
        assert any(row == name or row.startswith(name + " ") for row in table), name
        assert f"### advseg {name}\n" in reference


def test_choices_come_from_the_code(monkeypatch):
    from keras_advseg.vocabulary import CORRECTIONS
    from keras_advseg.workflows import card

    monkeypatch.setitem(card.CARD_PLANS, "tiny", card.CARD_PLANS["quick"])
    assert "[" + "|".join(card.CARD_PLANS) + "]" in run("card", "--help").output
    assert "[" + "|".join(CORRECTIONS) + "]" in run("certify", "--help").output
    for option in ("--plan", "--budget"):  # --budget: the last release's spelling
        result = CliRunner().invoke(
            main, ["card", "m.keras", "--data", ".", "--out", "o", option, "huge"]
        )
        assert result.exit_code == 2 and "'huge' is not one of" in result.output


def renamed(old: str, new: str) -> str:
    """The one-line notice of a spelling of the last release."""
    return f"`{old}` is now `{new}`; the old spelling goes in the next release"


def test_the_old_spellings_of_renamed_options_and_values_work_with_a_notice(monkeypatch, tmp_path):
    """``train --defense artifacts --artifacts ... --artifact-rate ...`` and ``card --budget``
    run what their new spellings run, each with one notice on standard error."""
    from types import SimpleNamespace

    from keras_advseg.workflows import card as card_workflow
    from keras_advseg.workflows import train as train_workflow

    seen = []

    def train(config, data, out, **_):
        seen.append(config)
        return SimpleNamespace(model_path=out / "model.keras", best_score=0.5, run_id="r")

    monkeypatch.setattr(train_workflow, "train", train)
    common = ["train", "--data", tmp_path, "--out", tmp_path / "o", "--preset", "smoke"]
    common += ["--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    new = run(*common, "--defense", "corruptions", "--corruptions", "operator")
    old = run(*common, "--defense", "artifacts", "--artifacts", "operator")
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    rate = run(*common, "--corruption-rate", "0.3")
    old_rate = run(*common, "--artifact-rate", "0.3")
    assert seen[0] == seen[1] and seen[2] == seen[3]
    assert seen[0].defense == "corruptions" and seen[0].corrupted_share == 0.5
    assert seen[2].defense == "none" and seen[2].corruption_rate == 0.3
    assert "is now" not in new.stderr + rate.stderr
    assert old.stderr.count(renamed("--defense artifacts", "--defense corruptions")) == 1
    assert old.stderr.count(renamed("--artifacts", "--corruptions")) == 1
    assert old_rate.stderr.count(renamed("--artifact-rate", "--corruption-rate")) == 1
    plans = []
    monkeypatch.setattr(card_workflow, "run_card", lambda *a, plan, **k: plans.append(plan) or {})
    monkeypatch.setattr(card_workflow, "summary_lines", lambda card, out: [])
    for option in ("--plan", "--budget"):
        result = run("card", "m.keras", "--data", ".", "--out", tmp_path / "c", option, "full")
        assert result.exit_code == 0, result.output
        assert (renamed("--budget", "--plan") in result.stderr) == (option == "--budget")
    assert plans == ["full", "full"]
    # list options: comma-separated in one option; the repeated --attack still accepted
    from keras_advseg.workflows import evaluate as evaluate_workflow

    configs = []
    monkeypatch.setattr(
        evaluate_workflow, "run_evaluation", lambda *a, config, **k: configs.append(config)
    )
    monkeypatch.setattr(evaluate_workflow, "summary_lines", lambda summary, out: [])
    common = ["evaluate", "m.keras", "--data", ".", "--out", tmp_path / "e"]
    new = run(*common, "--attacks", "fgsm,pgd-dice")
    old = run(*common, "--attack", "fgsm", "--attack", "pgd-dice")
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    assert configs[0] == configs[1] and configs[0].attacks == ("fgsm", "pgd-dice")
    assert "is now" not in new.stderr
    assert old.stderr.count(renamed("--attack", "--attacks")) == 1


def test_list_options_are_comma_separated_with_ranges_of_integers(capsys):
    from keras_advseg.cli_args import parse_floats, parse_seeds, parse_severities, parse_shape
    from keras_advseg.errors import InputError

    assert parse_seeds("0-2,7") == (0, 1, 2, 7)
    assert parse_severities("5,1-2") == (1, 2, 5)
    assert parse_floats("0.05,0.1", "--eps") == (0.05, 0.1)
    for bad in ("0-5", "6", "2,2", "a"):
        with pytest.raises(
            InputError, match=r"--severities: expected distinct integers in \[1, 5\]"
        ):
            parse_severities(bad)
    assert parse_shape("64,64,48") == (64, 64, 48)
    assert "is now" not in capsys.readouterr().err
    assert parse_shape("64x64x48") == (64, 64, 48)  # the last release's spelling
    assert renamed("--shape 64x64x48", "--shape 64,64,48") in capsys.readouterr().err


NOTICE = (
    "`advseg evaluate --corruptions` is now `advseg corruptions`; "
    "the old spelling goes in the next release"
)


def test_corruptions_and_its_old_spelling_give_the_same_results(
    models, prepared_dir, tmp_path, new_store
):
    options = [
        "--data",
        prepared_dir,
        "--corruptions",
        "missing-sequence,blur",
        "--severities",
        "2",
        "--seed",
        3,
        "--tracking-uri",
        new_store(tmp_path),
    ]
    new = run("corruptions", models / "a.keras", "--out", tmp_path / "new", *options)
    old = run("evaluate", models / "a.keras", "--out", tmp_path / "old", *options)
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    assert NOTICE not in new.output
    assert old.stderr.count(NOTICE) == 1 and NOTICE not in old.stdout
    rows = read_rows(tmp_path / "new" / "corruptions.csv")
    assert {(r["corruption"], r["severity"]) for r in rows} == {
        ("none", "0"),
        ("missing-sequence", "2"),
        ("blur", "2"),
    }
    assert rows == read_rows(tmp_path / "old" / "corruptions.csv")
    read = (tmp_path / "new" / "corruption_tests.csv").read_text
    assert read() == (tmp_path / "old" / "corruption_tests.csv").read_text()
    summaries = [
        json.loads((tmp_path / out / "corruption_summary.json").read_text())
        for out in ("new", "old")
    ]
    assert summaries[0].pop("evaluation_run_id") != summaries[1].pop("evaluation_run_id")
    assert summaries[0] == summaries[1]
    assert new.stdout.replace(str(tmp_path / "new"), str(tmp_path / "old")) == old.stdout
    assert_help_files_written(
        ("corruptions",), tmp_path / "new", ignore=("corruptions_reference.csv",)
    )
