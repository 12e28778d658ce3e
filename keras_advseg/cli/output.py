"""How an ``advseg`` command ends: a one-line error about the input (exit 2), a failure that
is not the input's (exit 1), or success with a pointer to the MLflow UI."""

from __future__ import annotations

import contextlib
import functools

import click


class OneLineError(click.ClickException):
    """A one-line error about the user's input or files; exit status 2."""

    exit_code = 2


def one_line(exc: BaseException) -> str:
    """The first line of an error's message; an OS error as ``FILE: reason``."""
    if isinstance(exc, OSError) and exc.filename is not None:
        target = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return f"{target}: {exc.strerror or type(exc).__name__}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def friendly_errors(fn):
    """Turns the package's own errors and OS errors into :class:`OneLineError` (exit 2), and
    a tracking store that fails mid-command into one line and exit 1.

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from keras_advseg import interrupts
        from keras_advseg.errors import AdvsegError

        try:
            # Ctrl-C or SIGTERM arrived and a library turned it into another error on its way
            # (TensorFlow can): the command was interrupted, and ends as such
            with interrupts.interrupt_on_error():
                return fn(*args, **kwargs)
        except (AdvsegError, OSError) as exc:
            raise OneLineError(one_line(exc)) from None
        except Exception as exc:
            if not _store_failure(exc):
                raise
            # the store failed mid-command (a full disk under SQLite, a server gone): exit 1,
            # as for an unreachable store, in one line
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise click.ClickException(
                f"MLflow tracking store failed: {type(exc).__name__}: {first}"
            ) from None

    return wrapper


def _store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the tracking store (MLflow, its SQL layer, SQLite); only
    modules already imported are consulted."""
    import sys

    kinds = []
    for module, name in (
        ("mlflow.exceptions", "MlflowException"),
        ("sqlalchemy.exc", "SQLAlchemyError"),
        ("sqlite3", "Error"),
    ):
        found = getattr(sys.modules.get(module), name, None)
        if found is not None:
            kinds.append(found)
    return bool(kinds) and isinstance(exc, tuple(kinds))


@contextlib.contextmanager
def exit_1_on(*kinds: type[BaseException]):
    """Errors of ``kinds`` (the store, the cluster or training failed; the input was fine)
    end the command with their message and exit status 1 instead of 2."""
    try:
        yield
    except kinds as exc:
        raise click.ClickException(str(exc)) from None


def echo_ui(tracking_uri: str, experiment: str) -> None:
    """Prints how to open the experiment's runs in the MLflow UI (nothing if the store fails)."""
    from keras_advseg.tracking import ui_lines

    try:
        for line in ui_lines(tracking_uri, experiment):
            click.echo(line.replace("`", ""))
    except Exception:  # the work is done and written; only the pointer to it is missing
        pass


def echo_summary(lines, tracking_uri: str, experiment: str) -> None:
    """Prints a scored workflow's summary lines, then how to open its runs in the MLflow UI."""
    for line in lines:
        click.echo(line)
    echo_ui(tracking_uri, experiment)
