"""The package's own error types: what the CLI turns into one line, everything else is a bug.

Every error caused by the user's input or by an unusable file derives from
:class:`AdvsegError`; its message names the file or option and says what was
expected. The CLI prints these (and operating-system errors) as one line and
exits with status 2; any other exception is a genuine bug and keeps its traceback.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path


class AdvsegError(Exception):
    """Base of the errors the package raises for bad input or an unusable state."""


class InputError(AdvsegError, ValueError):
    """A value, option, configuration or reference that cannot be used."""


class DataError(AdvsegError, ValueError):
    """Bad or unreadable input data.

    The message always names the offending file or folder and says what was
    expected, so the CLI can print it as a single line.
    """


class FileFormatError(AdvsegError, ValueError):
    """A file the package reads back is missing, unreadable or malformed."""


class TrainingError(AdvsegError, RuntimeError):
    """Training could not finish (non-finite loss, unusable checkpoint, unfit warm start)."""


class CheckpointExists(TrainingError):
    """The output folder holds a previous run's checkpoint and resuming was not asked for.

    Attributes:
        folder: The output folder.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        super().__init__(
            f"{folder}: holds a previous run's checkpoint; pass --resume to continue it or "
            "choose a new --out"
        )


class TrackingError(AdvsegError, RuntimeError):
    """The tracking store cannot be used."""


class ClusterError(AdvsegError, RuntimeError):
    """A multi-worker cluster cannot be joined (the chief does not answer)."""


def is_finite_number(value) -> bool:
    """A real number (not a bool) that is finite as a float: what a JSON file or an argument
    must hold where a number is expected (a JSON integer of 400 digits is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_range(name: str, value, low: float, high: float) -> None:
    """Checks that ``value`` is a finite number in ``[low, high]``.

    Raises:
        InputError: naming ``name``, otherwise.
    """
    try:
        ok = math.isfinite(value) and low <= value <= high
    except TypeError:
        ok = False
    if not ok:
        raise InputError(
            f"{name} must be a finite number in [{low:g}, {high:g}]. Received: {name}={value!r}"
        )
