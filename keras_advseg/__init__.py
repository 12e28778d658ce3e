"""keras-advseg: adversarial robustness of medical-image segmentation networks."""

import importlib.abc
import importlib.util
import os
import pkgutil
import sys

from keras_advseg._lazy import lazy_exports

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
# TensorFlow 2.21 writes some of them through absl before its log level applies, so the
# import itself runs with standard error closed (as the CLI does); Python exceptions still
# propagate. A level the user set means they want the log: then nothing is hidden.
TF_LOG_LEVEL_SET_BY_USER = "TF_CPP_MIN_LOG_LEVEL" in os.environ


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` with file descriptor 2 pointed at /dev/null."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
            sys.stderr.flush()
            os.dup2(null, 2)
            try:
                load(module)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(null)

        spec.loader.exec_module = exec_module
        return spec


def show_tensorflow_log() -> None:
    """Lets the first TensorFlow import write to standard error again (``advseg --verbose``)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowImport)]


def quiet_tensorflow_import() -> None:
    """Runs the first ``import tensorflow`` of this process quietly (C++ log level 3)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


if "tensorflow" not in sys.modules and not TF_LOG_LEVEL_SET_BY_USER:
    quiet_tensorflow_import()

__version__ = "0.1.0"

SUBMODULES = tuple(
    sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
)
"""Every subpackage and module, read from the package's folder: each is reachable as an
attribute (``keras_advseg.attacks``), imported on first use, so that importing the package
itself does not start TensorFlow."""

__getattr__, __dir__ = lazy_exports(__name__, modules=SUBMODULES)
