"""Interrupts that survive the code they arrive in.

Ctrl-C (SIGINT), SIGTERM (``timeout``, Slurm, Kubernetes) and Ray's cancellation (a simulated
SIGINT) raise ``KeyboardInterrupt`` wherever the process happens to be. Library code does not
always let it through: TensorFlow looks up a dtype's range inside a bare ``except`` and raises
``TypeError`` instead, and Ray turns an interrupt during ``ray.wait`` into a status that a wait
completing at the same moment drops. A :class:`SignalRecord` remembers the signal, so that what
follows it is still treated as the interruption it is: the MLflow run ends KILLED
(:func:`~keras_advseg.tracking.tracked_run`), the command ends as interrupted without a
traceback (:func:`interrupt_on_error`, used by the CLI), and a loop can re-raise an interrupt
that was swallowed (:meth:`SignalRecord.check`).
"""

from __future__ import annotations

import contextlib
import signal
import threading

_ACTIVE: list[SignalRecord] = []
"""The records entered in this process, innermost last."""


class SignalRecord:
    """While entered, each of ``signals`` is recorded, then raised as ``KeyboardInterrupt``.

    Outside the main thread (where no signal handler can be set) it records nothing. On exit
    the previous handlers come back, and a signal received is passed to the enclosing record.

    Args:
        signals: The signals to handle (default: SIGINT and SIGTERM).
        once: Raise only the first signal; later ones are recorded, so that the clean-up the
            first one started (ending the MLflow run, removing temporaries) is not cut short.

    Raises:
        RuntimeError: the record is entered a second time.
    """

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM), *, once: bool = False):
        self.signals = tuple(signals)
        self.once = once
        self.received: int | None = None
        self._checked = False
        self._previous: dict = {}
        self._entered = False

    def __enter__(self) -> SignalRecord:
        if self._entered:
            raise RuntimeError("a SignalRecord is entered once")
        self._entered = True
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *_) -> None:
        for signum, previous in self._previous.items():
            # None: a handler set outside Python, which cannot be put back
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous = {}
        if self in _ACTIVE:
            index = _ACTIVE.index(self)
            if index > 0 and self.received is not None and _ACTIVE[index - 1].received is None:
                _ACTIVE[index - 1].received = self.received
            _ACTIVE.remove(self)

    def _on_signal(self, signum, frame) -> None:
        first = self.received is None
        self.received = signum
        if first or not self.once:
            raise KeyboardInterrupt(f"stopped by signal {signum}")

    def check(self) -> None:
        """Raises the interrupt of a signal received since the record was entered, once.

        Raises:
            KeyboardInterrupt: one was received (and perhaps swallowed on its way).
        """
        if self.received is not None and not self._checked:
            self._checked = True
            raise KeyboardInterrupt(f"stopped by signal {self.received}")


def received() -> int | None:
    """The signal an entered :class:`SignalRecord` of this process received, or None."""
    for record in reversed(_ACTIVE):
        if record.received is not None:
            return record.received
    return None


@contextlib.contextmanager
def interrupt_on_error():
    """Inside: an exception raised after a recorded signal is raised as the
    ``KeyboardInterrupt`` it stands for (its cause the exception); any other passes unchanged.

    Raises:
        KeyboardInterrupt: an exception followed a signal an entered record received.
    """
    try:
        yield
    except Exception as exc:
        signum = received()
        if signum is None:
            raise
        raise KeyboardInterrupt(f"stopped by signal {signum}") from exc


@contextlib.contextmanager
def ignored(signals=(signal.SIGINT, signal.SIGTERM)):
    """Inside: ``signals`` are ignored (in the main thread; elsewhere nothing changes), so that
    a second Ctrl-C does not cut short the clean-up the first one started."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
