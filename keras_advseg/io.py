"""Files in and out: nothing half-written, and every file read back checked.

Every output of the package goes through :func:`atomic_path` (or a helper built
on it): the content is written under a temporary name beside the destination
and renamed into place, so an interrupted run never leaves a half-written file
or folder, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` when the block succeeds.

    The temporary name keeps the destination's suffixes (``.keras``,
    ``.weights.h5``, ``.npz``), which some writers require. On an exception the
    temporary file (or folder) is removed and ``path`` is left as it was.

    Args:
        path: The destination (a file, or a folder written whole).

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    tmp = path.with_name(f".{stem}.partial{dot}{suffixes}")
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json_atomic(path: str | Path, value, **kwargs) -> Path:
    """Writes ``value`` as indented JSON to ``path`` atomically; returns ``path``."""
    kwargs.setdefault("indent", 2)
    return write_text_atomic(path, json.dumps(value, **kwargs))


def copy_atomic(source: str | Path, path: str | Path) -> Path:
    """Copies ``source`` onto ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    return path


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Saves a Matplotlib figure as PNG at ``path`` atomically and closes the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def rows_to_csv(rows: list[dict], fields=None) -> str:
    """CSV text of ``rows`` with the columns ``fields`` (default: the first row's keys)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields or rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class FileFormatError(ValueError):
    """A file the package reads back is missing, unreadable or malformed."""


def read_json(path: str | Path, what: str = "JSON file") -> dict:
    """Reads a JSON object written by the package, as untrusted input.

    Args:
        path: The file.
        what: What the file is, for the message (``"checkpoint state"``).

    Returns:
        The decoded object (a dict).

    Raises:
        FileFormatError: the file cannot be read, is not JSON, or not an object.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise FileFormatError(
            f"{path}: unreadable {what} (expected a JSON object, got {type(value).__name__})"
        )
    return value


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
