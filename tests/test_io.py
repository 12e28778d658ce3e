"""Atomic writes and reading files back as untrusted input."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from keras_advseg.io import (  # noqa: E402
    FileFormatError,
    atomic_path,
    copy_atomic,
    read_json,
    rows_to_csv,
    save_figure,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_path_renames_on_success_and_keeps_the_suffix(tmp_path):
    target = tmp_path / "model.weights.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".weights.h5") and tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.weights.h5"]


def test_atomic_path_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "summary.json", "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_atomic_folder_and_existing_temporary_names_are_never_followed(tmp_path):
    target = tmp_path / "subject"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / ".subject.partial").symlink_to(victim)  # a link planted at the old fixed name
    with atomic_path(target, directory=True) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and not tmp.is_symlink()
        (tmp / "a.nii.gz").write_bytes(b"1")
    assert [p.name for p in target.iterdir()] == ["a.nii.gz"]
    assert victim.read_text() == "keep" and (tmp_path / ".subject.partial").is_symlink()


def test_written_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_text_json_copy_and_csv(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1} and path.read_text().startswith("{\n  ")
    assert write_json_atomic(tmp_path / "b.json", [1, 2], indent=None).read_text() == "[1, 2]"
    assert copy_atomic(path, tmp_path / "c.json").read_text() == path.read_text()
    text = rows_to_csv([{"a": 1, "b": 2, "c": 3}], fields=("a", "b"))
    assert text.splitlines() == ["a,b", "1,2"]


def json_writes_beside_io() -> list[str]:
    """Where the package writes JSON to a file without :func:`write_json_atomic`: a call to
    ``json.dump``, or ``write_text``/``write_text_atomic`` of ``json.dumps(...)``."""
    import ast
    from pathlib import Path

    import keras_advseg

    root = Path(keras_advseg.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "io.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            dumped = any(
                isinstance(a, ast.Call) and ast.unparse(a.func) == "json.dumps" for a in node.args
            )
            if name == "json.dump" or (
                name.endswith(("write_text", "write_text_atomic")) and dumped
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_json_file_is_written_through_write_json_atomic():
    assert json_writes_beside_io() == []


def test_save_figure_writes_a_png_and_closes_it(tmp_path):
    fig = plt.figure()
    path = save_figure(fig, tmp_path / "fig.png", dpi=20)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "JSONDecodeError"),
        ("[1, 2]", "expected a JSON object"),
        (b"\xff\xfe", "UnicodeDecodeError"),
    ],
)
def test_read_json_names_the_file_and_what_it_is(tmp_path, content, message):
    path = tmp_path / "state.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(FileFormatError, match=message) as info:
        read_json(path, "checkpoint state")
    assert str(info.value).startswith(f"{path}: unreadable checkpoint state")
    assert read_json(write_json_atomic(path, {"epoch": 1})) == {"epoch": 1}
    with pytest.raises(FileFormatError, match="FileNotFoundError"):
        read_json(tmp_path / "missing.json")


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted_and_read_back():
    from keras_advseg.evaluation.results import load_results
    from keras_advseg.io import csv_original, csv_text, rows_to_csv

    for text in ('=HYPERLINK("x")', "+1+1", "-cmd", "@SUM(A1)"):
        assert csv_text(text) == "'" + text and csv_original(csv_text(text)) == text
    assert csv_text("-0.25") == "-0.25" and csv_text("BraTS_001") == "BraTS_001"
    assert csv_text(-0.25) == -0.25
    rows = [
        {"subject": "=cmd|' /C calc'!A0", "attack": "none", "eps": 0.0, "steps": 0, "dice_wt": 0.5}
    ]
    text = rows_to_csv(rows)
    assert "\n'=cmd" in text or "\n\"'=cmd" in text
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "per_subject.csv").write_text(text)
        result = load_results(folder)
        assert result.subjects() == {"=cmd|' /C calc'!A0"}


def test_a_write_that_fills_the_disk_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    from keras_advseg.cli import one_line
    from keras_advseg.io import write_text_atomic

    (tmp_path / "summary.json").write_text("the previous summary")

    def full(self, data, *args, **kwargs):  # the disk fills in the middle of the write
        raise OSError(errno.ENOSPC, "No space left on device")

    from pathlib import Path

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as caught:
        write_text_atomic(tmp_path / "summary.json", "{}")
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert one_line(caught.value) == f"{tmp_path / 'summary.json'}: No space left on device"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert (tmp_path / "summary.json").read_text() == "the previous summary"


def test_remove_temporaries_takes_only_what_a_killed_writer_left(tmp_path):
    import signal
    import subprocess
    import sys

    from keras_advseg.io import remove_temporaries

    # a writer killed mid-write (as a Ray worker is) leaves its temporaries behind
    code = (
        "import os, sys, time\n"
        "from keras_advseg.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as a, atomic_path(sys.argv[2], directory=True) as b:\n"
        "    (b / 'part.npz').write_bytes(b'x')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    (tmp_path / "sub").mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "card.json"), str(tmp_path / "sub" / "model")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "ready"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = sorted(p.name for p in tmp_path.rglob(".*") if ".partial" in p.name)
    assert len(left) == 2  # the file's and the folder's
    kept = [tmp_path / "card.json.partial.md", tmp_path / "notes.partial", tmp_path / "report.md"]
    for path in kept:  # not temporaries of atomic_path: not ours to remove
        path.write_text("user's")
    assert remove_temporaries(tmp_path) == 2
    assert not [p for p in tmp_path.rglob(".*") if ".partial" in p.name]
    assert all(path.read_text() == "user's" for path in kept)
    assert remove_temporaries(tmp_path / "missing") == 0
