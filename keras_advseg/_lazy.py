"""Lazy exports: a package's names imported on first use (PEP 562), written once.

Every package of keras-advseg that exports names whose modules start TensorFlow (or SciPy, or
MLflow) exports them through :func:`lazy_exports`, so that importing the package, its
registries or the CLI's help stays fast. Example::

    __getattr__, __dir__ = lazy_exports(__name__, {"fgsm": "fast_gradient"})

or, a module per line, ``lazy_exports(__name__, by_module({"fast_gradient": ("fgsm",
"fgsm_sweep")}))``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def lazy_exports(
    module_name: str, exports: Mapping[str, str] | None = None, *, modules: Iterable[str] = ()
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a module whose names are imported on first use.

    Args:
        module_name: The exporting module's ``__name__``.
        exports: ``{name: where}``: each exported name and the module that defines it, relative
            to ``module_name`` (``"registry"`` is ``<module_name>.registry``) unless it starts
            with ``keras_advseg.``.
        modules: Submodules of ``module_name`` reachable as attributes (``keras_advseg.attacks``).

    Returns:
        ``(__getattr__, __dir__)``: assign both in the exporting module. A name is looked up
        once, then kept in the module's namespace.
    """
    exports = dict(exports or {})
    modules = tuple(modules)
    overlap = sorted(set(exports) & set(modules))
    if overlap:
        raise ValueError(f"{module_name}: exported both as a name and a module: {overlap}")

    def where(name: str) -> str:
        target = exports[name]
        return target if target.startswith("keras_advseg.") else f"{module_name}.{target}"

    def __getattr__(name: str):
        if name in modules:
            return importlib.import_module(f"{module_name}.{name}")
        if name not in exports:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where(name)), name)
        setattr(sys.modules[module_name], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module_name])) | set(exports) | set(modules))

    __getattr__.exports = {name: where(name) for name in exports}
    __getattr__.modules = modules
    return __getattr__, __dir__


def by_module(names: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """The ``exports`` of :func:`lazy_exports` written a module per line, as imports read.

    Args:
        names: ``{where: names}``: each module and the names exported from it, e.g.
            ``{"registry": ("ATTACKS", "run_attack")}``.

    Returns:
        ``{name: where}``: ``{"ATTACKS": "registry", "run_attack": "registry"}``.
    """
    return {name: where for where, exported in names.items() for name in exported}
