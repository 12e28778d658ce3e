"""keras-advseg: adversarial robustness of medical-image segmentation networks."""

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

__version__ = "0.1.0"
