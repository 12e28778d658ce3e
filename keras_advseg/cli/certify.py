"""``advseg certify``: certified segmentation by randomized smoothing."""

from __future__ import annotations

import click

from keras_advseg.cli.output import echo_ui, exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    model_and_data,
    parse_floats,
    seed_option,
    split_option,
    tracking_options,
)
from keras_advseg.errors import TrackingError
from keras_advseg.vocabulary import CORRECTIONS


@click.command("certify")
@model_and_data(
    "Output folder: certified.csv (per subject and sigma), certify_summary.json, "
    "fig_certified.png, fig_certificate.png."
)
@click.option(
    "--sigma",
    "sigmas",
    default="0.25,0.5,1",
    show_default=True,
    help="Noise standard deviations in the model's input units: standardised intensities, "
    "multiples of each sequence's tissue standard deviation, the same noise for every volume "
    "(one value or a list); each certifies l2 radius sigma * Phi^-1(tau) in the same units.",
)
@click.option(
    "--n",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Noisy samples counted per volume for the test (SegCertify: 100 to 1000).",
)
@click.option(
    "--n0",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Noisy samples that choose each voxel's class.",
)
@click.option(
    "--tau",
    type=click.FloatRange(0.5, 1, max_open=True),
    default=0.75,
    show_default=True,
    help="The class probability a voxel must provably exceed; a larger tau certifies a larger "
    "radius and abstains more.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.001,
    show_default=True,
    help="Family-wise error over all voxels of a volume (and, for the region certificates, over "
    "all voxels and regions).",
)
@click.option(
    "--correction",
    type=click.Choice(CORRECTIONS),
    default="holm",
    show_default=True,
    help="Multiple-testing correction over the voxels (Holm certifies at least as many).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Noisy copies per forward pass.",
)
@split_option("Subjects.")
@click.option(
    "--subjects",
    type=click.IntRange(min=0),
    default=0,
    help="Certify the first N subjects of the split (0: all).",
)
@seed_option("Seed of the noise.", 0)
@click.option("--run-name", help="MLflow run name [certify].")
@tracking_options()
@friendly_errors
def certify_command(
    model_ref,
    data,
    out,
    sigmas,
    n,
    n0,
    tau,
    alpha,
    correction,
    batch_size,
    split,
    subjects,
    seed,
    run_name,
    tracking_uri,
    experiment,
):
    """Certify MODEL's segmentation by randomized smoothing: per voxel, a label that provably
    cannot change within an l2 radius, or an abstention (SegCertify, for volumes); and per
    BraTS region (WT, TC, ET), whether the voxel is provably inside or outside it."""
    from keras_advseg.workflows.certify import run_certification, summary_lines

    levels = parse_floats(sigmas, "--sigma")
    if not levels or min(levels) <= 0:
        raise click.UsageError(f"--sigma must be positive numbers. Received: {sigmas!r}")
    with exit_1_on(TrackingError):
        summary = run_certification(
            model_ref,
            data,
            out,
            sigmas=levels,
            n=n,
            n0=n0,
            tau=tau,
            alpha=alpha,
            correction=correction,
            batch_size=batch_size,
            seed=seed,
            split=split,
            subjects=subjects,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
        )
    for line in summary_lines(summary, out):
        click.echo(line)
    echo_ui(tracking_uri, experiment)


COMMANDS = (certify_command,)
