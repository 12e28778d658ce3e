"""The package's own error types: what the CLI turns into one line, everything else is a bug.

Every error caused by the user's input or by an unusable file derives from
:class:`AdvsegError`; its message names the file or option and says what was
expected. The CLI prints these (and operating-system errors) as one line and
exits with status 2; any other exception is a genuine bug and keeps its traceback.
"""

from __future__ import annotations


class AdvsegError(Exception):
    """Base of the errors the package raises for bad input or an unusable state."""


class InputError(AdvsegError, ValueError):
    """A value, option, configuration or reference that cannot be used."""
