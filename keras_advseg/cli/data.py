"""``advseg data``: make, inspect and prepare datasets."""

from __future__ import annotations

import json
from pathlib import Path

import click

from keras_advseg import config as cfg
from keras_advseg.cli.output import friendly_errors
from keras_advseg.cli_args import fraction_option, out_option, parse_shape, seed_option
from keras_advseg.io import plural


@click.group()
def data():
    """Make, inspect and prepare datasets."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=40, help="Number of subjects.")
@click.option(
    "--voxel-mm",
    type=click.FloatRange(min=0.5, max=8.0),
    default=2.0,
    help="Isotropic voxel size in millimetres (MNI152 at 2 mm is 99x117x95).",
)
@seed_option("Seed; the same seed gives identical volumes.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Parallel processes.")
@click.option(
    "--preview",
    is_flag=True,
    help="Also write OUT/preview.png: mid-tumour axial slices with labels.",
)
@friendly_errors
def data_synth(out: Path, n: int, voxel_mm: float, seed: int, workers: int, preview: bool):
    """Write a BraTS-2021-layout phantom dataset built from MNI152 anatomy to OUT.

    Existing subjects in OUT are kept, so an interrupted run resumes.
    """
    from keras_advseg.data.phantom import PhantomConfig, save_preview, synthesize_dataset

    folders = synthesize_dataset(
        out, n, seed=seed, config=PhantomConfig(voxel_mm=voxel_mm), workers=workers
    )
    click.echo(f"wrote {plural(len(folders), 'subject')} to {out}")
    if preview:
        click.echo(f"preview: {save_preview(out, out / 'preview.png')}")


@data.command("prepare")
@click.argument("root", type=click.Path(path_type=Path))
@out_option("Cache folder for the prepared volumes.")
@click.option(
    "--shape",
    type=str,
    default="128",
    help="Target shape in voxels: one size (128) or three (128,128,96). Each must be "
    "divisible by 16 for the default 5-level UNet.",
)
@click.option("--n4/--no-n4", default=True, help="N4 bias-field correction (SimpleITK).")
@click.option(
    "--n4-shrink", type=click.IntRange(min=1), default=4, help="Shrink factor of the N4 estimate."
)
@click.option(
    "--normalization",
    type=click.Choice(cfg.NORMALIZATIONS),
    default="global",
    help="global: per-modality mean/std over the training split (paper); volume: per-volume "
    "z-score.",
)
@fraction_option("--test-fraction", "Share of labelled subjects held out for testing.", default=0.2)
@seed_option("Seed of the train/test split.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Parallel processes.")
@friendly_errors
def data_prepare(
    root: Path,
    out: Path,
    shape: str,
    n4: bool,
    n4_shrink: int,
    normalization: str,
    test_fraction: float,
    seed: int,
    workers: int,
):
    """Preprocess the dataset under ROOT (any supported layout) into a cache.

    N4 bias correction, crop to the brain, resize (linear for images, nearest
    for labels), standardisation statistics from the training split, and a
    deterministic train/test split. Re-running resumes; a changed
    configuration re-prepares.
    """
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset

    config = PrepareConfig(
        shape=parse_shape(shape),
        n4=n4,
        n4_shrink=n4_shrink,
        normalization=normalization,
        test_fraction=test_fraction,
        seed=seed,
    )
    prepared = prepare_dataset(root, out, config, workers=workers)
    click.echo(
        f"prepared {plural(len(prepared.ids('all')), 'subject')} into {out} "
        f"(train {len(prepared.train_ids)}, test {len(prepared.test_ids)}, shape {prepared.shape})"
    )


@data.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@friendly_errors
def data_info(path: Path):
    """Describe a raw dataset folder or a prepared cache at PATH, as JSON."""
    from keras_advseg.data.prepare import describe

    click.echo(json.dumps(describe(path), indent=2))


COMMANDS = (data,)
