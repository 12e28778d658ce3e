"""`import keras_advseg` chooses TensorFlow's oneDNN CPU kernels unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "setting, first, expected",
    [
        (None, "keras_advseg", "1"),  # the package's default
        ("0", "keras_advseg", "0"),  # the user's setting wins
        (None, "tensorflow", "unset"),  # too late to choose: TensorFlow's own choice stays
    ],
)
def test_onednn_default_and_what_overrides_it(setting, first, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    code = (
        f"import {first}, keras_advseg, os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))"
    )
    if first == "tensorflow":  # a stand-in module: the check is on sys.modules, not on TF
        code = (
            "import sys, types; sys.modules['tensorflow'] = types.ModuleType('tensorflow'); "
            + code.replace("import tensorflow, ", "import ")
        )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == expected
