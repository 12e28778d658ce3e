"""`import keras_advseg` chooses TensorFlow's oneDNN CPU kernels unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
        [sys.executable, "-c", code + "; " + SUBPACKAGES_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["fgsm", "True", "True", "True", "True"], done.stderr[-2000:]
    assert (done.stderr.strip() == "") == quiet, done.stderr[-2000:]


SUBPACKAGES_CHECK = (
    "import importlib, inspect; "
    "m = importlib.import_module('keras_advseg.attacks.auto_pgd'); "
    "print(inspect.ismodule(m), callable(keras_advseg.attacks.apgd), "
    "inspect.ismodule(keras_advseg.evaluation), 'tensorflow' in __import__('sys').modules)"
)
"""In a fresh interpreter that has TensorFlow (the quiet-import test's, one start for both): a
subpackage is an attribute of the package on first use, and importing a module named like a
function leaves the function in place."""


def test_subpackages_are_attributes_and_modules_do_not_shadow_functions():
    # with TensorFlow: checked in the quiet-import test's interpreter (SUBPACKAGES_CHECK); here
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


def submodule_names() -> list[str]:
    """Every module and subpackage in the package's folder (not the private ones)."""
    import keras_advseg

    folder = Path(keras_advseg.__file__).parent
    names = [p.stem for p in folder.glob("*.py")]
    names += [p.parent.name for p in folder.glob("*/__init__.py")]
    return sorted(n for n in names if not n.startswith("_"))


def test_every_module_of_the_package_is_an_attribute():
    import keras_advseg

    assert keras_advseg.SUBMODULES == tuple(submodule_names())
    for name in submodule_names():
        assert getattr(keras_advseg, name).__name__ == f"keras_advseg.{name}"
        assert name in dir(keras_advseg)
    with pytest.raises(AttributeError, match="has no attribute 'attack'"):
        keras_advseg.attack  # noqa: B018
    # the registries' packages do not start TensorFlow
    code = (
        "import keras_advseg, sys; "
        "print(keras_advseg.corruptions.CORRUPTIONS.names()[0], keras_advseg.certification.__name__,"
        " 'tensorflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split()[1:] == ["keras_advseg.certification", "False"], done.stderr[-2000:]


@pytest.mark.parametrize(
    "package",
    ["attacks", "certification", "corruptions", "data", "defenses", "evaluation", "config"],
)
def test_every_lazy_export_is_the_object_its_module_defines(package):
    import importlib

    module = importlib.import_module(f"keras_advseg.{package}")
    lookup = module.__getattr__
    assert lookup.exports, f"keras_advseg.{package} exports nothing lazily"
    for name, where in lookup.exports.items():
        assert getattr(module, name) is getattr(importlib.import_module(where), name)
        assert name in module.__all__ and name in dir(module)
    with pytest.raises(AttributeError, match=f"'keras_advseg.{package}' has no attribute 'nope'"):
        module.nope  # noqa: B018


def test_a_name_cannot_be_exported_both_as_a_name_and_a_module():
    from keras_advseg._lazy import lazy_exports

    with pytest.raises(ValueError, match=r"both as a name and a module: \['io'\]"):
        lazy_exports("keras_advseg", {"io": "errors"}, modules=("io",))
