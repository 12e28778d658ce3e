"""`advseg evaluate` and `advseg compare`: outputs, schema, statistics, transfer, 2-D models, errors."""

from __future__ import annotations

import pytest
from support import run_evaluate


@pytest.fixture(scope="module")
def evaluated(models, prepared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evals")
    uri = f"sqlite:///{root}/mlflow.db"
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
        models / "b.keras", prepared_dir, root / "b", uri, "--attacks", "fgsm", "--eps", "0.05,0.1"
    )
    return root, uri
