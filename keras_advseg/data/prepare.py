"""Prepares a dataset once and caches it: ``advseg data prepare``.

Cache layout (``OUT/``)::

    prepared.json        config, its hash, split, standardisation statistics
    volumes/config.json  hash of the per-volume steps the files were made with
    volumes/<id>.npz     image (X, Y, Z, 4) float32 after N4/crop/resize,
                         brain mask, labels (when the subject has them)

Volumes are stored before standardisation: the statistics depend on the split,
and applying them at load time is a subtraction and a division. Every file is
written under a temporary name and renamed, so an interrupted run leaves no
half-written volume and a re-run resumes where it stopped. A changed per-volume
config (shape, N4, margin) re-prepares every volume.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from keras_advseg.config import NORMALIZATIONS
from keras_advseg.data.errors import DataError
from keras_advseg.data.layouts import discover_subjects
from keras_advseg.data.parallel import progress_map
from keras_advseg.data.preprocess import (
    crop_and_resize_as,
    masked_moments,
    moments_to_mean_std,
    resize,
    standardize,
)
from keras_advseg.data.subject import MODALITIES, Subject
from keras_advseg.errors import InputError
from keras_advseg.io import atomic_path, refuse_inputs_in_output, write_json_atomic

_FORMAT_VERSION = 2
"""2: N4 corrects each sequence over the voxels it measured (a cache prepared with N4 before is
prepared again; on a scan with no zero inside the brain the volumes are the same)."""


@dataclass(frozen=True)
class PrepareConfig:
    """How a dataset is prepared.

    Attributes:
        shape: Spatial shape every volume is resized to (paper: 128^3).
        n4: Apply N4 bias-field correction.
        n4_shrink: Shrink factor of the N4 estimate.
        margin: Voxels kept around the brain bounding box.
        normalization: ``"global"`` (paper: per-modality mean/std over the
            training subjects inside the brain) or ``"volume"`` (per-volume z-score).
        test_fraction: Share of labelled subjects held out for testing (paper: 0.2).
        seed: Seed of the train/test split.
    """

    shape: tuple[int, int, int] = (128, 128, 128)
    n4: bool = True
    n4_shrink: int = 4
    margin: int = 2
    normalization: str = "global"
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self):
        shape = tuple(int(s) for s in (self.shape if np.ndim(self.shape) else (self.shape,) * 3))
        object.__setattr__(self, "shape", shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"shape must be three positive sizes. Received: shape={self.shape}")
        if self.normalization not in NORMALIZATIONS:
            raise InputError(
                f"normalization must be one of {NORMALIZATIONS}. Received: "
                f"normalization={self.normalization!r}"
            )
        if not 0 <= self.test_fraction < 1:
            raise InputError(
                f"test_fraction must be in [0, 1). Received: test_fraction={self.test_fraction}"
            )
        if self.n4_shrink < 1:
            raise InputError(f"n4_shrink must be >= 1. Received: n4_shrink={self.n4_shrink}")

    def volume_hash(self) -> str:
        """Hash of what the cached volume files depend on."""
        return _hash(
            {
                "v": _FORMAT_VERSION,
                "shape": self.shape,
                "n4": self.n4,
                "n4_shrink": self.n4_shrink,
                "margin": self.margin,
            }
        )

    def hash(self) -> str:
        """Hash of the whole configuration."""
        return _hash({"v": _FORMAT_VERSION, **asdict(self)})


@dataclass
class PreparedDataset:
    """A prepared cache: the split, the statistics and standardised volumes on demand.

    Attributes:
        root: Cache folder.
        config: The configuration it was prepared with.
        train_ids: Training subjects.
        test_ids: Test subjects.
        unlabelled_ids: Subjects without labels (inference only).
        mean: Per-modality mean of the training split (global normalisation).
        std: Per-modality standard deviation of the training split.
        data_hash: Hash of config, subject ids and split (for experiment tracking).
        source: The raw dataset it was prepared from (as recorded when preparing).
    """

    root: Path
    config: PrepareConfig
    train_ids: list[str]
    test_ids: list[str]
    unlabelled_ids: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    data_hash: str = ""
    source: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.config.shape

    def ids(self, split: str) -> list[str]:
        """Subject ids of ``"train"``, ``"test"``, ``"unlabelled"`` or ``"all"``.

        Raises:
            ValueError: unknown split name.
        """
        splits = {
            "train": self.train_ids,
            "test": self.test_ids,
            "unlabelled": self.unlabelled_ids,
            "all": self.train_ids + self.test_ids + self.unlabelled_ids,
        }
        if split not in splits:
            raise InputError(f"split must be one of {sorted(splits)}. Received: split={split!r}")
        return list(splits[split])

    def load(self, subject_id: str, transform=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Loads one standardised volume.

        Args:
            subject_id: The subject.
            transform: A function of the unstandardised ``(X, Y, Z, 4)`` volume applied before
                standardising (the training corruptions); the brain mask stays the cache's.

        Returns:
            ``(image, labels)``: float32 ``(X, Y, Z, 4)`` standardised, 0
            outside the brain; uint8 labels (BraTS convention) or None.

        Raises:
            DataError: the volume file is missing or unreadable.
        """
        path = self.root / "volumes" / f"{subject_id}.npz"
        image, mask, labels = read_volume(path)
        if image.shape[:3] != self.shape:
            raise DataError(f"{path}: shape {image.shape[:3]}, the cache's is {self.shape}")
        if transform is not None:
            image = np.asarray(transform(image), np.float32)
        if self.config.normalization == "global":
            return standardize(image, mask, self.mean, self.std), labels
        return standardize(image, mask, None, None), labels


