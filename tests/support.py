"""Helpers shared by the tests (``tests`` is on the import path: see pyproject.toml)."""

from __future__ import annotations

import csv
import hashlib
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ADVSEG = [sys.executable, "-m", "keras_advseg.cli"]
"""The CLI as a subprocess."""

SHAPE = (12, 10, 8)
# Constant intensity per modality in package order (t1, t1gd, t2, flair), so order is checkable.
LEVEL = {"t1": 10.0, "t1gd": 20.0, "t2": 30.0, "flair": 40.0}


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def label_volume(values=(0, 1, 2, 4)) -> np.ndarray:
    """A label map holding each of ``values`` in a known slab along axis 0."""
    labels = np.zeros(SHAPE, np.uint8)
    for i, value in enumerate(values):
        labels[3 * i : 3 * i + 3] = value
    return labels


def modality_volume(name: str) -> np.ndarray:
    data = np.full(SHAPE, LEVEL[name], np.float32)
    data[0, 0, 0] = 0  # background voxel
    return data


def write_brats(
    root: Path, subject: str, suffixes: dict, seg_values, sep="_", with_seg=True
) -> Path:
    folder = root / subject
    for suffix, modality in suffixes.items():
        save_nifti(folder / f"{subject}{sep}{suffix}.nii.gz", modality_volume(modality))
    if with_seg:
        save_nifti(folder / f"{subject}{sep}seg.nii.gz", label_volume(seg_values))
    return folder


OLD_SUFFIXES = {"t1": "t1", "t1ce": "t1gd", "t2": "t2", "flair": "flair"}
NEW_SUFFIXES = {"t1n": "t1", "t1c": "t1gd", "t2w": "t2", "t2f": "flair"}


def linf(a, b):
    """Per-sample L-inf distance."""
    return np.abs(np.asarray(a) - np.asarray(b)).reshape(len(a), -1).max(axis=1)


def span(x):
    """Each sample's intensity range, the unit of relative budgets."""
    flat = np.asarray(x).reshape(len(x), -1)
    return flat.max(axis=1) - flat.min(axis=1)


def smooth_head(shape, radii, seed: int = 0) -> np.ndarray:
    """A smooth ellipsoidal 'brain' of four sequences in scanner-like intensities (100 to 500),
    0 outside: ``shape + (4,)`` float32, the ellipsoid's half-axes ``radii`` in voxels."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    radii = np.asarray(radii, float)[:, None, None, None]
    inside = np.sqrt((((grid - centre) / radii) ** 2).sum(0)) < 1
    texture = ndimage.gaussian_filter(rng.uniform(0, 1, tuple(shape) + (4,)), (2, 2, 2, 0))
    return np.where(inside[..., None], 100 + 400 * texture, 0).astype(np.float32)


def tiny3d():
    from keras_advseg.models import unet3d

    return unet3d((16, 16, 16, 4), base_filters=2, depth=2)


def small_segmenter(seed: int | None = None, shape=(16, 16, 16)):
    """A segmentation network of seven layers for the tests of trainers' steps and of attacks'
    properties: what is under test is the step or the attack, not the UNet's layers, and a
    UNet's graph (traced once per trainer, and once per replica under MirroredStrategy) would
    take most of such a test's time. It keeps what those steps meet in a UNet: padded 3-D
    convolutions, instance normalization (per sample, so a batch split over replicas must not
    change it), a strided convolution to a coarser level and its upsampling, and logits
    ``shape + (4,)`` from 4 input sequences. ``seed`` sets Keras's random seed first."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input((*shape, 4))
    h = keras.layers.Conv3D(4, 3, padding="same")(inputs)
    h = keras.layers.GroupNormalization(groups=-1)(h)
    h = keras.layers.LeakyReLU(0.01)(h)
    h = keras.layers.Conv3D(8, 3, strides=2, padding="same")(h)  # no max pooling: on a flat
    # background its ties route the gradient by the kernel's choice
    h = keras.layers.LeakyReLU(0.01)(h)
    h = keras.layers.UpSampling3D(2)(h)
    return keras.Model(inputs, keras.layers.Conv3D(4, 1)(h), name="small_segmenter")


def one_hot(labels):
    import keras

    return keras.ops.convert_to_numpy(keras.ops.one_hot(labels, 4))


def scoring_args(model, data, out, uri, *extra, command="evaluate"):
    """``advseg evaluate MODEL --data DATA --out OUT --tracking-uri URI EXTRA...`` arguments (or
    another command that scores a model: ``corruptions``, ``certify``, ``audit``)."""
    return [
        command,
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--tracking-uri",
        uri,
        *map(str, extra),
    ]


