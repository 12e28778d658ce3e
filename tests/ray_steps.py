"""Steps for the engines' tests: imported by Ray's workers and the local engine's processes, so
nothing from the test suite."""

from __future__ import annotations

import os
import time
from pathlib import Path

from keras_advseg.io import write_text_atomic


def where(folder: Path, name: str) -> None:
    """Writes the Ray node it ran on into ``folder/name``."""
    import ray

    time.sleep(1.0)  # long enough for the other node to take the next step
    write_text_atomic(Path(folder) / name, ray.get_runtime_context().get_node_id())


def die() -> None:
    """A step whose worker dies every time."""
    os._exit(9)


def tracked_sleep(uri: str, marker: Path, seconds: float = 120.0) -> None:
    """An MLflow run that stays open ``seconds``; ``marker`` is written once it is open."""
    from keras_advseg.tracking import tracked_run

    with tracked_run(uri, "tests", run_name="sleeper"):
        write_text_atomic(Path(marker), "open")
        time.sleep(seconds)
