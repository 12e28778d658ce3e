"""Shared fixtures: tiny NIfTI datasets in every supported layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one test process per core: one TensorFlow thread each (inherited by the
    # commands the tests start) instead of thread pools that outnumber the cores and spin on
    # them (docs/benchmarks.md, "The test suite": 14 min 4 s against 15 min 21 s).
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    # and one OpenMP thread (FINUFFT in motion, OpenBLAS): OpenMP's threads also spin on the
    # cores after each call, taking them from the other test process
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# The tracking servers the tests start need no job runner: MLflow 3's starts about seven
# processes, some 25 s of CPU taken from the other test process.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

# isort: off
import keras_advseg  # noqa: E402, F401  (chooses TensorFlow's CPU kernels before its import)

# isort: on

import numpy as np
import pytest
from support import (
    NEW_SUFFIXES,
    OLD_SUFFIXES,
    build_once,
    label_volume,
    modality_volume,
    save_nifti,
    write_brats,
)


@pytest.fixture
def brats2021(tmp_path) -> Path:
    root = tmp_path / "brats2021"
    for i in range(3):
        write_brats(root, f"BraTS2021_{i:05d}", OLD_SUFFIXES, (0, 1, 2, 4))
    return root


@pytest.fixture
def brats2023(tmp_path) -> Path:
    root = tmp_path / "brats2023"
    for i in range(2):
        write_brats(root, f"BraTS-GLI-{i:05d}-000", NEW_SUFFIXES, (0, 1, 2, 3), sep="-")
    return root


@pytest.fixture
def msd(tmp_path) -> Path:
    root = tmp_path / "Task01_BrainTumour"
    order = ["flair", "t1", "t1gd", "t2"]
    image = np.stack([modality_volume(m) for m in order], axis=-1)
    training = []
    for i in (1, 2):
        save_nifti(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", image)
        save_nifti(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", label_volume((0, 1, 2, 3)))
        training.append(
            {
                "image": f"./imagesTr/BRATS_{i:03d}.nii.gz",
                "label": f"./labelsTr/BRATS_{i:03d}.nii.gz",
            }
        )
    save_nifti(root / "imagesTs" / "BRATS_900.nii.gz", image)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "BRATS",
                "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                "labels": {
                    "0": "background",
                    "1": "edema",
                    "2": "non-enhancing tumor",
                    "3": "enhancing tumour",
                },
                "training": training,
                "test": ["./imagesTs/BRATS_900.nii.gz"],
            }
        )
    )
    return root


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Six phantom subjects at 4 mm (about 50x58x48 voxels), written once per test run."""
    from keras_advseg.data.phantom import PhantomConfig, synthesize_dataset

    def build(root):
        synthesize_dataset(root, 6, seed=0, config=PhantomConfig(voxel_mm=4.0), progress=False)

    return build_once(tmp_path_factory, "phantom", build)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """Untrained 3-D UNets a.keras and b.keras (other seeds) and a slice-wise 2-D UNet c2d.keras,
    at 16^3, written once per test run."""
    import keras

    from keras_advseg.models import SliceWise, unet2d, unet3d

    def build(root):
        root.mkdir()
        keras.utils.set_random_seed(0)
        unet3d((16, 16, 16, 4), base_filters=4, depth=2).save(root / "a.keras")
        keras.utils.set_random_seed(1)
        unet3d((16, 16, 16, 4), base_filters=4, depth=2).save(root / "b.keras")
        net2d = SliceWise(unet2d((16, 16, 4), base_filters=4, depth=2))
        net2d(np.zeros((1, 16, 16, 16, 4), "float32"))
        net2d.save(root / "c2d.keras")

    return build_once(tmp_path_factory, "models", build)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables created, once per test run (creating the tables
    takes about 2.5 s, copying the file about 0.05 s): :func:`new_store` copies it."""
    from mlflow.tracking import MlflowClient

    def build(path):
        MlflowClient(f"sqlite:///{path}").search_experiments()

    return build_once(tmp_path_factory, "empty-mlflow.db", build)


@pytest.fixture(scope="session")
def new_store(empty_store):
    """``new_store(folder, name="mlflow.db")``: a fresh tracking store at ``folder/name``, a
    copy of :func:`empty_store`; returns its ``sqlite:///`` URI. Tests of how a store is
    created (its folder missing, concurrent processes) create their own."""
    import shutil

    def make(folder, name: str = "mlflow.db") -> str:
        target = Path(folder) / name
        if target.exists():
            raise FileExistsError(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_store, target)
        return f"sqlite:///{target}"

    return make


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, new_store) -> Path:
    """``advseg reproduce --preset smoke --workers 1`` run once per test run, in this process
    (a fresh interpreter would add seconds of imports): ``study/`` (the study), ``mlflow.db``
    (its store) and ``first.out`` (what the command printed). The study's own test resumes it;
    the Ray engine's test compares its tables with these."""
    from click.testing import CliRunner
    from support import smoke_command

    from keras_advseg.cli import main

    def build(root):
        uri = new_store(root)
        # one process: the suite's other worker runs beside it
        result = CliRunner().invoke(main, smoke_command(root / "study", uri, "--workers", "1"))
        assert result.exit_code == 0, result.output[-3000:]
        (root / "first.out").write_text(result.output)

    return build_once(tmp_path_factory, "smoke-study", build)


