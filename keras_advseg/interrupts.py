"""Interrupts that survive the code they arrive in.

Ctrl-C (SIGINT), SIGTERM (``timeout``, Slurm, Kubernetes) and Ray's cancellation (a simulated
SIGINT) raise ``KeyboardInterrupt`` wherever the process happens to be. Library code does not
always let it through: TensorFlow looks up a dtype's range inside a bare ``except`` and raises
``TypeError`` instead, and Ray turns an interrupt during ``ray.wait`` into a status that a wait
completing at the same moment drops. A :class:`SignalRecord` remembers the signal, so that what
follows it is still treated as the interruption it is: the MLflow run ends KILLED
(:func:`~keras_advseg.tracking.tracked_run`), the command ends as interrupted without a
traceback (:func:`~keras_advseg.cli.output.friendly_errors`), and a loop can re-raise an
interrupt that was swallowed (:meth:`SignalRecord.check`).
"""

from __future__ import annotations

import signal
import threading

_ACTIVE: list[SignalRecord] = []
"""The records entered in this process, innermost last."""


class SignalRecord:
    """While entered, each of ``signals`` is recorded, then raised as ``KeyboardInterrupt``.

    Outside the main thread (where no signal handler can be set) it records nothing.

    Args:
        signals: The signals to handle (default: SIGINT and SIGTERM).
    """

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._checked = False
        self._previous: dict = {}

    def __enter__(self) -> SignalRecord:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *_) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def _on_signal(self, signum, frame) -> None:
        self.received = signum
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
