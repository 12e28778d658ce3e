"""`advseg evaluate` and `advseg compare`: outputs, schema, statistics, transfer, 2-D models, errors."""

from __future__ import annotations

import pytest
from support import build_once, run_evaluate


@pytest.fixture(scope="session")
def evaluated(models, prepared_dir, tmp_path_factory, new_store):
    """Two evaluations (a.keras with four attacks and both sweeps, b.keras with FGSM) in one
    store, run once per test run and read by every worker: ``(root, uri)``."""

    def build(root):
        uri = new_store(root)
        run_evaluate(
            models / "a.keras",
            prepared_dir,
            root / "a",
            uri,
            "--attacks",
            "fgsm,ifgsm,targeted-ifgsm,pgd-dice",
            "--eps",
            "0.05,0.1",
            "--steps",
            3,
            "--eps-sweep",
            "0:0.01:0.005",
            "--iterations-sweep",
        )
        run_evaluate(
            models / "b.keras",
            prepared_dir,
            root / "b",
            uri,
            "--attacks",
            "fgsm",
            "--eps",
            "0.05,0.1",
        )

    root = build_once(tmp_path_factory, "evals", build)
    return root, f"sqlite:///{root / 'mlflow.db'}"