def prepare_dataset(
    root: str | Path,
    out: str | Path,
    config: PrepareConfig = PrepareConfig(),
    *,
    workers: int = 1,
    progress: bool | None = None,
    test_ids: list[str] | None = None,
    statistics: tuple | None = None,
) -> PreparedDataset:
    """Prepares every subject under ``root`` into the cache ``out``.

    Args:
        root: Raw dataset in any supported layout.
        out: Cache folder.
        config: Preprocessing configuration.
        workers: Processes preparing volumes in parallel.
        progress: Show a progress bar (None: when on a terminal).
        test_ids: The test split, chosen by the caller (the other labelled subjects are the
            training split); None: :func:`split_subjects` by ``config``'s fraction and seed.
        statistics: ``(mean, std)`` per modality for global standardisation, given by the
            caller (a model's own, :class:`~keras_advseg.inference.Preprocessing`); None:
            computed over the training split.

    Returns:
        The prepared dataset.

    Raises:
        DataError: bad input data (the message names the file), or ``test_ids`` naming a
            subject that is not a labelled subject of ``root``.
    """
    refuse_inputs_in_output(out, {"raw dataset": root})
    subjects = discover_subjects(root)
    if test_ids is not None:  # checked before any volume is prepared
        labelled = {s.subject_id for s in subjects if s.has_labels}
        unknown = sorted(set(test_ids) - labelled)
        if unknown or not test_ids:
            raise DataError(
                f"{root}: the test split must name labelled subjects of the dataset; "
                + (f"not labelled or not found: {', '.join(unknown)}" if unknown else "none named")
            )
    out = Path(out)
    volumes = out / "volumes"
    stamp = volumes / "config.json"
    _check_owned(out, stamp)
    if volumes.exists() and _stamp_hash(stamp) != config.volume_hash():
        shutil.rmtree(volumes)  # our own cache, made with other settings
    volumes.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, {"volume_hash": config.volume_hash()}, indent=None)
    todo = [s for s in subjects if not (volumes / f"{s.subject_id}.npz").is_file()]
    job = _PrepareJob(volumes, config, single_threaded=workers > 1)
    for _ in progress_map(
        job,
        todo,
        workers=workers,
        desc="prepare",
        disable=None if progress is None else not progress,
    ):
        pass

    labelled = [s.subject_id for s in subjects if s.has_labels]
    if not labelled and config.normalization == "global":
        raise DataError(
            f"{root}: no subject has a label file; global standardisation needs labelled "
            "training subjects (use normalization 'volume' for inference-only data)"
        )
    if test_ids is None:
        train_ids, test_ids = split_subjects(labelled, config.test_fraction, config.seed)
    else:
        train_ids = sorted(set(labelled) - set(test_ids))
        test_ids = sorted(set(test_ids))
    mean = std = None
    if config.normalization == "global" and statistics is not None:
        mean, std = (np.asarray(v, np.float64).reshape(len(MODALITIES)) for v in statistics)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise DataError(f"{root}: the given standardisation statistics are not valid")
    elif config.normalization == "global":
        mean, std = training_statistics([volumes / f"{i}.npz" for i in train_ids or labelled])
    identity = {"config": config.hash(), "train": train_ids, "test": test_ids}
    if statistics is not None and mean is not None:
        identity["statistics"] = [mean.tolist(), std.tolist()]
    data_hash = _hash(identity)
    manifest = {
        "format_version": _FORMAT_VERSION,
        "source": str(Path(root).resolve()),
        "config": asdict(config),
        "config_hash": config.hash(),
        "data_hash": data_hash,
        "modalities": list(MODALITIES),
        "split": {
            "train": train_ids,
            "test": test_ids,
            "unlabelled": [s.subject_id for s in subjects if not s.has_labels],
        },
        "statistics": None
        if mean is None
        else {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "split": "train" if statistics is None else "given",
        },
    }
    write_json_atomic(out / "prepared.json", manifest)
    return load_prepared(out)


