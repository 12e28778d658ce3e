"""`advseg train` end to end: outputs, MLflow runs, resume after a kill, failures."""

from __future__ import annotations

import sys

import pytest

ADVSEG = [sys.executable, "-m", "keras_advseg.cli"]


def test_learning_rate_schedules():
    from keras_advseg.config import TrainConfig
    from keras_advseg.training import learning_rate

    assert learning_rate(TrainConfig(lr=1e-3), steps_per_epoch=10) == 1e-3
    config = TrainConfig.from_preset("quick", epochs=4, lr=1e-3)
    assert config.lr_schedule == "cosine"
    schedule = learning_rate(config, steps_per_epoch=10)
    values = [float(schedule(step)) for step in (0, 20, 40)]
    assert values == pytest.approx(
        [1e-3, 0.5 * (1e-3 + 1e-5), 1e-5], rel=1e-4
    )  # halfway, then 1 % of lr
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="step")
