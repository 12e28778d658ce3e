"""``advseg certify``: certified segmentation by randomized smoothing."""

from __future__ import annotations

import click

from keras_advseg.cli.output import echo_summary, exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    count_option,
    model_and_data,
    parse_floats,
    run_name_option,
    seed_option,
    split_option,
    subjects_option,
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
@count_option(
    "--n",
    100,
    "Noisy samples counted per volume for the test (SegCertify: 100 to 1000).",
    show_default=True,
)
@count_option("--n0", 10, "Noisy samples that choose each voxel's class.", show_default=True)
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
@count_option(
    "--batch-size",
    None,
    "Noisy copies per forward pass [default: the most (up to 32) that fit in 40% of the memory "
    "available; a larger one is refused, naming the largest that fits]. Certificates do not "
    "depend on it.",
)
@split_option("Subjects.")
@subjects_option("Certify", 0)
@seed_option("Seed of the noise.", 0)
@run_name_option("certify")
@tracking_options()
@friendly_errors
def certify_command(model_ref, data, out, sigmas, tracking_uri, experiment, **options):
    """Certify MODEL's segmentation by randomized smoothing: per voxel, a label that provably
    cannot change within an l2 radius, or an abstention (SegCertify, for volumes); and per
    BraTS region (WT, TC, ET), whether the voxel is provably inside or outside it."""
    from keras_advseg.workflows.certify import run_certification, summary_lines

    levels = parse_floats(sigmas, "--sigma")
    if not levels or min(levels) <= 0:
        raise click.UsageError(f"--sigma must be positive numbers. Received: {sigmas!r}")
    with exit_1_on(TrackingError):
        # the other options are named as run_certification's arguments and CertifyConfig's fields
        summary = run_certification(
            model_ref,
            data,
            out,
            sigmas=levels,
            tracking_uri=tracking_uri,
            experiment=experiment,
            **options,
        )
    echo_summary(summary_lines(summary, out), tracking_uri, experiment)


COMMANDS = (certify_command,)
