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


def test_build_trainer_maps_the_robust_defenses():
    from keras_advseg.config import TrainConfig
    from keras_advseg.defenses import FastTrainer, PGDTrainer, TradesTrainer
    from keras_advseg.models import unet3d
    from keras_advseg.training.fit import build_trainer

    network = unet3d((16, 16, 16, 4), base_filters=2, depth=2)
    pgd = build_trainer(TrainConfig(defense="pgd", adv_eps=0.03, adv_steps=5), network)
    assert type(pgd) is PGDTrainer and (pgd.eps, pgd.steps, pgd.beta) == (0.03, 5, 0.5)
    fast = build_trainer(TrainConfig(defense="fast"), network)
    assert type(fast) is FastTrainer and (fast.steps, fast.alpha, fast.beta) == (1, 0.0625, 0.0)
    trades = build_trainer(TrainConfig(defense="trades", trades_beta=2.0), network)
    assert type(trades) is TradesTrainer and trades.beta == 2.0
    assert TrainConfig.from_preset("paper", "unet3d", "pgd").adv_steps == 7
    assert TrainConfig.from_preset("quick", "unet3d", "pgd").adv_steps == 3