@pytest.fixture(scope="session")
def prepared_dir(phantom_dir, tmp_path_factory) -> Path:
    """The phantom prepared at 16^3 without N4 (fast), once per test run."""
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset

    def build(out):
        prepare_dataset(
            phantom_dir,
            out,
            PrepareConfig(shape=(16, 16, 16), n4=False, test_fraction=0.34),
            progress=False,
        )

    return build_once(tmp_path_factory, "prepared", build)


def _fixture_seeds() -> tuple[int, ...]:
    value = os.environ.get("ADVSEG_FIXTURE_SEEDS") or os.environ.get("ADVSEG_FIXTURE_SEED", "1,2")
    return tuple(int(seed) for seed in value.split(","))


FIXTURE_SEEDS = _fixture_seeds()
"""The seeds of the trained fixtures (``fitted_unet``): every test that judges the trained
network runs once per seed in the same test run (``[seed1]``, ``[seed2]``), so that no test
rests on one machine's weights (another CPU trains other weights from the same seed).
``ADVSEG_FIXTURE_SEEDS=3`` (or ``3,4``) picks others; ``TF_ENABLE_ONEDNN_OPTS=0`` (TensorFlow's
other CPU kernels) is the other way to get other weights, checked by hand
(docs/contributing.md)."""


@pytest.fixture(scope="session")
def fixture_seed(request) -> int:
    """The seed of the trained fixtures this test runs under (parametrized by
    :func:`pytest_generate_tests` over :data:`FIXTURE_SEEDS`)."""
    return request.param


def pytest_generate_tests(metafunc):
    if "fixture_seed" in metafunc.fixturenames:
        # a test that only checks how the outputs of the trained network agree with each other
        # (a card with its commands' files, a command's rows with the library) needs one network
        one = metafunc.definition.get_closest_marker("one_fixture_seed") is not None
        metafunc.parametrize(
            "fixture_seed",
            FIXTURE_SEEDS[:1] if one else FIXTURE_SEEDS,
            indirect=True,
            scope="session",
            ids=lambda s: f"seed{s}",
        )


@pytest.fixture(scope="session")
def fitted_unet(fitted_unet_path):
    """A small 3-D UNet trained for 150 steps on the 16^3 phantom (cross-entropy learns fastest).

    Trained once per test run (:func:`fitted_unet_path`) and loaded by every worker: the saved
    archive holds the weights exactly. Which network it is depends on :func:`fixture_seed` and
    on the machine's kernels, and no test may depend on that. Op determinism is on in every
    process that uses it, as in the one that trained it.
    """
    import tensorflow as tf

    from keras_advseg.export import load_model

    tf.config.experimental.enable_op_determinism()
    return load_model(fitted_unet_path)


@pytest.fixture(scope="session")
def fitted_unet_path(prepared_dir, tmp_path_factory, fixture_seed) -> Path:
    """The ``.keras`` file of :func:`fitted_unet`, trained once per test run and seed.

    Op determinism is on first (as training runs turn it on), so the network is the same in
    whichever process trains it.
    """

    def build(path):
        import keras
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

        from keras_advseg.data.pipeline import volume_dataset
        from keras_advseg.data.prepare import load_prepared
        from keras_advseg.export import save_model
        from keras_advseg.models import unet3d

        keras.utils.set_random_seed(fixture_seed)
        prepared = load_prepared(prepared_dir)
        model = unet3d((16, 16, 16, 4), base_filters=8, depth=3, dropout=0.0)
        model.compile(
            optimizer=keras.optimizers.Adam(3e-3),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        )
        # built before fit, the optimizer's variables are not created inside the first traced
        # step, which TensorFlow would then trace twice (as SegmentationTrainer.compile does)
        model.optimizer.build(model.trainable_variables)
        model.fit(
            volume_dataset(prepared, "train", batch_size=2, seed=fixture_seed - 1).repeat(),
            steps_per_epoch=150,
            epochs=1,
            verbose=0,
        )
        save_model(model, path)

    return build_once(tmp_path_factory, f"fitted_unet-seed{fixture_seed}.keras", build)


LONGEST_FIRST = (
    "workflows/test_reproduce.py",
    "workflows/test_ray_engine.py",
    "training/test_distribute.py",
    "workflows/test_train.py",
    "defenses/test_trainers.py",
    "tests/test_docs.py",
    "tests/test_notebook.py",
    "evaluation/test_audit.py",
    "evaluation/test_distributed.py",
    "faults/test_option_and_file_faults.py",
    "certification/test_certification.py",
    "tests/test_export.py",
    "faults/test_user_data_faults.py",
)
"""The test files that take longest (``--durations``), longest first: started first, so that
under ``make test`` (``pytest -n 2 --dist loadfile --no-loadscope-reorder``; xdist would
otherwise order the files by their number of tests) the two processes share them out and run
the many short files at the end, instead of one process waiting on a long file."""


TRAINED = ("fitted_unet",)
"""Fixtures trained inside the suite: a test that uses one (directly or through another fixture)
is marked ``trained`` (``-m trained`` runs just those, e.g. under other
:data:`FIXTURE_SEEDS`)."""


def pytest_collection_modifyitems(items):
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in TRAINED):
            item.add_marker(pytest.mark.trained)

    def rank(item):
        path = item.path.as_posix()
        return next(
            (i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)), len(LONGEST_FIRST)
        )

    items.sort(key=rank)  # stable: the order within each file is kept
