"""Finds subjects in any supported dataset layout, detected automatically.

Supported layouts:

* BraTS 2017-2020: ``<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz`` (labels 0/1/2/4),
  also nested one level deeper (``HGG/``, ``LGG/``).
* BraTS 2021: ``BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz``.
* BraTS 2023+: ``BraTS-GLI-NNNNN-NNN/...-{t1n,t1c,t2w,t2f,seg}.nii.gz``
  (enhancing tumour is label 3 there and becomes 4).
* Medical Segmentation Decathlon Task01_BrainTumour: ``dataset.json`` with 4-D
  ``imagesTr/*.nii.gz`` and ``labelsTr/*.nii.gz``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from keras_advseg.data.errors import DataError
from keras_advseg.data.subject import (
    BRATS2023_LABELS,
    IDENTITY_LABELS,
    MODALITIES,
    Subject,
)

_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)

# File suffix -> package modality name, per layout family.
_BRATS_SUFFIXES = {"t1": "t1", "t1ce": "t1gd", "t2": "t2", "flair": "flair"}
_BRATS2023_SUFFIXES = {"t1n": "t1", "t1c": "t1gd", "t2w": "t2", "t2f": "flair"}
_MSD_MODALITIES = {
    "t1": "t1",
    "t1w": "t1",
    "t1gd": "t1gd",
    "t1ce": "t1gd",
    "t1c": "t1gd",
    "t2": "t2",
    "t2w": "t2",
    "flair": "flair",
}


def discover_subjects(root: str | Path) -> list[Subject]:
    """Lists the subjects under ``root``, whatever the supported layout.

    Args:
        root: Dataset folder.

    Returns:
        Subjects sorted by id. Subjects without a label file are included
        (``subject.seg is None``).

    Raises:
        DataError: ``root`` is missing or not a folder, holds no subject, a
            subject misses a modality, or ``dataset.json`` is malformed.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: expected a dataset folder, found a file")
    if (root / "dataset.json").is_file():
        subjects = _discover_msd(root)
    else:
        subjects = _discover_brats(root, depth=2)
    if not subjects:
        raise DataError(
            f"{root}: no subjects found; expected BraTS folders (<id>/<id>_t1.nii.gz, _t1ce, "
            "_t2, _flair[, _seg]), BraTS 2023 folders (<id>/<id>-t1n.nii.gz, -t1c, -t2w, "
            "-t2f[, -seg]) or a Decathlon folder with dataset.json"
        )
    ids = [s.subject_id for s in subjects]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"{root}: subject ids occur more than once: {duplicates[:5]}")
    return sorted(subjects, key=lambda s: s.subject_id)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _discover_brats(folder: Path, depth: int) -> list[Subject]:
    subjects = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p)):
        subject = _brats_subject(sub)
        if subject is not None:
            subjects.append(subject)
        elif depth > 1:
            subjects.extend(_discover_brats(sub, depth - 1))
    return subjects


def _brats_subject(folder: Path) -> Subject | None:
    by_suffix: dict[str, Path] = {}
    for path in folder.iterdir():
        if path.is_file() and _visible(path) and _NIFTI.search(path.name):
            stem = _NIFTI.sub("", path.name)
            by_suffix[re.split(r"[_-]", stem)[-1].lower()] = path
    if not by_suffix:
        return None
    if any(s in by_suffix for s in _BRATS2023_SUFFIXES):
        suffixes, layout, labels, sep = _BRATS2023_SUFFIXES, "brats2023", BRATS2023_LABELS, "-"
    else:
        layout = "brats2021" if folder.name.lower().startswith("brats2021") else "brats2017"
        suffixes, labels, sep = _BRATS_SUFFIXES, IDENTITY_LABELS, "_"
    by_modality = {suffixes[s]: p for s, p in by_suffix.items() if s in suffixes}
    missing = [m for m in MODALITIES if m not in by_modality]
    if missing:
        expected = [f"{folder.name}{sep}{s}.nii.gz" for s, m in suffixes.items() if m in missing]
        raise DataError(
            f"{folder}: missing modality {', '.join(missing)} (expected {', '.join(expected)})"
        )
    return Subject(
        subject_id=folder.name,
        layout=layout,
        images=tuple(by_modality[m] for m in MODALITIES),
        seg=by_suffix.get("seg"),
        label_map=labels,
    )


