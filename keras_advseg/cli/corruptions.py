"""``advseg corruptions``: the corruption benchmark, a model scored under corruptions that
simulate MRI artifacts and operator errors."""

from __future__ import annotations

from pathlib import Path

import click

from keras_advseg import config as cfg
from keras_advseg.cli.output import echo_summary, exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    model_and_data,
    parse_severities,
    run_name_option,
    seed_option,
    split_option,
    tracking_options,
)
from keras_advseg.corruptions.registry import CORRUPTIONS
from keras_advseg.errors import InputError, TrackingError

OLD_SPELLING = "advseg evaluate --corruptions"
"""The spelling of the last release, still accepted by ``advseg evaluate`` for one release."""


def corruption_options(*, hidden: bool = False):
    """The benchmark's own options: ``--corruptions``, ``--severities``, ``--reference``,
    ``--modalities``, ``--workers`` and ``--corruption-cache``.

    Args:
        hidden: The spellings ``advseg evaluate`` keeps for one release: hidden, and ``None``
            unless given (so that the command sees which were given).
    """
    specs = (
        (
            ("--corruptions",),
            {
                "default": "all",
                "help": "What to score: all, scanner, operator or a list ("
                + ", ".join(CORRUPTIONS.names())
                + ").",
            },
        ),
        (
            ("--severities",),
            {
                "default": "1-5",
                "help": "Corruption severities: 1-5, 3 or 1,3,5 (the clean scans are always "
                "scored).",
            },
        ),
        (
            ("--reference", "reference_ref"),
            {
                "default": None,
                "help": "A reference model (file, run id or runs:/ URI) scored on the same scans, "
                "for the corruption error mCE.",
            },
        ),
        (
            ("--modalities",),
            {
                "default": None,
                "help": "The sequences the corruptions may touch, e.g. flair or t1,t1gd [all].",
            },
        ),
        (
            ("--workers",),
            {
                "type": click.IntRange(min=1),
                "default": 1,
                "help": "Processes that prepare the corrupted scans (N4, k-space).",
            },
        ),
        (
            ("--corruption-cache",),
            {
                "type": click.Path(file_okay=False, path_type=Path),
                "default": None,
                "help": "Folder of prepared corrupted scans, shared by every model scored on "
                "them [OUT/corrupted].",
            },
        ),
    )

    def decorate(fn):
        for names, spec in reversed(specs):
            if hidden:
                spec = {
                    **spec,
                    "default": None,
                    "hidden": True,
                    "help": "Deprecated: use advseg corruptions.",
                }
            fn = click.option(*names, **spec)(fn)
        return fn

    return decorate


@click.command("corruptions")
@model_and_data(
    "Output folder: corruptions.csv, corruption_tests.csv, corruption_summary.json, "
    "fig_corruption_severity.png, fig_corruption_grid.png (corruptions_reference.csv with "
    "--reference) and the prepared scans in corrupted/."
)
@split_option("Subjects to score.")
@corruption_options()
@seed_option("Seed of the corruptions' random draws.", cfg.EvalConfig().seed)
@run_name_option("eval-corruptions")
@click.option(
    "--native",
    is_flag=True,
    help="Also score Dice and HD95 (mm) in each scan's own space: the prediction mapped back "
    "to the raw scan's grid.",
)
@tracking_options()
@friendly_errors
def corruptions_command(
    model_ref,
    data,
    out,
    corruptions,
    severities,
    modalities,
    corruption_cache,
    tracking_uri,
    experiment,
    **options,
):
    """Score MODEL (a .keras file, an MLflow run id or runs:/ URI) under corruptions that
    simulate MRI artifacts and operator errors: each raw test scan is corrupted in its own
    space and goes through the model's stored preprocessing."""
    from keras_advseg.corruptions import parse_corruptions
    from keras_advseg.corruptions.core import check_modalities
    from keras_advseg.workflows.corruptions import run_corruption_evaluation, summary_lines

    try:
        names = parse_corruptions(corruptions)
        levels = parse_severities(severities)
        sequences = check_modalities(modalities) if modalities else None
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    with exit_1_on(TrackingError):
        summary = run_corruption_evaluation(
            model_ref,
            data,
            out,
            corruptions=names,
            severities=levels,
            modalities=sequences,
            cache=corruption_cache,
            tracking_uri=tracking_uri,
            experiment=experiment,
            **options,  # split, reference_ref, workers, seed, run_name, native: named as there
        )
    echo_summary(summary_lines(summary, out), tracking_uri, experiment)


COMMANDS = (corruptions_command,)
