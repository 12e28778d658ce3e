"""The single source of choices and defaults, and that the CLI reads it."""

from __future__ import annotations

import click
import pytest

from keras_advseg import config as cfg
from keras_advseg.cli import main


def test_presets_layer_model_and_defense_values():
    config = cfg.TrainConfig.from_preset(
        "quick", "unet3d", "distillation", temperature=20.0, epochs=None
    )
    assert (config.shape, config.base_filters, config.epochs, config.lr_schedule) == (
        32,
        8,
        15,
        "cosine",
    )
    assert (
        config.temperature == 20.0 and config.label_temperature == 20.0 and config.preset == "quick"
    )
    assert cfg.TrainConfig.from_preset("quick", "unet2d").batch_size == 32
    assert cfg.TrainConfig.from_preset("paper", "unet3d", "adversarial").epochs == 400
    tags = cfg.TrainConfig.from_preset("smoke", defense="adversarial", adv_eps=0.02).tags()
    assert tags == {
        "defense": "adversarial",
        "model": "unet3d",
        "temperature": "1.0",
        "adv_eps": "0.02",
        "preset": "smoke",
    }
    assert set(tags) == set(cfg.TRAINING_TAGS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "unet4d"}, "model must be one of"),
        ({"adv_mode": "mixed"}, "adv_mode must be one of"),
        ({"epochs": 0}, "epochs and batch_size must be >= 1"),
        ({"temperature": 0}, "temperature must be positive"),
        ({"init": "teacher"}, "needs defense='distillation'"),
    ],
)
def test_train_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cfg.TrainConfig(**kwargs)
    with pytest.raises(ValueError, match="preset must be one of"):
        cfg.TrainConfig.from_preset("fast")


def test_eval_config_validation_names_no_cli_flag():
    with pytest.raises(ValueError, match=r"^attacks must be among"):
        cfg.EvalConfig(attacks=("fgsm", "deepfool"))
    with pytest.raises(ValueError, match=r"^steps must be >= 1"):
        cfg.EvalConfig(steps=0)
    with pytest.raises(ValueError, match=r"eps values must be in \[0, 1\]"):
        cfg.EvalConfig(eps_sweep=(-0.1,))
    assert cfg.EvalConfig(eps=(0.05, 0.1)).budgets_iterative == (0.05, 0.1)
    assert cfg.EvalConfig(eps=(0.05, 0.1), iterative_eps=(0.05,)).budgets_iterative == (0.05,)


def test_study_model_names():
    names = [m.name for m in cfg.STUDIES["quick"].models3d]
    assert names == [
        "unet3d-none",
        "unet3d-distillation-T20",
        "unet3d-adversarial-eps0.05",
        "unet3d-fast-eps0.05",
        "unet3d-gaussian-sigma0.5",
        "unet3d-none-control",
    ]
    assert cfg.PAPER_EPS_GRID[-1] == 0.01 and len(cfg.PAPER_EPS_GRID) == 11


CONFIG_NAMES = (
    "ADVERSARIAL_DEFENSES ADVERSARIAL_MODES ATTACKS AUDIT_ITEMS AuditConfig CORRUPTIONS "
    "DEFAULT_ENSEMBLE DEFAULT_EXPERIMENT DEFAULT_TRACKING_URI DEFENSES DICE_METRICS EPS_CURVE "
    "EvalConfig InputError LOSSES LR_SCHEDULES MIN_CLEAN_DICE MODELS ModelSpec NORMALIZATIONS "
    "PAPER_EPS_GRID PRECISIONS PRESETS QUALITY_METRICS REGIONS REGION_CLASS_INDICES "
    "REGION_LABELS REGION_NAMES STRATEGIES STUDIES Study TRAINING_TAGS TrainConfig "
    "VAFA_SETTINGS VAFA_SETTING_NAMES VafaSetting attack_display canonical_attacks check_range "
    "fitting_block"
).split()
"""Every public name of ``keras_advseg.config`` before its ideas moved to their own modules."""


def test_config_still_holds_every_name_its_modules_define():
    from keras_advseg import study_presets, train_config, vocabulary

    assert [name for name in CONFIG_NAMES if not hasattr(cfg, name)] == []
    assert set(CONFIG_NAMES) <= set(cfg.__all__) and set(cfg.__all__) <= set(dir(cfg))
    # one object each, defined once
    assert cfg.STUDIES is study_presets.STUDIES and cfg.Study is study_presets.Study
    assert cfg.TrainConfig is train_config.TrainConfig and cfg.PRESETS is train_config.PRESETS
    assert cfg.REGIONS is vocabulary.REGIONS and cfg.VAFA_SETTINGS is vocabulary.VAFA_SETTINGS
    assert cfg.STUDIES["paper"].audit == cfg.AuditConfig()
    assert cfg.fitting_block((16, 16, 16), 32) == 16 and cfg.fitting_block((24, 32, 32), 32) == 8


def options(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in main.commands[command].params if isinstance(p, click.Option)}


def test_cli_choices_and_defaults_come_from_config():
    train, evaluate = options("train"), options("evaluate")
    defaults = cfg.TrainConfig()
    assert tuple(train["model"].type.choices) == cfg.MODELS
    assert tuple(train["defense"].type.choices) == cfg.DEFENSES
    assert tuple(train["strategy"].type.choices) == cfg.STRATEGIES
    assert tuple(train["precision"].type.choices) == cfg.PRECISIONS
    assert tuple(train["loss"].type.choices) == cfg.LOSSES
    assert tuple(train["adv_mode"].type.choices) == cfg.ADVERSARIAL_MODES
    assert tuple(train["preset"].type.choices) == tuple(cfg.PRESETS)
    assert (train["seed"].default, train["precision"].default) == (
        defaults.seed,
        defaults.precision,
    )
    assert tuple(evaluate["attacks"].type.choices) == cfg.ATTACKS.names()
    assert evaluate["steps"].default == cfg.EvalConfig().steps
    assert train["tracking_uri"].default == cfg.DEFAULT_TRACKING_URI
    assert train["experiment"].default == cfg.DEFAULT_EXPERIMENT
    assert tuple(options("reproduce")["preset"].type.choices) == tuple(cfg.STUDIES)