def _discover_msd(root: Path) -> list[Subject]:
    manifest = root / "dataset.json"
    try:
        spec = json.loads(manifest.read_text())
        if not isinstance(spec, dict):
            raise TypeError("not a JSON object")
        for key in ("modality", "labels"):
            if not isinstance(spec.get(key), dict):
                raise TypeError(f'{key!r} must be an object like {{"0": "FLAIR"}}')
        modality_names = {int(k): str(v) for k, v in spec["modality"].items()}
        label_names = {int(k): str(v) for k, v in spec["labels"].items()}
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
    ) as exc:
        raise DataError(
            f"{manifest}: not a Decathlon dataset.json with 'modality' and 'labels' ({exc})"
        ) from None
    channel_of = {}
    for index, name in modality_names.items():
        key = _MSD_MODALITIES.get(name.lower().replace("-", "").replace(" ", ""))
        if key is not None:
            channel_of[key] = index
    missing = [m for m in MODALITIES if m not in channel_of]
    if missing:
        raise DataError(
            f"{manifest}: missing modality {', '.join(missing)} in 'modality' {modality_names}"
        )
    label_map = tuple(
        sorted((value, _msd_label(name, manifest)) for value, name in label_names.items())
    )
    entries = [
        _msd_entry(e, manifest, "training", i)
        for i, e in enumerate(_listed(spec, "training", manifest))
    ]
    entries += [
        (e, None) if isinstance(e, str) else (_msd_entry(e, manifest, "test", i)[0], None)
        for i, e in enumerate(_listed(spec, "test", manifest))
    ]
    subjects = []
    for image, label in entries:
        image_path = (root / image).resolve()
        if not image_path.is_file():
            raise DataError(f"{image_path}: listed in {manifest} but not found")
        label_path = (root / label).resolve() if label else None
        if label_path is not None and not label_path.is_file():
            raise DataError(f"{label_path}: listed in {manifest} but not found")
        subjects.append(
            Subject(
                subject_id=_NIFTI.sub("", image_path.name),
                layout="msd",
                images=(image_path,),
                seg=label_path,
                channels=tuple(channel_of[m] for m in MODALITIES),
                label_map=label_map,
            )
        )
    return subjects


def _listed(spec: dict, key: str, manifest: Path) -> list:
    """``spec[key]`` of a dataset.json: a list (none: empty)."""
    value = spec.get(key, [])
    if not isinstance(value, list):
        raise DataError(f"{manifest}: {key!r} must be a list. Received: {type(value).__name__}")
    return value


def _msd_entry(entry, manifest: Path, key: str, index: int) -> tuple[str, str | None]:
    """One entry of a dataset.json list: ``{"image": path[, "label": path]}``."""
    image = entry.get("image") if isinstance(entry, dict) else None
    label = entry.get("label") if isinstance(entry, dict) else None
    if not isinstance(image, str) or not (label is None or isinstance(label, str)):
        raise DataError(
            f"{manifest}: {key}[{index}] must be an object with an 'image' path (and a 'label' "
            f"path){' or a path' if key == 'test' else ''}. Received: {entry!r}"[:300]
        )
    return image, label


def _msd_label(name: str, manifest: Path) -> int:
    text = name.lower()
    if "background" in text:
        return 0
    if "non" in text and "enhanc" in text or "necro" in text:
        return 1
    if "edema" in text or "oedema" in text:
        return 2
    if "enhanc" in text:
        return 4
    raise DataError(
        f"{manifest}: unknown label name {name!r}; expected background, edema, "
        "non-enhancing tumor or enhancing tumour"
    )
