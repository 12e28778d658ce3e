"""What every corruption shares: :func:`corrupt` (by name and severity), the random draws, rigid motion.

A corruption is a pure function of a native scan, deterministic from its seed and the
subject it is drawn for. Each MR sequence is a separate acquisition, so a scanner corruption
draws its parameters for each sequence on its own; each subject gets its own draw (its key
enters the random stream); the draws are unit-scaled numbers that the severity's parameters
then scale, so that the same seed and subject give the same field, spike position or dropped
sequence at every severity, only stronger (motion shares its first movements' directions; its
number of movements and their times change with the level). As TorchIO's transforms (draw,
then apply, with the drawn parameters recorded), every corruption records what it drew:
:func:`corrupt` returns it with ``return_params=True``.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

from keras_advseg.errors import InputError
from keras_advseg.vocabulary import MODALITIES

SEVERITIES = (1, 2, 3, 4, 5)
"""The graded levels; 0 is the clean scan."""


def corrupt(
    image: np.ndarray,
    name: str,
    severity: int,
    *,
    spacing=(1.0, 1.0, 1.0),
    seed: int = 0,
    modalities=None,
    keep_background: bool = True,
    subject: str | None = None,
    return_params: bool = False,
):
    """A native scan as the scanner or the operator could have delivered it.

    Args:
        image: ``(X, Y, Z, C)`` volume in its source intensities, sequences in
            :data:`~keras_advseg.vocabulary.MODALITIES` order.
        name: A registered corruption (:data:`~keras_advseg.corruptions.CORRUPTIONS`).
        severity: 0 (the clean scan, returned as a copy) to 5; the parameters of each level
            are in :func:`~keras_advseg.corruptions.severity_table`.
        spacing: Voxel size in mm along the three axes.
        seed: Seed of every random draw.
        modalities: The sequences the corruption may touch (names such as ``"flair"`` or
            channel indices); None: all of them.
        keep_background: Put back the zeros outside the brain: BraTS scans are skull-stripped
            after acquisition, so an artifact of the acquisition leaves no signal outside the
            brain mask of the delivered scan. The mask is the clean scan's (the
            skull-stripping's mask is computed on the co-registered sequences, which an
            artifact of one sequence barely moves); ghosts and motion copies that fall outside
            the brain are therefore removed, as skull-stripping would remove them.
        subject: A stable key of the subject the scan belongs to (its identifier): mixed into
            every draw, so that each subject gets its own motion path, field, spike or dropped
            sequence, while the same subject gets the same unit draw at every severity. None:
            draws from ``seed`` alone (every scan the same draw).
        return_params: Also return the drawn parameters.

    Returns:
        The corrupted float32 volume, same shape; finite. With ``return_params``, the pair
        ``(volume, params)``: ``params`` holds the level's parameters and what was drawn, per
        sequence name for a per-sequence corruption (e.g. ``{"flair": {"position": [...]}}``),
        else for the scan (e.g. ``{"sequence": "t1gd"}``); JSON-serialisable.

    Raises:
        InputError: unknown name, severity outside 0-5 (or not a finite integer), a bad
            ``spacing``, an unknown sequence in ``modalities``, or an image that is not
            ``(X, Y, Z, C)`` real, finite numbers.
    """
    from keras_advseg.corruptions.registry import CORRUPTIONS

    entry = CORRUPTIONS.get(name)
    image = np.asarray(image)
    if image.ndim != 4 or min(image.shape) < 1:
        raise InputError(f"image must be (X, Y, Z, C). Received: shape {image.shape}")
    if (
        isinstance(severity, bool)
        or not isinstance(severity, (int, float, np.integer, np.floating))
        or not np.isfinite(severity)
        or int(severity) != severity
        or not 0 <= severity <= max(SEVERITIES)
    ):
        raise InputError(f"severity must be an integer 0-5. Received: severity={severity!r}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise InputError(f"image must hold real numbers. Received: dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise InputError(
            f"image holds {bad} non-finite voxel value(s) (NaN or inf): a corruption of such a "
            "scan is meaningless; repair or mask them first"
        )
    spacing = _spacing(spacing)
    channels = _channels(modalities, image.shape[-1])
    clean = image.astype(np.float32)
    if severity == 0:
        return (clean.copy(), {}) if return_params else clean.copy()
    params = {key: values[int(severity) - 1] for key, values in entry.levels.items()}
    function = entry.load()
    drawn: dict = {"level": {k: _plain(v) for k, v in params.items()}}
    if entry.per_sequence:
        out = clean.copy()
        for c in channels:
            rng = draws(seed, entry.name, c, subject)
            record: dict = {}
            out[..., c] = function(
                clean[..., c].astype(np.float64), spacing=spacing, rng=rng, record=record, **params
            )
            drawn[_sequence_name(c, image.shape[-1])] = record
    else:
        rng = draws(seed, entry.name, -1, subject)
        record = {}
        out = function(clean, spacing=spacing, rng=rng, channels=channels, record=record, **params)
        for key in ("sequence", "sequences"):
            if key in record:  # channel indices as the sequences' names
                value = record[key]
                record[key] = (
                    _sequence_name(value, image.shape[-1])
                    if isinstance(value, int)
                    else [_sequence_name(v, image.shape[-1]) for v in value]
                )
        drawn.update(record)
    out = np.asarray(out, np.float32)
    finite = np.isfinite(out)
    if not finite.all():  # rare: zero what is not a number, as np.nan_to_num(..., 0) would
        out = np.where(finite, out, np.float32(0))
    if keep_background:
        out = np.where(np.any(clean != 0, axis=-1, keepdims=True), out, np.float32(0))
    return (out, _plain(drawn)) if return_params else out


def draws(seed: int, name: str, channel: int, subject: str | None = None) -> np.random.Generator:
    """The random stream of one corruption on one sequence (-1: the whole scan) of one subject;
    independent of which other sequences are corrupted and of the severity.

    Args:
        seed: The corruptions' seed.
        name: The corruption.
        channel: The sequence's channel, -1 for a whole-scan corruption.
        subject: A stable key of the subject (its identifier; None: no subject, the stream of
            ``seed`` alone).
    """
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), channel + 1]
    if subject is not None:
        key.append(zlib.crc32(str(subject).encode()))
    return np.random.default_rng(key)


def _sequence_name(channel: int, n_channels: int) -> str:
    return MODALITIES[channel] if n_channels == len(MODALITIES) else f"channel {channel}"


def _plain(value):
    """``value`` with NumPy scalars and arrays as plain Python numbers and lists (JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    return value


def note(record: dict | None, **drawn) -> None:
    """Records what a corruption drew (TorchIO's draw, then apply), when ``record`` is a dict."""
    if record is not None:
        record.update(drawn)


def rigid(volume: np.ndarray, spacing, degrees, translation_mm, order: int = 1) -> np.ndarray:
    """A volume moved rigidly: rotated about its centre by ``degrees`` (about x, y, z, in that
    order) and shifted by ``translation_mm``, in physical (mm) space; 0 where it leaves the field.

    Returns:
        The moved volume, same shape and dtype as ``volume`` (float).
    """
    matrix, offset = rigid_map(volume.shape, spacing, degrees, translation_mm)
    if np.allclose(matrix, np.eye(3)) and np.allclose(offset, 0):
        return volume.copy()
    return ndimage.affine_transform(volume, matrix, offset, order=order, mode="constant", cval=0.0)


def rigid_map(shape, spacing, degrees, translation_mm) -> tuple[np.ndarray, np.ndarray]:
    """The voxel map of a rigid movement: a voxel ``p`` of the moved volume shows what the
    original holds at ``matrix @ p + offset`` (rotation about the volume's centre by
    ``degrees`` about x, y, z, then ``translation_mm``, both in physical space).

    Returns:
        ``(matrix, offset)``: a 3 x 3 matrix and a 3-vector, in voxel units.
    """
    spacing = np.asarray(spacing, np.float64)
    rotation = rotation_matrix(np.radians(np.asarray(degrees, np.float64)))
    scale, unscale = np.diag(spacing), np.diag(1.0 / spacing)
    matrix = unscale @ rotation.T @ scale  # output voxel -> input voxel (about the centre)
    centre = (np.asarray(shape[:3], np.float64) - 1) / 2
    offset = centre - matrix @ centre - unscale @ rotation.T @ np.asarray(translation_mm, float)
    return matrix, offset


def rotation_matrix(radians) -> np.ndarray:
    """``Rz @ Ry @ Rx`` of rotations about the x, y and z axes."""
    ax, ay, az = radians
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def check_modalities(text) -> tuple[str, ...]:
    """Sequence names from ``"t1,t1gd"`` (or a sequence of names), checked.

    Raises:
        InputError: an unknown sequence, naming the known ones.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in MODALITIES]
    if unknown or not names:
        raise InputError(
            f"modalities must name sequences among {', '.join(MODALITIES)}. Received: {text!r}"
        )
    return tuple(dict.fromkeys(names))


def _spacing(spacing) -> tuple[float, float, float]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
        raise InputError(f"spacing must be three positive sizes in mm. Received: {spacing!r}")
    return values


def _channels(modalities, n_channels: int) -> tuple[int, ...]:
    if modalities is None:
        return tuple(range(n_channels))
    if isinstance(modalities, (str, int)):
        modalities = (modalities,)
    found = []
    for m in modalities:
        if isinstance(m, str) and m.lower() in MODALITIES:
            found.append(MODALITIES.index(m.lower()))
        elif isinstance(m, (int, np.integer)) and 0 <= int(m) < n_channels:
            found.append(int(m))
        else:
            raise InputError(
                f"modalities must name sequences among {', '.join(MODALITIES)}. Received: {m!r}"
            )
    if not found:
        raise InputError("modalities must name at least one sequence")
    return tuple(sorted(set(found)))
