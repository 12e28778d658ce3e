"""Segmenting scans in their own geometry: the preprocessing a model was trained with, applied and undone.

A trained model only ever saw prepared volumes (N4, cropped to the brain,
resized, standardised with the training split's statistics). :class:`Preprocessing`
records exactly those settings; it travels inside the model's ``.keras`` file
(:func:`keras_advseg.export.save_model`). :func:`segment` applies it to a raw
scan, runs the model, and maps the class probabilities back through the resize
(linear interpolation) and the crop onto the scan's own voxel grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from keras_advseg.config import NORMALIZATIONS
from keras_advseg.data.preprocess import crop_and_resize_as, resize, standardize
from keras_advseg.data.subject import MODALITIES
from keras_advseg.errors import InputError, is_finite_number

PREPROCESSING_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing a model was trained with.

    Attributes:
        shape: The model's input size.
        n4, n4_shrink, margin: N4 bias correction, its shrink factor, the crop margin.
        normalization: ``"global"`` (``mean``/``std`` of the training split) or ``"volume"``.
        mean, std: Per-modality statistics in :data:`~keras_advseg.data.MODALITIES` order,
            or None for ``"volume"``.
    """

    shape: tuple[int, int, int]
    n4: bool
    n4_shrink: int
    margin: int
    normalization: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_prepared(cls, prepared) -> Preprocessing:
        """The preprocessing of a :class:`~keras_advseg.data.prepare.PreparedDataset`."""
        config = prepared.config
        stats = config.normalization == "global"
        return cls(
            shape=tuple(int(s) for s in config.shape),
            n4=bool(config.n4),
            n4_shrink=int(config.n4_shrink),
            margin=int(config.margin),
            normalization=config.normalization,
            mean=tuple(float(v) for v in prepared.mean) if stats else None,
            std=tuple(float(v) for v in prepared.std) if stats else None,
        )

    def to_json(self) -> dict:
        return {"version": PREPROCESSING_VERSION, "modalities": list(MODALITIES), **asdict(self)}

    def prepare_config(self):
        """The :class:`~keras_advseg.data.prepare.PrepareConfig` that prepares a dataset as
        this model expects (its size, N4, margin and normalisation; the split is the caller's)."""
        from keras_advseg.data.prepare import PrepareConfig

        return PrepareConfig(
            shape=self.shape,
            n4=self.n4,
            n4_shrink=self.n4_shrink,
            margin=self.margin,
            normalization=self.normalization,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Preprocessing:
        """A user's preprocessing JSON file (``--preprocessing``), checked as :meth:`from_json`
        checks it.

        Raises:
            InputError: the file is not readable JSON, or a field is wrong.
        """
        import json

        try:
            value = json.loads(Path(path).read_text())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a readable JSON file ({exc})") from None
        return cls.from_json(value, path)

    @classmethod
    def from_json(cls, value: dict, source: str | Path) -> Preprocessing:
        """Reads the stored form back (untrusted input: a model's, or a user's ``--preprocessing``
        JSON), every field checked for its type and range: ``"n4": "false"`` is refused, not
        read as true.

        Raises:
            InputError: naming ``source`` and the field, when a field is missing, of another
                type or out of range.
        """
        if not isinstance(value, dict):
            raise InputError(f"{source}: the preprocessing must be a JSON object")

        def field(name, check, expected):
            if name not in value:
                raise InputError(f"{source}: the preprocessing has no field {name!r}")
            if not check(value[name]):
                raise InputError(
                    f"{source}: preprocessing field {name!r} must be {expected}. "
                    f"Received: {value[name]!r}"
                )
            return value[name]

        def integer(v, low, high):
            return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

        def numbers(v, positive):
            return (
                isinstance(v, list)
                and len(v) == len(MODALITIES)
                and all(is_finite_number(x) and (x > 0 or not positive) for x in v)
            )

        field("version", lambda v: v == PREPROCESSING_VERSION, PREPROCESSING_VERSION)
        field("modalities", lambda v: v == list(MODALITIES), list(MODALITIES))
        shape = field(
            "shape",
            lambda v: (
                isinstance(v, list) and len(v) == 3 and all(integer(s, 1, MAX_SIZE) for s in v)
            ),
            f"three integers from 1 to {MAX_SIZE} (at most {MAX_SIZE} voxels a side; the "
            "paper's are 128)",
        )
        n4 = field("n4", lambda v: isinstance(v, bool), "true or false")
        n4_shrink = field(
            "n4_shrink", lambda v: integer(v, 1, MAX_SIZE), f"an integer from 1 to {MAX_SIZE}"
        )
        margin = field(
            "margin", lambda v: integer(v, 0, MAX_SIZE), f"an integer from 0 to {MAX_SIZE}"
        )
        normalization = field(
            "normalization", lambda v: v in NORMALIZATIONS, f"one of {list(NORMALIZATIONS)}"
        )
        stats = normalization == "global"
        if stats:
            mean = field("mean", lambda v: numbers(v, False), "four finite numbers")
            std = field("std", lambda v: numbers(v, True), "four positive finite numbers")
        return cls(
            shape=tuple(shape),
            n4=n4,
            n4_shrink=n4_shrink,
            margin=margin,
            normalization=normalization,
            mean=tuple(float(v) for v in mean) if stats else None,
            std=tuple(float(v) for v in std) if stats else None,
        )


MAX_SIZE = 512
"""The largest model input side a stored preprocessing may ask for: a crafted file must not
make the tool allocate hundreds of GiB (512^3 x 4 float32 volumes are 2 GiB)."""


def preprocess(
    image: np.ndarray, preprocessing: Preprocessing, name: str = "volume", resize: bool = True
):
    """Applies the training preprocessing to one raw ``(X, Y, Z, 4)`` volume.

    Args:
        image: The raw volume.
        preprocessing: The model's training preprocessing.
        name: What the volume is, for messages.
        resize: Resize the crop to the model's input size (False: keep the scan's resolution,
            for :func:`sliding_window`).

    Returns:
        ``(x, box)``: the standardised float32 model input ``(*shape, 4)`` and the crop
        box in the volume's grid.

    Raises:
        DataError: empty brain mask or a constant modality.
    """
    resized, mask, box = crop_and_resize_as(image, preprocessing, name=name, resize=resize)
    mean = None if preprocessing.mean is None else np.asarray(preprocessing.mean, np.float32)
    std = None if preprocessing.std is None else np.asarray(preprocessing.std, np.float32)
    return standardize(resized, mask, mean, std), box


def check_model_fits(model, model_ref, shape: tuple[int, ...], data) -> None:
    """One check, used by every command before any work, that a model can segment volumes
    of ``shape``: four modalities in, four classes out, a 3-D input (a 2-D UNet only wrapped
    in ``SliceWise``) of that spatial size.

    Args:
        model: The loaded Keras model.
        model_ref: What the user named it, for the message.
        shape: The spatial shape of the volumes it will get.
        data: Where those volumes come from (a folder, or the model's stored preprocessing).

    Raises:
        InputError: naming both and every mismatch.
    """
    from keras_advseg.models import SliceWise

    inner = model.slice_model if isinstance(model, SliceWise) else model
    spatial, channels = tuple(inner.input_shape[1:-1]), inner.input_shape[-1]
    classes = inner.output_shape[-1]
    problems = []
    if channels != len(MODALITIES):
        problems.append(f"takes {channels} channels, the data has {len(MODALITIES)} modalities")
    if classes != 4:
        problems.append(f"predicts {classes} classes, BraTS labels need 4")
    expected_rank = 2 if isinstance(model, SliceWise) else 3
    if len(spatial) != expected_rank:
        problems.append(
            f"takes {len(spatial)}-D inputs {spatial}; a volume model takes (X, Y, Z) (a 2-D "
            "UNet must be wrapped in keras_advseg.models.SliceWise)"
        )
    elif any(s is not None and s != v for s, v in zip(spatial, shape)):
        problems.append(f"expects volumes of {spatial}, the data's are {tuple(shape)}")
    if problems:
        raise InputError(f"{model_ref} does not fit {data}: it " + "; it ".join(problems))


def crop_resize_and_mask(image: np.ndarray, preprocessing: Preprocessing, name: str = "volume"):
    """What a SavedModel exported ``--with-preprocessing`` takes: the raw volume N4-corrected
    (when the model was trained with it), cropped and resized, and its brain mask resized by
    nearest neighbour, as :func:`preprocess` computes them before it standardises.

    Returns:
        ``(image (*shape, 4) float32, brain_mask (*shape, 1) bool, box)``.

    Raises:
        DataError: empty brain mask.
    """
    resized, mask, box = crop_and_resize_as(image, preprocessing, name=name)
    return resized, mask[..., None], box


def restore(probabilities: np.ndarray, box: tuple[slice, ...], native_shape) -> np.ndarray:
    """Maps model-space probabilities ``(*shape, K)`` back onto the native grid ``(*native_shape, K)``.

    Linear interpolation through the resize onto the crop box; outside the box
    (outside the brain) the background has probability 1.
    """
    crop = tuple(s.stop - s.start for s in box)
    native = np.zeros(tuple(native_shape) + probabilities.shape[-1:], np.float32)
    native[..., 0] = 1.0
    native[box] = resize(probabilities.astype(np.float32), crop, order=1)
    return native


def gaussian_importance(tile: tuple[int, ...], sigma_scale: float = 0.125) -> np.ndarray:
    """Weights of a tile's voxels: a Gaussian centred on the tile, sigma = tile / 8 (as nnU-Net),
    so that tile borders, where the network sees least context, count least."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in tile], indexing="ij")
    squared = sum(
        ((g - (n - 1) / 2) / max(n * sigma_scale, 1e-6)) ** 2 for g, n in zip(grids, tile)
    )
    weights = np.exp(-0.5 * squared)
    return (weights / weights.max()).clip(min=1e-3).astype(np.float32)


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` voxels covering ``size`` with the given overlap fraction."""
    if size <= tile:
        return [0]
    step = max(1, int(round(tile * (1 - overlap))))
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def sliding_window(
    forward, x: np.ndarray, tile: tuple[int, int, int], overlap: float = 0.5
) -> np.ndarray:
    """Class probabilities of a volume larger than the model's input, from overlapping tiles.

    Each tile's softmax is weighted by :func:`gaussian_importance` and the
    weighted probabilities are averaged; the model only ever sees one tile, so
    its memory is bounded by one tile. A volume smaller than the tile along an
    axis is padded with background (0) there.

    Args:
        forward: The model (tiles ``(1, *tile, C)`` in, logits out).
        x: Standardised volume ``(X, Y, Z, C)``.
        tile: The model's input size.
        overlap: Fraction of a tile shared with its neighbour (0 <= overlap < 1).

    Returns:
        float32 ``(X, Y, Z, K)`` probabilities.

    Raises:
        InputError: ``overlap`` outside [0, 1).
    """
    from keras_advseg.metrics import logits_to_probabilities

    if not 0 <= overlap < 1:
        raise InputError(f"overlap must be in [0, 1). Received: overlap={overlap}")
    size = x.shape[:3]
    padded_size = tuple(max(s, t) for s, t in zip(size, tile))
    padded = np.zeros(padded_size + x.shape[3:], np.float32)
    padded[: size[0], : size[1], : size[2]] = x
    weights = gaussian_importance(tile)
    total = weight_sum = None
    for i in tile_starts(padded_size[0], tile[0], overlap):
        for j in tile_starts(padded_size[1], tile[1], overlap):
            for k in tile_starts(padded_size[2], tile[2], overlap):
                window = (slice(i, i + tile[0]), slice(j, j + tile[1]), slice(k, k + tile[2]))
                logits = forward(padded[window][None], training=False)
                probabilities = np.asarray(logits_to_probabilities(logits))[0]
                if total is None:
                    total = np.zeros(padded_size + probabilities.shape[-1:], np.float32)
                    weight_sum = np.zeros(padded_size, np.float32)
                total[window] += probabilities * weights[..., None]
                weight_sum[window] += weights
    result = total / weight_sum[..., None]
    return result[: size[0], : size[1], : size[2]]


def to_native(
    forward, x: np.ndarray, box, native_shape, tile=None, overlap: float = 0.5
) -> np.ndarray:
    """Class probabilities on the scan's own grid from a preprocessed volume (:func:`preprocess`).

    Args:
        forward: The model (volumes in, logits out), e.g. ``traced_inference(model)``.
        x: The preprocessed volume: resized to the model's input, or (with ``tile``) at the
            scan's resolution.
        box, native_shape: The crop box and the scan's shape (:func:`restore`).
        tile: The model's input size to run :func:`sliding_window` with; None: one forward pass.
        overlap: Sliding-window overlap.

    Returns:
        float32 ``(X, Y, Z, K)`` probabilities (softmax at T = 1).
    """
    from keras_advseg.metrics import logits_to_probabilities

    if tile is None:
        probabilities = np.asarray(logits_to_probabilities(forward(x[None], training=False)))[0]
    else:
        probabilities = sliding_window(forward, x, tile, overlap)
    return restore(probabilities, box, native_shape)


def segment(
    forward,
    image: np.ndarray,
    preprocessing: Preprocessing,
    *,
    sliding: bool = False,
    overlap: float = 0.5,
    name: str = "volume",
) -> np.ndarray:
    """Class probabilities of a raw ``(X, Y, Z, 4)`` volume on its own grid: the training
    preprocessing, the model (resized input, or ``sliding`` tiles at the scan's resolution),
    and the way back through resize and crop."""
    x, box = preprocess(image, preprocessing, name, resize=not sliding)
    tile = preprocessing.shape if sliding else None
    return to_native(forward, x, box, image.shape[:3], tile, overlap)


@dataclass(frozen=True)
class NativeGrid:
    """A scan's own geometry and reference labels, to score model-space predictions there.

    Attributes:
        box: The crop box of the preprocessing, in the scan's (RAS+) grid.
        shape: The scan's shape.
        spacing: Voxel size in mm.
        labels: Reference labels (BraTS 2017 values) on the scan's grid.
    """

    box: tuple
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    labels: np.ndarray

    @classmethod
    def of(cls, subject, margin: int) -> NativeGrid:
        """The grid of a raw subject with labels, cropped with the preprocessing's ``margin``.

        Raises:
            DataError: unreadable files, no labels, or an empty brain mask.
        """
        import nibabel as nib

        from keras_advseg.data import DataError
        from keras_advseg.data.preprocess import brain_mask, crop_box

        image, labels = subject.load()
        if labels is None:
            raise DataError(
                f"{subject.images[0].parent}: subject {subject.subject_id} has no labels"
            )
        mask = brain_mask(image)
        if not mask.any():
            raise DataError(f"{subject.images[0].parent}: empty brain mask")
        zooms = nib.as_closest_canonical(nib.load(str(subject.images[0]))).header.get_zooms()[:3]
        return cls(crop_box(mask, margin), image.shape[:3], tuple(float(z) for z in zooms), labels)

    def scores(self, probabilities: np.ndarray) -> dict[str, float]:
        """Dice and HD95 (mm) of model-space probabilities mapped back onto this grid."""
        from keras_advseg.metrics import native_scores

        native = restore(probabilities, self.box, self.shape)
        return native_scores(self.labels, probabilities_to_label_map(native), self.spacing)


def probabilities_to_label_map(
    probabilities: np.ndarray, convention: str = "brats2017"
) -> np.ndarray:
    """Arg-max labels: BraTS 2017 (0/1/2/4) or BraTS 2023 (0/1/2/3) values, uint8.

    Raises:
        InputError: unknown convention.
    """
    index = np.argmax(probabilities, axis=-1).astype(np.uint8)
    if convention == "brats2017":
        return np.where(index == 3, 4, index).astype(np.uint8)
    if convention == "brats2023":
        return index
    raise InputError(f"labels must be 'brats2017' or 'brats2023'. Received: {convention!r}")
