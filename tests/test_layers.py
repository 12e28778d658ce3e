"""Imports point down the package's layers, never up (read from the source, nothing imported).

The layers, lowest first; a module may import its own layer and the layers below it:

1. foundation: the package root, ``_lazy``, ``errors``, ``interrupts``, ``io``, ``vocabulary``
   (the names every layer shares), ``registry``, ``keras_private``
2. measures: ``metrics``, ``losses``, ``lesionwise``, ``models``
3. perturbations: ``attacks``, ``corruptions`` (each with its registry)
4. certification
5. configuration: ``config``, ``train_config``, ``study_presets`` (reads the attack and
   corruption registries)
6. data
7. models in use: ``inference``, ``export``
8. runs: ``training``, ``defenses``, ``evaluation``
9. workflows: ``workflows``, ``tracking`` (files, MLflow)
10. cli: ``cli``, ``cli_args``

Imports inside functions count, and so do the names a package exports lazily
(:func:`keras_advseg._lazy.lazy_exports`).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import keras_advseg

PACKAGE = Path(keras_advseg.__file__).parent

LAYERS = (
    (
        "foundation",
        ("", "_lazy", "errors", "interrupts", "io", "vocabulary", "registry", "keras_private"),
    ),
    ("measures", ("metrics", "losses", "lesionwise", "models")),
    ("perturbations", ("attacks", "corruptions")),
    ("certification", ("certification",)),
    ("configuration", ("config", "train_config", "study_presets")),
    ("data", ("data",)),
    ("models in use", ("inference", "export", "onnx")),
    ("runs", ("training", "defenses", "evaluation")),
    ("workflows", ("workflows", "tracking")),
    ("cli", ("cli", "cli_args")),
)
"""Each layer and the top-level modules and packages in it ("" is the package root)."""

RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}


def layer_of(module: str) -> int:
    """The layer of ``keras_advseg[.part[...]]``, by its first part below the package.

    Raises:
        KeyError: a module in no layer.
    """
    parts = module.split(".")
    return RANK[parts[1] if len(parts) > 1 else ""]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(module: str, source: str, is_package: bool) -> list[tuple[str, int]]:
    """The package's modules that ``source`` (the text of ``module``) imports, with their lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, node.lineno))
            # `from keras_advseg import config` imports the module keras_advseg.config
            found += [
                (f"{base}.{alias.name}", node.lineno)
                for alias in node.names
                if (PACKAGE.parent / base.replace(".", "/") / alias.name).exists()
                or (PACKAGE.parent / base.replace(".", "/") / f"{alias.name}.py").exists()
            ]
    return [(name, line) for name, line in found if name.split(".")[0] == "keras_advseg"]


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """One line per import of ``module`` that points to a higher layer."""
    own = layer_of(module)
    return [
        f"{module} ({LAYERS[own][0]}) imports {target} ({LAYERS[layer_of(target)][0]}), "
        f"a higher layer: line {line}"
        for target, line in imported_modules(module, source, is_package)
        if layer_of(target) > own
    ]


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    unplaced = []
    for path in modules():
        try:
            layer_of(module_name(path))
        except KeyError:
            unplaced.append(module_name(path))
    assert unplaced == [], f"add these modules to a layer of tests/test_layers.py: {unplaced}"


def test_no_import_points_up_a_layer():
    found = []
    for path in modules():
        found += upward_imports(module_name(path), path.read_text(), path.name == "__init__.py")
    assert found == [], "\n".join(found)


def test_no_lazy_export_points_up_a_layer():
    found = []
    for path in modules():
        if path.name == "_lazy.py" or "lazy_exports(" not in path.read_text():
            continue
        name = module_name(path)
        lookup = importlib.import_module(name).__getattr__
        for target in set(lookup.exports.values()):
            if layer_of(target) > layer_of(name):
                found.append(f"{name} exports names of {target}, a higher layer")
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    "module, source, expected",
    [
        (
            "keras_advseg.attacks.core",
            "from keras_advseg.config import REGIONS",
            "keras_advseg.attacks.core (perturbations) imports keras_advseg.config "
            "(configuration), a higher layer: line 1",
        ),
        (
            "keras_advseg.metrics",
            "import numpy\ndef f():\n    from keras_advseg import workflows",
            "keras_advseg.metrics (measures) imports keras_advseg.workflows (workflows), "
            "a higher layer: line 3",
        ),
        ("keras_advseg.data.corrupted", "from keras_advseg.corruptions import corrupt", None),
        ("keras_advseg.attacks.core", "from keras_advseg.attacks.losses import attack_loss", None),
    ],
)
def test_the_check_names_the_module_and_the_import(module, source, expected):
    assert upward_imports(module, source) == ([expected] if expected else [])
