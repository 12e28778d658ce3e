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
