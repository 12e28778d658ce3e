"""`import keras_advseg` chooses TensorFlow's oneDNN CPU kernels unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


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


@pytest.mark.parametrize("level, quiet", [(None, True), ("0", False)])
def test_importing_the_package_keeps_tensorflow_quiet_unless_asked(level, quiet):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    code = (
        "import keras_advseg.attacks.core, keras_advseg; print(keras_advseg.attacks.fgsm.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "fgsm", done.stderr[-2000:]
    assert (done.stderr.strip() == "") == quiet, done.stderr[-2000:]


def test_subpackages_are_attributes_and_modules_do_not_shadow_functions():
    code = (
        "import keras_advseg, importlib, inspect; "
        "m = importlib.import_module('keras_advseg.attacks.auto_pgd'); "
        "print(inspect.ismodule(m), callable(keras_advseg.attacks.apgd), "
        "inspect.ismodule(keras_advseg.evaluation), 'tensorflow' in __import__('sys').modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True", "True", "True"], done.stderr[-2000:]
    # the bare package does not start TensorFlow
    done = subprocess.run(
        [sys.executable, "-c", "import keras_advseg, sys; print('tensorflow' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "False"


def test_verbose_lets_tensorflow_write_again():
    code = (
        "import sys, keras_advseg; from keras_advseg.cli import quiet_logs; "
        "hooked = lambda: any(type(f).__name__ == '_QuietTensorFlowImport' for f in sys.meta_path); "
        "before = hooked(); quiet_logs(verbose=True, import_tensorflow=False); "
        "import os; print(before, hooked(), os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["True", "False", "0"], done.stderr[-2000:]
