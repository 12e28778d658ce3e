"""``advseg card`` and ``advseg leaderboard``: one robustness card per model, and the models'
cards ranked side by side."""

from __future__ import annotations

from pathlib import Path

import click

from keras_advseg.cli.output import echo_summary, exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    LiveChoice,
    data_option,
    out_option,
    reference_option,
    renamed_notice,
    renamed_option,
    seed_option,
    tracking_options,
)
from keras_advseg.errors import TrackingError


def card_plans() -> tuple[str, ...]:
    """The names of the card's plans, read from the card when the command runs."""
    from keras_advseg.workflows.card import CARD_PLANS

    return tuple(CARD_PLANS)


@click.command("card")
@click.argument("model_ref", metavar="MODEL")
@data_option("The raw dataset (its test split; the corruptions need the raw scans).")
@out_option(
    "Card folder: card.json, card.md, card.html, and each axis's own files in "
    "adversarial/, corruptions/, certified/, audit/ (an axis already there with the same plan "
    "is reused)."
)
@click.option(
    "--plan",
    type=LiveChoice(card_plans),
    default="quick",
    show_default=True,
    help="What the card runs: attack steps and ensemble, corruptions and severities, sigmas and "
    "samples, subjects; the card states its plan and what it can therefore claim.",
)
@renamed_option("--budget", "--plan", "plan", notice=renamed_notice, type=LiveChoice(card_plans))
@reference_option(
    "An undefended model (file, run id or runs:/ URI): the audit's transfer check and the "
    "corruptions' mCE."
)
@click.option(
    "--preprocessing",
    "preprocessing_json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="For a model trained elsewhere: its preprocessing as JSON (shape, n4, n4_shrink, "
    "margin, normalization, mean, std; see the docs); the card writes and uses a copy "
    "OUT/model.keras that carries it.",
)
@seed_option("Seed of the attacks, corruptions and noise.", 0)
@tracking_options()
@friendly_errors
def card_command(
    model_ref,
    data,
    out,
    plan,
    reference_ref,
    preprocessing_json,
    seed,
    tracking_uri,
    experiment,
):
    """One robustness card for MODEL: clean, attacked, corrupted, certified and audited, in
    card.json, card.md and a self-contained card.html.

    Each axis runs once per model file, data, seed, reference and plan: one already in OUT,
    or logged by an earlier card run in the tracking store, is reused.
    """
    from keras_advseg.workflows.card import run_card, summary_lines

    with exit_1_on(TrackingError):
        card = run_card(
            model_ref,
            data,
            out,
            plan=plan,
            reference_ref=reference_ref,
            preprocessing_json=preprocessing_json,
            seed=seed,
            tracking_uri=tracking_uri,
            experiment=experiment,
            say=lambda line: click.echo(line, err=True),
        )
    echo_summary(summary_lines(card, out), tracking_uri, experiment)


@click.command("leaderboard")
@click.argument("card_dirs", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@out_option("Output folder: leaderboard.md, leaderboard.csv, fig_leaderboard.png.")
@click.option(
    "--from-mlflow",
    is_flag=True,
    help="Rank the cards logged to the tracking store (every card model of --experiment, "
    "oldest first, the first the reference) instead of CARD_DIR folders; they are downloaded "
    "into OUT/cards/.",
)
@tracking_options()
@friendly_errors
def leaderboard_command(card_dirs, out, from_mlflow, tracking_uri, experiment):
    """Rank the models of CARD_DIR... (folders written by advseg card), or with --from-mlflow
    the cards in the tracking store, on every axis, with paired tests against the first where
    the cards share subjects."""
    from keras_advseg.errors import InputError
    from keras_advseg.workflows.leaderboard import run_leaderboard

    if from_mlflow == bool(card_dirs):
        raise InputError("leaderboard takes CARD_DIR folders or --from-mlflow, one of the two")
    if from_mlflow:
        from keras_advseg.io import ensure_writable_folder
        from keras_advseg.workflows.card.logged_model import cards_from_tracking

        with exit_1_on(TrackingError):
            card_dirs = cards_from_tracking(
                tracking_uri, experiment, ensure_writable_folder(out) / "cards", say=click.echo
            )
    result = run_leaderboard(list(card_dirs), out, say=click.echo)
    click.echo((Path(out) / "leaderboard.md").read_text().rstrip())
    click.echo(f"wrote {', '.join(str(p) for p in result['written'])}")


@click.command("card-export")
@click.argument("card_dir", metavar="CARD", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "format_",
    type=click.Choice(["hf"]),
    default="hf",
    show_default=True,
    help="hf: a Hugging Face model card (README.md with model-index metadata, and "
    ".eval_results/ with --dataset-id).",
)
@out_option(
    "Folder to write README.md (and .eval_results/keras-advseg.yaml) into: a local copy of the "
    "model repository, or a new folder. Nothing is uploaded."
)
@click.option("--model-name", default=None, help="The model's name (default: its folder's).")
@click.option(
    "--dataset-name", default=None, help="The dataset's name (default: from the card's data)."
)
@click.option(
    "--dataset-id",
    default=None,
    help="The Hub id of the benchmark dataset the numbers belong to; the Hub's .eval_results/ "
    "file needs one (without it, only README.md is written).",
)
@friendly_errors
def card_export_command(card_dir, format_, out, model_name, dataset_name, dataset_id):
    """Write the card in CARD (a folder written by advseg card) where models are published: a
    Hugging Face model card with one metric per headline number."""
    from keras_advseg.workflows.card.hub import write_hub_card

    written = write_hub_card(
        card_dir, out, model_name=model_name, dataset_name=dataset_name, dataset_id=dataset_id
    )
    if not dataset_id:
        click.echo("no --dataset-id: README.md only (the Hub's .eval_results/ needs a dataset id)")
    click.echo(f"wrote {', '.join(str(p) for p in written)}")


COMMANDS = (card_command, leaderboard_command, card_export_command)