def load_prepared(path: str | Path) -> PreparedDataset:
    """Opens a cache written by :func:`prepare_dataset`.

    Raises:
        DataError: ``path`` holds no ``prepared.json`` or it is malformed.
    """
    manifest_path = Path(path) / "prepared.json"
    if not manifest_path.is_file():
        raise DataError(
            f"{path}: not a prepared dataset (no prepared.json); run 'advseg data prepare' first"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        config = PrepareConfig(
            **{k: tuple(v) if k == "shape" else v for k, v in manifest["config"].items()}
        )
        stats = manifest["statistics"]
        split = manifest["split"]
        ids = [list(split["train"]), list(split["test"]), list(split.get("unlabelled", []))]
        for subject_id in (i for group in ids for i in group):
            _check_subject_id(subject_id, manifest_path)
        prepared = PreparedDataset(
            root=Path(path),
            config=config,
            train_ids=ids[0],
            test_ids=ids[1],
            unlabelled_ids=ids[2],
            mean=None if stats is None else np.asarray(stats["mean"], np.float32),
            std=None if stats is None else np.asarray(stats["std"], np.float32),
            data_hash=str(manifest["data_hash"]),
            source=Path(manifest["source"]) if manifest.get("source") else None,
        )
        if prepared.mean is not None and not (
            prepared.mean.shape == prepared.std.shape == (len(MODALITIES),)
            and np.all(np.isfinite(prepared.mean))
            and np.all(np.isfinite(prepared.std))
            and np.all(prepared.std > 0)
        ):
            raise DataError(f"{manifest_path}: invalid standardisation statistics")
        return prepared
    except DataError:
        raise
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{manifest_path}: malformed prepared.json ({exc})") from None


def _check_subject_id(subject_id, manifest_path: Path) -> None:
    """A subject id read from a cache must be a plain name, never a path."""
    if (
        not isinstance(subject_id, str)
        or not subject_id
        or subject_id in (".", "..")
        or "/" in subject_id
        or "\\" in subject_id
        or "\x00" in subject_id
        or subject_id.startswith(".")
    ):
        raise DataError(f"{manifest_path}: subject id {subject_id!r} is not a plain name")


def _check_owned(out: Path, stamp: Path) -> None:
    """Refuses a non-empty folder that is not a cache of ours: nothing in it is ever deleted.

    Raises:
        DataError: ``out`` exists, is not empty and holds neither ``prepared.json`` nor
            ``volumes/config.json``.
    """
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose a new cache folder")
    owned = (out / "prepared.json").is_file() or stamp.is_file()
    if out.is_dir() and any(out.iterdir()) and not owned:
        raise DataError(
            f"{out}: a non-empty folder that is not a prepared cache (no prepared.json); "
            "choose a new or empty folder"
        )


def _stamp_hash(stamp: Path) -> str | None:
    """The volume hash a cache was made with, or None when the stamp is missing or unreadable."""
    try:
        value = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return value.get("volume_hash") if isinstance(value, dict) else None


def open_prepared(
    data: str | Path, cache: str | Path, shape: int, seed: int = 0
) -> PreparedDataset:
    """A prepared cache as it is, or a raw dataset prepared into ``cache`` at ``shape``^3 (resumable).

    Raises:
        DataError: unreadable data.
    """
    data = Path(data)
    if (data / "prepared.json").is_file():
        return load_prepared(data)
    return prepare_dataset(data, cache, PrepareConfig(shape=(shape,) * 3, seed=seed))


def split_subjects(ids: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/test split by subject id and seed.

    Each id gets a key hash(seed, id); the ``round(test_fraction * n)`` ids
    with the smallest keys (at least one when ``test_fraction > 0`` and there
    are two or more ids) are the test split. The assignment of an id does not
    depend on the order the ids are listed in.

    Returns:
        ``(train_ids, test_ids)``, each sorted.
    """
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    n_test = int(round(test_fraction * len(ids)))
    if test_fraction > 0 and len(ids) > 1:
        n_test = min(max(n_test, 1), len(ids) - 1)
    return sorted(ranked[n_test:]), sorted(ranked[:n_test])


def training_statistics(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Per-modality mean and standard deviation inside the brain over ``paths``.

    Raises:
        DataError: no volume, or a modality with zero variance.
    """
    if not paths:
        raise DataError("no labelled subjects to compute standardisation statistics from")
    total = squares = 0.0
    count = 0
    for path in paths:
        image, mask, _ = read_volume(path)
        t, s, c = masked_moments(image, mask)
        total, squares, count = total + t, squares + s, count + c
    return moments_to_mean_std(total, squares, count)


def read_volume(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reads a cached volume: ``(image, mask, labels or None)``.

    Raises:
        DataError: missing or unreadable file.
    """
    try:
        with np.load(path) as data:
            labels = data["labels"] if "labels" in data.files else None
            image, mask = data["image"], data["mask"].astype(bool)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: missing or unreadable prepared volume ({exc})") from None
    spatial = image.shape[:3]
    if (
        image.ndim != 4
        or image.shape[-1] != len(MODALITIES)
        or mask.shape != spatial
        or (labels is not None and labels.shape != spatial)
        or not np.all(np.isfinite(image))
    ):
        raise DataError(
            f"{path}: malformed prepared volume (image {image.shape}, mask {mask.shape}, "
            f"labels {None if labels is None else labels.shape}, or non-finite voxels)"
        )
    return image, mask, labels


class _PrepareJob:
    """Picklable per-subject preparation step."""

    def __init__(self, volumes: Path, config: PrepareConfig, single_threaded: bool):
        self.volumes, self.config, self.single_threaded = volumes, config, single_threaded

    def __call__(self, subject: Subject) -> str:
        if self.single_threaded:
            import SimpleITK as sitk

            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        image, labels = subject.load()
        resized, mask, box = crop_and_resize_as(
            image,
            self.config,
            name=f"{subject.images[0].parent}: subject {subject.subject_id}",
        )
        arrays = {"image": resized, "mask": mask.astype(np.uint8)}
        if labels is not None:
            arrays["labels"] = resize(labels[box], self.config.shape, order=0)
        with (
            atomic_path(self.volumes / f"{subject.subject_id}.npz") as tmp,
            open(tmp, "wb") as handle,
        ):
            np.savez(handle, **arrays)
        return subject.subject_id


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:16]


def describe(path: str | Path) -> dict:
    """What ``advseg data info`` prints: a prepared cache's split and statistics, or a raw
    dataset's subjects and layouts.

    Raises:
        DataError: ``path`` holds neither.
    """
    from keras_advseg.data.layouts import discover_subjects

    path = Path(path)
    if (path / "prepared.json").is_file():
        prepared = load_prepared(path)
        return {
            "kind": "prepared",
            "shape": list(prepared.shape),
            "train": len(prepared.train_ids),
            "test": len(prepared.test_ids),
            "unlabelled": len(prepared.unlabelled_ids),
            "normalization": prepared.config.normalization,
            "data_hash": prepared.data_hash,
        }
    subjects = discover_subjects(path)
    return {
        "kind": "raw",
        "subjects": len(subjects),
        "layouts": sorted({s.layout for s in subjects}),
        "labelled": sum(s.has_labels for s in subjects),
    }
