"""Segmenting scans (``advseg predict``) and scoring segmentations in native space (``advseg score``).

``predict`` applies exactly the preprocessing the model was trained with (stored
in its ``.keras`` file), runs it, maps the probabilities back onto each scan's
own voxel grid and orientation, and writes ``OUT/<id>.nii.gz`` with the source
affine and header. ``score`` compares such label maps with reference
segmentations: Dice and HD95 (mm) of WT, TC and ET per subject, region-wise and
BraTS 2023 lesion-wise (:mod:`keras_advseg.lesionwise`).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from keras_advseg.config import REGIONS
from keras_advseg.data import DataError, Subject, discover_subjects
from keras_advseg.data.parallel import progress_map
from keras_advseg.data.subject import BRATS2023_LABELS, IDENTITY_LABELS
from keras_advseg.errors import InputError
from keras_advseg.inference import (
    Preprocessing,
    check_model_fits,
    preprocess,
    probabilities_to_label_map,
    to_native,
)
from keras_advseg.io import (
    atomic_path,
    ensure_writable_folder,
    plural,
    refuse_inputs_in_output,
    rows_to_csv,
    write_json_atomic,
    write_text_atomic,
)
from keras_advseg.lesionwise import LESION_COUNTS, LESION_METRICS, lesion_wise

LABEL_CONVENTIONS = ("brats2017", "brats2023")
SCORE_FIELDS = (
    ("subject",)
    + tuple(f"{m}_{r}" for m in ("dice", "hd95") for r in REGIONS)
    + LESION_METRICS
    + LESION_COUNTS
)


def subjects_of(
    path: str | Path | None = None, *, t1=None, t1gd=None, t2=None, flair=None
) -> list[Subject]:
    """The subjects to segment: a dataset root (any layout), one subject folder, or four files.

    Raises:
        DataError / InputError: nothing to segment, or files given both ways.
    """
    files = (t1, t1gd, t2, flair)
    if any(f is not None for f in files):
        if path is not None or any(f is None for f in files):
            raise InputError("give either INPUT or all four of --t1, --t1gd, --t2 and --flair")
        images = tuple(Path(f) for f in files)
        name = images[0].name
        for suffix in (".nii.gz", ".nii"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        return [Subject(subject_id=name, layout="files", images=images)]
    if path is None:
        raise InputError(
            "give INPUT (a dataset or subject folder) or --t1, --t1gd, --t2 and --flair"
        )
    path = Path(path)
    if path.is_dir() and any(p.name.endswith((".nii.gz", ".nii")) for p in path.iterdir()):
        matches = [s for s in discover_subjects(path.parent) if s.images[0].parent == path]
        if not matches:
            raise DataError(f"{path}: not a subject folder of a supported layout")
        return matches
    return discover_subjects(path)


class _Prepare:
    """Picklable: loads and preprocesses one subject (N4 runs here, in the worker processes)."""

    def __init__(self, preprocessing: Preprocessing, resize: bool):
        self.preprocessing, self.resize = preprocessing, resize

    def __call__(self, subject: Subject):
        image, _ = subject.load()
        x, box = preprocess(
            image, self.preprocessing, name=f"{subject.images[0]}", resize=self.resize
        )
        return subject, x, box, image.shape[:3]


def run_predict(
    model_path: str | Path,
    subjects: list[Subject],
    out: str | Path,
    *,
    labels: str = "brats2017",
    probabilities: bool = False,
    overwrite: bool = False,
    workers: int = 1,
    sliding_window: bool = False,
    overlap: float = 0.5,
    progress: bool | None = None,
    source: str | Path | None = None,
) -> list[Path]:
    """Segments every subject into ``out/<id>.nii.gz`` (and ``<id>_probabilities.nii.gz``).

    Existing outputs are skipped unless ``overwrite``; every file is written atomically.
    ``source`` (the INPUT the subjects came from) is never written into: an ``out`` inside
    the dataset would be read back by its discovery as a subject.
    ``sliding_window`` segments each cropped scan at its own resolution with overlapping
    tiles of the model's input size (Gaussian-weighted) instead of resizing it.

    Returns:
        The label maps written (skipped subjects not included).

    Raises:
        InputError: the model records no preprocessing, or an unknown label convention.
        DataError: unreadable scans.
    """
    from keras_advseg.export import input_shape, load_model, load_preprocessing
    from keras_advseg.metrics import traced_inference

    if labels not in LABEL_CONVENTIONS:
        raise InputError(f"labels must be one of {LABEL_CONVENTIONS}. Received: {labels!r}")
    check_outputs_are_not_inputs(subjects, Path(out), probabilities)
    inputs = {"model": model_path, "dataset": source}
    refuse_inputs_in_output(out, inputs)  # before anything is read
    preprocessing = load_preprocessing(model_path)
    model = load_model(model_path)
    if not sliding_window:
        check_model_fits(
            model, model_path, preprocessing.shape, "the preprocessing stored in the model"
        )
    else:
        check_model_fits(model, model_path, input_shape(model)[:-1], "its own input size")
    out = ensure_writable_folder(out, inputs)
    forward = traced_inference(model)
    # a subject is done only when every output it needs exists: an interruption between
    # the label map and the probabilities leaves it to do again
    todo = [
        s
        for s in subjects
        if overwrite or not all(p.is_file() for p in output_paths(s, out, probabilities))
    ]
    written = []
    disable = None if progress is None else not progress
    for subject, x, box, native_shape in progress_map(
        _Prepare(preprocessing, resize=not sliding_window),
        todo,
        workers=workers,
        desc="predict",
        disable=disable,
    ):
        tile = preprocessing.shape if sliding_window else None
        native = to_native(forward, x, box, native_shape, tile, overlap)
        source = nib.load(str(subject.images[0]))
        label_map = probabilities_to_label_map(native, labels)
        written.append(
            _write_like(source, label_map, out / f"{subject.subject_id}.nii.gz", np.uint8)
        )
        if probabilities:
            _write_like(
                source, native, out / f"{subject.subject_id}_probabilities.nii.gz", np.float32
            )
    return written


def output_paths(subject: Subject, out: Path, probabilities: bool) -> list[Path]:
    """What ``predict`` writes for ``subject``: its label map, and its probabilities if asked."""
    paths = [out / f"{subject.subject_id}.nii.gz"]
    if probabilities:
        paths.append(out / f"{subject.subject_id}_probabilities.nii.gz")
    return paths


def check_outputs_are_not_inputs(subjects: list[Subject], out: Path, probabilities: bool) -> None:
    """Refuses an output folder where an output would replace an input scan or label file
    (``--out`` the folder of ``--t1 scan.nii.gz`` names the label map ``scan.nii.gz``).

    Raises:
        InputError: naming the file, before anything is read or written.
    """
    inputs = {}
    for subject in subjects:
        for path in (*subject.images, *([subject.seg] if subject.seg is not None else [])):
            inputs[Path(path).resolve()] = subject.subject_id
    for subject in subjects:
        for path in output_paths(subject, out, probabilities=True):
            owner = inputs.get(path.resolve())
            if owner is not None:
                raise InputError(
                    f"{path}: is an input of subject {owner}; predict never overwrites its "
                    "inputs: choose another --out"
                )


def _write_like(source, canonical: np.ndarray, path: Path, dtype) -> Path:
    """Writes an array given in the RAS+ (closest canonical) grid in ``source``'s orientation,
    affine and header."""
    canonical_affine = nib.as_closest_canonical(source).affine
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(canonical_affine),
        nib.orientations.io_orientation(source.affine),
    )
    data = nib.orientations.apply_orientation(canonical, transform).astype(dtype)
    header = source.header.copy()
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(data, source.affine, header=header)
    image.header.set_slope_inter(1, 0)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path


def _spacing(image) -> str:
    return " x ".join(f"{z:g}" for z in image.header.get_zooms()[:3])


def run_score(
    pred_dir: str | Path, data: str | Path, out: str | Path, *, labels: str | None = None
) -> dict:
    """Dice and HD95 (mm) per subject in native space; writes ``scores.csv`` and ``summary.json``.

    Region-wise scores (:func:`keras_advseg.metrics.native_scores`) and BraTS 2023
    lesion-wise ones (:func:`keras_advseg.lesionwise.lesion_wise`: ``lesion_dice_*``,
    ``lesion_hd95_*`` and the lesion counts ``lesion_tp_*``, ``lesion_fn_*``,
    ``lesion_fp_*``), both at the reference's voxel spacing.

    Args:
        pred_dir: Folder of ``<id>.nii.gz`` label maps (``advseg predict``'s output).
        data: The dataset with reference segmentations (any supported layout).
        out: Output folder.
        labels: Convention of the predictions (None: 2023 when they hold 3 and no 4).

    Returns:
        The summary: mean and sd of each score (of each count too), and the number of
        subjects.

    Raises:
        DataError: a prediction is missing, unreadable or on another grid.
    """
    from keras_advseg.metrics import native_scores

    out = ensure_writable_folder(out, {"predictions": pred_dir, "dataset": data})
    subjects = [s for s in discover_subjects(data) if s.has_labels]
    if not subjects:
        raise DataError(f"{data}: no subject has a reference segmentation")
    rows = []
    for subject in subjects:
        path = Path(pred_dir) / f"{subject.subject_id}.nii.gz"
        if not path.is_file():
            raise DataError(f"{path}: missing prediction for subject {subject.subject_id}")
        _, reference = subject.load()
        try:
            prediction = nib.as_closest_canonical(nib.load(str(path)))
            values = prediction.get_fdata()
        except Exception as exc:  # nibabel raises many types for broken files
            raise DataError(f"{path}: not a readable NIfTI label map ({exc})") from None
        if not np.all(np.isfinite(values)):
            count = int(values.size - np.count_nonzero(np.isfinite(values)))
            raise DataError(f"{path}: {count} non-finite voxels (NaN or Inf); expected labels")
        predicted = np.rint(values).astype(np.int64)
        if predicted.shape != reference.shape:
            raise DataError(
                f"{path}: shape {predicted.shape}, the reference's is {reference.shape}"
            )
        # the same voxels in the same place: a prediction on another grid is refused, and
        # distances are measured with the reference's spacing
        grid = nib.as_closest_canonical(nib.load(str(subject.seg)))
        if not np.allclose(prediction.affine, grid.affine, atol=1e-3):
            raise DataError(
                f"{path}: its affine (voxel spacing {_spacing(prediction)} mm) differs from the "
                f"reference {subject.seg}'s ({_spacing(grid)} mm); score predictions on the "
                "reference's own grid"
            )
        predicted = _to_brats2017(predicted, labels, path)
        spacing = grid.header.get_zooms()[:3]
        rows.append(
            {
                "subject": subject.subject_id,
                **native_scores(reference, predicted, spacing),
                **lesion_wise(reference, predicted, spacing),
            }
        )
    summary = {"n_subjects": len(rows)}
    for field in SCORE_FIELDS[1:]:
        values = np.array([row[field] for row in rows], float)
        summary[field] = {
            "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        }
    write_text_atomic(out / "scores.csv", rows_to_csv(rows, SCORE_FIELDS))
    write_json_atomic(out / "summary.json", summary)
    return summary


def _to_brats2017(predicted: np.ndarray, labels: str | None, path: Path) -> np.ndarray:
    values = set(np.unique(predicted).tolist())
    if labels is None:
        labels = "brats2023" if 3 in values and 4 not in values else "brats2017"
    mapping = dict(BRATS2023_LABELS if labels == "brats2023" else IDENTITY_LABELS)
    unexpected = sorted(values - set(mapping))
    if unexpected:
        raise DataError(
            f"{path}: unexpected label values {unexpected[:5]} for the {labels} convention"
        )
    lut = np.zeros(max(mapping) + 1, np.uint8)
    for source, target in mapping.items():
        lut[source] = target
    return lut[predicted]


def summary_line(summary: dict) -> str:
    """One line of the mean scores, region-wise then lesion-wise, for the CLI."""

    def mean(name: str, r: str) -> float:
        return summary[f"{name}_{r}"]["mean"]

    parts = [
        f"{r.upper()} Dice {mean('dice', r):.3f} HD95 {mean('hd95', r):.1f} mm "
        f"(lesion-wise {mean('lesion_dice', r):.3f}, {mean('lesion_hd95', r):.1f} mm)"
        for r in REGIONS
    ]
    return f"{plural(summary['n_subjects'], 'subject')}: " + "; ".join(parts)