def run_evaluate(model, prepared_dir, out, uri, *extra, command="evaluate"):
    """``advseg evaluate`` (or ``command``, e.g. ``corruptions``) in-process; asserts success."""
    from click.testing import CliRunner

    from keras_advseg.cli import main

    args = scoring_args(
        model, prepared_dir, out, uri, "--experiment", "eval-tests", *extra, command=command
    )
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 right now."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(args, count: int = 2, timeout: int = 600) -> list[str]:
    """``advseg ARGS`` as ``count`` local processes of one ``MultiWorkerMirroredStrategy``
    cluster (``TF_CONFIG`` on free ports), side by side; asserts that each succeeded.

    Returns:
        Each worker's output (standard output and error), in worker order.
    """
    import json
    import os
    import subprocess

    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(count)]}
    processes = []
    for index in range(count):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [*ADVSEG, *map(str, args)],
                env=dict(os.environ, TF_CONFIG=json.dumps(task)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs


def run_ok(args, *, timeout: int, **kwargs):
    """Runs ``args`` as a subprocess with its text output captured (``kwargs``: as
    :func:`subprocess.run`: ``cwd``, ``env``); asserts that it succeeded, showing the end of its
    standard error otherwise.

    Returns:
        The :class:`subprocess.CompletedProcess`.
    """
    import subprocess

    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def train_args(prepared_dir, out, uri, *extra):
    """``advseg train`` arguments for a smoke-preset run."""
    return [
        "train",
        "--data",
        str(prepared_dir),
        "--out",
        str(out),
        "--preset",
        "smoke",
        "--tracking-uri",
        uri,
        "--experiment",
        "tests",
        *map(str, extra),
    ]


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (links by their target)."""
    result = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_symlink():
            result[str(path.relative_to(folder))] = "link:" + str(path.readlink())
        elif path.is_file():
            result[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def fails_cleanly(args, *, exit_code=2, contains=()):
    """Runs ``advseg ARGS`` in-process; asserts a one-line message, no traceback, the exit code."""
    from click.testing import CliRunner

    from keras_advseg.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    # click's own usage errors add its "Usage:" and "Try ... --help" lines before the message
    lines = [
        line
        for line in result.output.strip().splitlines()
        if not line.startswith(("Usage:", "Try "))
    ]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for text in contains:
        assert str(text) in lines[0], lines[0]
    return lines[0]


HELP_FILE = re.compile(
    r"(?<![\w/.<>-])((?:[\w<>]+/)*[\w<>-]+\.(?:csv|json|md|png|keras|nii\.gz|pb)|(?:[\w<>]+/)+)(?!\w)"
)
"""A file (``per_subject.csv``, ``<id>.nii.gz``) or folder (``checkpoint/``) named in a help
text; ``OUT/`` stands for the output folder, upper-case names (``MODEL.keras``) for arguments
and names under ``docs/`` (``docs/evaluation.md``) for pages of the documentation."""


def help_files(*command: str) -> set[str]:
    """The files and folders that ``advseg COMMAND --help`` says the command writes, as glob
    patterns (``<id>`` becomes ``*``); a documentation page the help points to is not one."""
    from click.testing import CliRunner

    from keras_advseg.cli import main

    text = CliRunner().invoke(main, [*command, "--help"], terminal_width=1000).output
    text = " ".join(text.split())  # undo click's wrapping
    names = {m.group(1).removeprefix("OUT/") for m in HELP_FILE.finditer(text)}
    names = {n for n in names if n and not n.split(".")[0].split("/")[0].isupper()}
    names = {n for n in names if not n.startswith("docs/")}  # a page to read, not an output
    return {re.sub(r"<[^>]+>", "*", n) for n in names}


def assert_help_files_written(command: tuple[str, ...], folder: Path, *, ignore=()) -> None:
    """Every file or folder ``advseg COMMAND --help`` names exists under ``folder`` (``ignore``:
    names written only under options the test did not give)."""
    import fnmatch

    present = {
        p.relative_to(folder).as_posix() + ("/" if p.is_dir() else "") for p in folder.rglob("*")
    }
    names = {p.rsplit("/", 2)[-1] if not p.endswith("/") else p for p in present}
    present |= {p.split("/")[-1] for p in present if not p.endswith("/")} | names
    for pattern in help_files(*command) - set(ignore):
        assert any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, "*/" + pattern) for p in present
        ), f"advseg {' '.join(command)} --help names {pattern}, which it did not write in {folder}"


def shared_root(tmp_path_factory) -> Path:
    """One folder per test run, shared by every pytest-xdist worker of that run.

    Each worker's base temporary folder is ``<run>/popen-gwN``; without xdist it is ``<run>``.
    """
    base = tmp_path_factory.getbasetemp()
    return base.parent if base.name.startswith("popen-gw") else base


def build_once(tmp_path_factory, name: str, build) -> Path:
    """Builds ``<shared root>/<name>`` once per test run, whichever worker asks first.

    ``build(path)`` writes the folder or file at ``path`` (its final place: a prepared dataset
    records where its source lies); the other workers wait on a lock (``fcntl.flock``) and read
    what it wrote once a ``.<name>.done`` mark says it is complete. A build that raised leaves
    nothing behind, so the next worker tries again and reports its own error.
    """
    import fcntl
    import shutil

    def remove(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    root = shared_root(tmp_path_factory)
    target, done = root / name, root / f".{name}.done"
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            remove(target)
            try:
                build(target)
            except BaseException:
                remove(target)
                raise
            done.touch()
    return target


def smoke_command(out: Path, uri: str, *options: str) -> list[str]:
    """The arguments of ``advseg reproduce --preset smoke`` into ``out``, runs in ``uri``."""
    return ["reproduce", "--preset", "smoke", "--out", str(out), "--tracking-uri", uri, *options]


def swallow_an_interrupt(signum: int):
    """Sends ``signum`` to this process inside code that, as TensorFlow's ``DType.min`` does,
    turns the KeyboardInterrupt arriving in it into a TypeError under a bare ``except``."""
    import os
    import time

    try:
        os.kill(os.getpid(), signum)
        time.sleep(2)  # the handler runs here
    except BaseException:
        raise TypeError("Cannot find minimum value of <dtype: 'int32'>.") from None
    return "finished"
