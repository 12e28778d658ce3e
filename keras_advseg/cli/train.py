"""``advseg train``: train a network, with or without a defense, tracked in MLflow."""

from __future__ import annotations

import click

from keras_advseg import config as cfg
from keras_advseg.cli.output import echo_ui, exit_1_on, friendly_errors
from keras_advseg.cli.train_options import train_options
from keras_advseg.cli_args import (
    data_option,
    out_option,
    preset_option,
    run_name_option,
    tracking_options,
)
from keras_advseg.errors import ClusterError, TrackingError, TrainingError
from keras_advseg.train_config import DEFENSE_OPTIONS, unused_options


@click.command("train")
@data_option(
    "A raw dataset folder (any supported layout; prepared into OUT/prepared) or a prepared cache."
)
@out_option(
    "Output folder: model.keras (the best epoch by validation Dice), last.keras (the last "
    "epoch), best.keras (the best epoch so far, updated while training runs; model.keras is "
    "its copy at the end), checkpoint/ (to resume)."
)
@preset_option(
    cfg.PRESETS,
    "quick: 32^3, minutes on a CPU; smoke: 16^3, seconds; paper: 128^3 and the paper's "
    "batch/lr/epochs (a GPU job). Options below override the preset.",
)
@train_options
@click.option(
    "--resume", is_flag=True, help="Continue the interrupted run in --out from its last checkpoint."
)
@run_name_option("MODEL-DEFENSE")
@tracking_options()
@friendly_errors
def train_command(data, out, preset, resume, run_name, tracking_uri, experiment, **options):
    """Train a segmentation network, with or without a defense, tracked in MLflow."""
    from keras_advseg.workflows.train import train

    model, defense = options.pop("model"), options.pop("defense")
    given = [name for name, value in options.items() if value is not None]
    for field in unused_options(defense, given):
        flag = "--eps" if field == "adv_eps" else "--" + field.replace("_", "-")
        readers = DEFENSE_OPTIONS.get(field, ("corruptions",))
        raise click.UsageError(
            f"{flag} applies to --defense {' or '.join(readers)}"
            + (" (or with --corruption-rate)" if field == "corruptions" else "")
            + f"; it would change nothing with --defense {defense}"
        )
    config = cfg.TrainConfig.from_preset(preset, model, defense, **options)
    with exit_1_on(TrainingError, TrackingError, ClusterError):
        result = train(
            config,
            data,
            out,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name or f"{model}-{defense}",
            resume=resume,
        )
    click.echo(
        f"saved {result.model_path} (best mean validation Dice {result.best_score:.3f}); "
        f"MLflow run {result.run_id}"
    )
    echo_ui(tracking_uri, experiment)


COMMANDS = (train_command,)
