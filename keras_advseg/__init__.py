"""keras-advseg: adversarial robustness of medical-image segmentation networks."""

import importlib
import os
import sys

# TensorFlow turns its oneDNN CPU kernels on only for CPUs with AVX-512 VNNI, AMX and the
# like; elsewhere a 3-D UNet's training step runs about 7x slower without them
# (benchmarks/bench_cpu.py). The variable is read when TensorFlow is first imported, so it
# is set here, before any of this package's modules import it; a value the user set wins.
# Results depend on the kernels: runs log the setting (tracking.environment_tags), which
# stays unset (TensorFlow's own choice) when TensorFlow was imported first.
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# TensorFlow's C++ log prints lines that are not errors when it is imported and when it
# builds a graph ("failed call to cuInit" on a CPU machine, "remapper failed", oneDNN
# notices); they bury real messages. Quiet unless the user chose a level: their setting wins.
TF_LOG_LEVEL_SET_BY_USER = "TF_CPP_MIN_LOG_LEVEL" in os.environ
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

SUBPACKAGES = (
    "attacks",
    "data",
    "defenses",
    "evaluation",
    "models",
    "training",
    "workflows",
    "config",
    "errors",
    "registry",
    "losses",
    "metrics",
    "io",
    "inference",
    "export",
    "tracking",
)
"""Reachable as attributes (``keras_advseg.attacks``), imported on first use: importing the
package itself does not start TensorFlow."""


def __getattr__(name: str):
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(SUBPACKAGES))
