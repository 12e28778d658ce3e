"""``advseg predict``, ``advseg score`` and ``advseg export``: a trained model put to use."""

from __future__ import annotations

from pathlib import Path

import click

from keras_advseg.cli.output import exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    LiveChoice,
    data_option,
    fraction_option,
    out_option,
    renamed_option,
    tracking_options,
)
from keras_advseg.errors import TrackingError


def label_conventions() -> tuple[str, ...]:
    """The label values a segmentation may use, read from the prediction workflow when the
    command runs."""
    from keras_advseg.workflows.predict import LABEL_CONVENTIONS

    return tuple(LABEL_CONVENTIONS)


@click.command("predict")
@click.argument("model_ref", metavar="MODEL")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@out_option(
    "Output folder: <id>.nii.gz label maps in each scan's own grid, affine and header "
    "(and <id>_probabilities.nii.gz with --probabilities)."
)
@click.option(
    "--t1", type=click.Path(dir_okay=False, path_type=Path), help="T1 file (instead of INPUT)."
)
@click.option(
    "--t1gd", type=click.Path(dir_okay=False, path_type=Path), help="T1Gd file (instead of INPUT)."
)
@click.option(
    "--t2", type=click.Path(dir_okay=False, path_type=Path), help="T2 file (instead of INPUT)."
)
@click.option(
    "--flair",
    type=click.Path(dir_okay=False, path_type=Path),
    help="FLAIR file (instead of INPUT).",
)
@click.option(
    "--labels",
    type=LiveChoice(label_conventions),
    default="brats2017",
    help="Label values: brats2017 (0/1/2/4) or brats2023 (0/1/2/3).",
)
@click.option(
    "--probabilities", is_flag=True, help="Also write <id>_probabilities.nii.gz (4-D float)."
)
@click.option(
    "--overwrite", is_flag=True, help="Segment again subjects whose output exists [skip them]."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, help="Processes for preprocessing (N4)."
)
@click.option(
    "--sliding-window",
    is_flag=True,
    help="Segment each cropped scan at its own resolution with overlapping, Gaussian-weighted "
    "tiles of the model's input size [resize it to the input size, as in training].",
)
@fraction_option("--overlap", "Sliding-window tile overlap.", default=0.5)
@tracking_options()
@friendly_errors
def predict_command(
    model_ref,
    input_path,
    out,
    t1,
    t1gd,
    t2,
    flair,
    labels,
    probabilities,
    overwrite,
    workers,
    sliding_window,
    overlap,
    tracking_uri,
    experiment,
):
    """Segment scans with MODEL (a .keras file, run id or runs:/ URI) in their own geometry.

    INPUT is a dataset in any supported layout or one subject folder; or give
    the four modality files. The model's training preprocessing (N4, crop,
    resize, the training split's statistics) is read from the model itself.
    """
    from keras_advseg.tracking import resolve_model_path
    from keras_advseg.workflows.predict import run_predict, subjects_of

    subjects = subjects_of(input_path, t1=t1, t1gd=t1gd, t2=t2, flair=flair)
    with exit_1_on(TrackingError):  # exit 1, as train and evaluate (docs: Reliability)
        model_path = resolve_model_path(model_ref, tracking_uri)
    written = run_predict(
        model_path,
        subjects,
        out,
        labels=labels,
        probabilities=probabilities,
        overwrite=overwrite,
        workers=workers,
        sliding_window=sliding_window,
        overlap=overlap,
        source=input_path,
    )
    skipped = len(subjects) - len(written)
    click.echo(
        f"wrote {len(written)} label maps to {out}"
        + (f" ({skipped} existed, skipped)" if skipped else "")
    )


@click.command("score")
@click.argument("pred_dir", type=click.Path(file_okay=False, path_type=Path))
@data_option("The dataset with the reference segmentations (any supported layout).")
@out_option("Output folder: scores.csv and summary.json.")
@click.option(
    "--labels",
    type=LiveChoice(label_conventions),
    default=None,
    help="Label values of the predictions [brats2023 when they hold 3 and no 4, else brats2017].",
)
@friendly_errors
def score_command(pred_dir, data, out, labels):
    """Dice and 95% Hausdorff distance (mm) of WT/TC/ET per subject, in each scan's own space:
    region-wise, and lesion-wise as BraTS 2023 ranks (missed and spurious lesions score
    Dice 0 and HD95 374 mm)."""
    from keras_advseg.workflows.predict import run_score, summary_line

    click.echo(summary_line(run_score(pred_dir, data, out, labels=labels)))


@click.command("export")
@click.argument(
    "model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False, path_type=Path)
)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--output-temperature",
    "temperature",
    type=click.FloatRange(1e-6, 1e6),
    default=1.0,
    help="Softmax temperature of the exported probabilities (deploy distilled models at 1).",
)
@renamed_option(
    "--temperature", "--output-temperature", "temperature", type=click.FloatRange(1e-6, 1e6)
)
@click.option(
    "--with-preprocessing",
    is_flag=True,
    help="The signature takes raw intensities (cropped and resized) and the brain mask (resized "
    "by nearest neighbour; keras_advseg.inference.crop_resize_and_mask) and standardises them "
    "in the graph with the statistics stored in the model.",
)
@friendly_errors
def export_command(model_path: Path, out_dir: Path, temperature: float, with_preprocessing: bool):
    """Export MODEL.keras as a TensorFlow SavedModel (saved_model.pb, variables/) in OUT_DIR.

    Its `serve` signature takes a preprocessed float32 batch (B, X, Y, Z, 4)
    and returns `probabilities` and the BraTS `labels` map (0/1/2/4).
    """
    from keras_advseg.export import export_savedmodel, load_model, load_preprocessing
    from keras_advseg.io import refuse_inputs_in_output

    refuse_inputs_in_output(out_dir, {"model": model_path}, option="OUT_DIR")
    preprocessing = load_preprocessing(model_path) if with_preprocessing else None
    export_savedmodel(
        load_model(model_path), out_dir, temperature=temperature, preprocessing=preprocessing
    )
    click.echo(f"exported {model_path} to {out_dir} (signature 'serve')")


COMMANDS = (predict_command, score_command, export_command)
