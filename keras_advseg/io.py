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
import tempfile
from collections.abc import Iterator
from pathlib import Path

from keras_advseg.errors import FileFormatError, InputError


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yields a new temporary path beside ``path``; renames it onto ``path`` when the block succeeds.

    The temporary file (or, with ``directory``, folder) is created exclusively
    under a fresh random name, so nothing that already exists there, a file or
    a symbolic link, is ever followed or overwritten. Its name keeps the
    destination's suffixes (``.keras``, ``.weights.h5``), which some writers
    require. On success it gets the usual permissions (0666 or 0777 less the
    umask) and is renamed onto ``path``; on an exception it is removed and
    ``path`` is left as it was.

    Args:
        path: The destination.
        directory: Write a whole folder (the temporary folder exists, empty).

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    prefix, suffix = f".{stem}.", f".partial{dot}{suffixes}"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
        os.close(handle)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if exc.filename is None:  # "[Errno 28] No space left on device" names no file: name it
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        _remove(tmp)
        raise


SCANNED_INPUTS = ("data", "dataset", "raw dataset")
"""The inputs (by name) read by discovering what their folder holds: no output may go inside."""


def refuse_inputs_in_output(out: str | Path, inputs: dict | None, option: str = "--out") -> None:
    """Refuses an output folder that holds one of a command's inputs, or lies inside a dataset
    folder (:data:`SCANNED_INPUTS`): an input is never an output.

    A model or data inside ``out`` could be rewritten by what the command writes there (a
    card's ``OUT/model.keras``); an output inside a dataset folder is read back by the dataset's
    own discovery as a subject with missing sequences.

    Args:
        out: The output folder (it need not exist yet).
        inputs: ``{what: path}``, e.g. ``{"model": ..., "data": ...}``; None values are skipped.
        option: The output's option name, for the message.

    Raises:
        InputError: naming the option, the folder and the input, before anything is written.
    """
    target = Path(out).expanduser().resolve()
    for what, path in (inputs or {}).items():
        if path is None or not Path(path).expanduser().exists():
            continue  # a run id or runs:/ URI, or nothing yet
        source = Path(path).expanduser().resolve()
        if source == target or target in source.parents:
            raise InputError(
                f"{option} {out}: holds the {what} {path}; an input is never an output: "
                "choose another folder"
            )
        if what in SCANNED_INPUTS and source.is_dir() and source in target.parents:
            raise InputError(
                f"{option} {out}: lies inside the {what} folder {path}, whose discovery would "
                "read it as a subject: choose a folder outside it"
            )


def ensure_writable_folder(path: str | Path, inputs: dict | None = None) -> Path:
    """Creates ``path`` if needed and checks, before any expensive work, that files can be written there.

    Args:
        path: The output folder.
        inputs: The command's inputs, ``{what: path}``: refused inside ``path``, and ``path``
            refused inside an input folder (:func:`refuse_inputs_in_output`).

    Returns:
        ``path``.

    Raises:
        OSError: naming the folder (not a folder, permission denied, read-only, disk full).
        InputError: ``path`` holds an input or lies in an input folder.
    """
    refuse_inputs_in_output(path, inputs)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, "exists and is not a folder", str(path))
    path.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror or "not writable", str(path)) from None
    return path


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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula in a text cell (OWASP, CSV injection)."""


def csv_text(value):
    """A text cell that a spreadsheet shows as text: a leading ``'`` before a formula start
    (OWASP's advice for CSV injection); numbers and other text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_original(text: str) -> str:
    """The inverse of :func:`csv_text` for a cell read back."""
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


def rows_to_csv(rows: list[dict], fields=None) -> str:
    """CSV text of ``rows`` with the columns ``fields`` (default: the first row's keys); text
    that a spreadsheet would run as a formula (a subject id ``=cmd|...``) is quoted with a
    leading ``'`` (:func:`csv_text`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields or rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: csv_text(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 subject``, ``2 subjects`` (``many``: the plural when it is not ``word + "s"``): a
    count and its noun, for messages and reports."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuses a large write before it starts when ``folder``'s disk cannot hold it: a full disk
    in the middle of an HDF5 or SavedModel write ends in pages of library errors (or a crash)
    instead of one line, and can leave half a file behind.

    Args:
        folder: Where the file goes.
        needed: Bytes about to be written (an estimate; 1 MiB of slack is added).
        what: What is written, for the message.

    Raises:
        OSError: ``ENOSPC``, naming the folder, the free and the needed space.
    """
    import errno

    folder = Path(folder)
    probe = folder if folder.exists() else folder.parent
    free = shutil.disk_usage(probe).free
    needed = int(needed) + 2**20
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"no space left on device for {what}: {free / 2**20:.1f} MiB free, about "
            f"{needed / 2**20:.1f} MiB needed",
            str(folder),
        )


def model_bytes(model, copies: int = 1) -> int:
    """About how many bytes ``copies`` float32 copies of ``model``'s weights take on disk."""
    return 4 * int(model.count_params()) * copies


def remove_temporaries(folder: str | Path) -> int:
    """Removes what a writer killed mid-write left under ``folder``: the temporaries of
    :func:`atomic_path` (``.<stem>.<random>.partial<suffixes>``, files and folders).

    Returns:
        How many it removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = [p for p in folder.rglob(".*") if ".partial" in p.name and p.name.startswith(".")]
    removed = 0
    for path in sorted(found, key=lambda p: len(p.parts)):  # a folder before what it holds
        if path.exists() or path.is_symlink():
            _remove(path)
            removed += 1
    return removed
