"""The documentation builds strictly offline, and README's two tours run as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support import run_ok

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_readme_is_short_and_names_what_demo_writes():
    assert len(README.splitlines()) <= 200
    for path in (
        "demo/report.md",
        "demo/seeds/0/report.md",
        "mlflow.db",
        "workflowType=machine_learning",
    ):
        assert path in README


def test_the_home_page_lists_every_page_and_contributing_is_contributing_md():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = [page for entry in nav for page in entry.values()]
    home = (ROOT / "docs" / "index.md").read_text()
    listed = set(re.findall(r"^\| \[[^]]+\]\(([^)#]+)\)", home, re.M))
    assert listed == set(pages) - {"index.md"}
    # the docs' Contributing page is CONTRIBUTING.md itself, so the two cannot drift apart
    contributing = (ROOT / "docs" / "contributing.md").read_text()
    assert contributing.startswith('--8<-- "CONTRIBUTING.md"\n')
    assert "\n# " not in contributing and "\n## Layout" not in contributing


@pytest.mark.slow
def test_the_documentation_builds_strictly_offline(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_PROXY": "*", "no_proxy": "*"}
    env["HTTPS_PROXY"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"  # nothing may be fetched
    run_ok(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", tmp_path / "site"],
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    cli_page = (tmp_path / "site" / "cli" / "index.html").read_text()
    # the CLI reference is generated from the commands: a renamed option shows up at once
    assert "advseg evaluate" in cli_page and "--table1-eps" in cli_page
    api_page = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "worst_case" in api_page and "run_attack" in api_page


def test_the_python_tour_runs_as_written(models, prepared_dir, tmp_path, monkeypatch, capsys):
    (snippet,) = [b for b in blocks("python") if "load_prepared" in b]
    model_dir = tmp_path / "demo" / "seeds" / "0" / "models" / "unet3d-none"
    model_dir.mkdir(parents=True)
    (model_dir / "model.keras").write_bytes((models / "a.keras").read_bytes())
    (tmp_path / "demo" / "prepared").symlink_to(prepared_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet, namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["clean", "FGSM", "worst"]
    for line in printed:
        scores = eval(line.split(" ", 1)[1])  # the printed dict
        assert set(scores) == {"wt", "tc", "et"} and all(0 <= v <= 1 for v in scores.values())
    x, fgsm = namespace["attacked"]["clean"], namespace["attacked"]["FGSM"]
    span = float(np.max(x) - np.min(x))
    assert np.max(np.abs(np.asarray(fgsm) - x)) == pytest.approx(0.05 * span, rel=1e-4)


@pytest.mark.slow
def test_the_command_line_tour_runs_as_written(tmp_path, monkeypatch, new_store):
    from keras_advseg.cli import main

    (script,) = [b for b in blocks("bash") if "advseg data synth" in b]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_store(tmp_path))
    commands = script.replace("\\\n", " ").splitlines()
    for line in commands:
        args = shlex.split(line, comments=True)
        if not args:
            continue
        assert args[0] == "advseg"
        result = CliRunner().invoke(main, args[1:])
        assert result.exit_code == 0, f"{line}\n{result.output[-2000:]}"
    assert (tmp_path / "evals" / "none" / "per_subject.csv").is_file()
    assert (tmp_path / "audits" / "none" / "audit.md").is_file()
    assert (tmp_path / "cards" / "none" / "card.html").is_file()
    assert (tmp_path / "hub" / "none" / "README.md").read_text().startswith("---\nlibrary_name")
    assert len(list((tmp_path / "segmentations").glob("*.nii.gz"))) == 8
    assert (tmp_path / "served_model" / "saved_model.pb").is_file()


def documented_command_lines() -> list[tuple[str, list[str]]]:
    """Every ``advseg ...`` line of README's and the docs' shell blocks, continuation lines
    joined and comments dropped: ``(source, arguments after advseg)``."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in blocks("bash", path.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words and words[0].endswith("advseg"):
                    found.append((f"{path.name}: {line.strip()}", words[1:]))
    return found


def test_every_documented_command_names_real_options_and_choices():
    """A renamed option, command or choice fails here before it misleads a reader."""
    import click

    from keras_advseg.cli import main

    lines = documented_command_lines()
    assert len(lines) >= 30
    for source, args in lines:
        with main.make_context("advseg", list(args), resilient_parsing=False) as ctx:
            name, command, rest = main.resolve_command(ctx, ctx.protected_args + ctx.args)
            while isinstance(command, click.Group):
                sub = command.make_context(name, rest, parent=ctx)
                name, command, rest = command.resolve_command(sub, sub.protected_args + sub.args)
            try:
                command.make_context(name, rest, parent=ctx)
            except click.UsageError as exc:
                raise AssertionError(f"{source}: {exc.format_message()}") from None


def first_import(code: str) -> str | None:
    """The first of keras_advseg, keras and tensorflow that ``code`` imports, or None."""
    found = re.search(r"^\s*(?:import|from)\s+(keras_advseg|keras|tensorflow)\b", code, re.M)
    return found and found.group(1)


def test_documented_python_imports_keras_advseg_before_tensorflow():
    """``import keras_advseg`` turns on TensorFlow's oneDNN CPU kernels, which only works before
    TensorFlow is imported (``import keras`` imports it): code we show users that imports keras
    first trains several times slower on most CPUs. Every README and docs block, the notebook
    and the benchmarks (which report their kernels) import it first."""
    import json

    sources = [("README.md", README)] + [
        (path.name, path.read_text()) for path in sorted((ROOT / "docs").glob("*.md"))
    ]
    snippets = [(name, b) for name, text in sources for b in blocks("python", text)]
    notebook = json.loads((ROOT / "notebooks" / "walkthrough.ipynb").read_text())
    snippets.append(
        (
            "walkthrough.ipynb",
            "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"),
        )
    )
    # the benchmarks report their kernels; bench_cpu.py sets the variable itself, per child
    snippets += [
        (path.name, path.read_text())
        for path in sorted((ROOT / "benchmarks").glob("bench_*.py"))
        if path.name != "bench_cpu.py"
    ]
    using = [(name, code) for name, code in snippets if "keras_advseg" in code]
    assert any(name == "walkthrough.ipynb" for name, _ in using)
    assert [name for name, code in using if first_import(code) != "keras_advseg"] == []
    assert first_import("import keras\nimport keras_advseg\n") == "keras"  # the check can fail


def test_the_card_schema_page_shows_a_card_of_the_published_schema():
    """The page's example card: its provenance, results and unreliable flag each valid under
    the published schema's definitions, its results restating one another as the page says."""
    import jsonschema

    from keras_advseg.workflows.card.schema import SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text())
    page = (ROOT / "docs" / "card-schema.md").read_text()
    (example,) = [json.loads(b) for b in blocks("json", page) if '"provenance"' in b]
    assert example["version"] == schema["properties"]["version"]["const"]
    for key in ("provenance", "unreliable"):
        jsonschema.validate(example[key], schema["properties"][key])
    entries = schema["properties"]["results"]
    jsonschema.validate(example["results"], entries)
    assert {e["bound"] for e in example["results"]} == {"measured", "upper", "guarantee"}
    assert '--8<-- "keras_advseg/workflows/card/card.schema.json"' in page  # the whole schema
