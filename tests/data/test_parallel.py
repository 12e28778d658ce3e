"""progress_map: the same results in one process and in several."""

from __future__ import annotations

import pytest

from keras_advseg.data.parallel import progress_map


def square(value: int) -> int:
    return value * value


def fail_on_three(value: int) -> int:
    if value == 3:
        raise ValueError("three is bad")
    return value


@pytest.mark.parametrize("workers", [1, 2])
def test_every_item_once(workers):
    results = list(progress_map(square, range(6), workers=workers, disable=True))
    assert sorted(results) == [0, 1, 4, 9, 16, 25]


@pytest.mark.parametrize("workers", [1, 2])
def test_errors_reach_the_caller(workers):
    with pytest.raises(ValueError, match="three is bad"):
        list(progress_map(fail_on_three, range(6), workers=workers, disable=True))


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers must be >= 1"):
        list(progress_map(square, [1], workers=0))


FORK_AFTER_OPENMP = """
import numpy as np
from keras_advseg.corruptions.kspace import motion
from keras_advseg.data.parallel import progress_map

volume = np.random.default_rng(0).uniform(0, 1, (24, 20, 16))

def moved(seed):
    rng = np.random.default_rng(seed)
    out = motion(volume, spacing=(1, 1, 1), rng=rng, degrees=3, translation_mm=2, movements=4)
    return float(out.sum())

if __name__ == "__main__":
    here = [moved(s) for s in range(2)]  # OpenMP's threads now run in this process
    there = sorted(progress_map(moved, range(2), workers=2, disable=True))
    assert there == sorted(here), (there, here)
    print("done")
"""


def test_workers_start_cleanly_after_this_process_ran_openmp(tmp_path):
    """Motion's non-uniform FFT runs OpenMP threads; workers forked from a process that ran
    them waited forever on the first parallel region (the corruption cache after a motion in
    the parent). They now start as fresh interpreters."""
    import os
    import subprocess
    import sys

    script = tmp_path / "fork_after_openmp.py"
    script.write_text(FORK_AFTER_OPENMP)
    environment = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=environment
    )
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]
