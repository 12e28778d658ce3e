"""Helper run in a subprocess: evaluation on one device vs MirroredStrategy over two logical CPUs.

Usage: distributed_eval.py MODEL PREPARED. Prints JSON: the devices used and both evaluations' rows.
"""

import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
# isort: off
import keras_advseg  # noqa: E402, F401  (turns on oneDNN's CPU kernels before TensorFlow loads)
import tensorflow as tf  # noqa: E402

# isort: on

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from keras_advseg.config import EvalConfig  # noqa: E402
from keras_advseg.data.prepare import load_prepared  # noqa: E402
from keras_advseg.evaluation import evaluate  # noqa: E402
from keras_advseg.evaluation.distributed import evaluate_distributed, local_devices  # noqa: E402
from keras_advseg.export import load_model  # noqa: E402

model, prepared = load_model(sys.argv[1]), load_prepared(sys.argv[2])
ids = prepared.ids("train")[:2] + prepared.ids("test")[:1]  # three subjects over two devices
config = EvalConfig(attacks=("fgsm", "pgd-dice", "apgd-js"), eps=(0.05,), steps=2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored = evaluate_distributed(strategy, model, prepared, ids, config, progress=False)
single = evaluate(model, prepared, ids, config, progress=False)
print(
    json.dumps(
        {
            "devices": local_devices(strategy),
            "mirrored": mirrored.rows,
            "single": single.rows,
            "example": mirrored.example["subject"],
            "ids": ids,
        },
        default=float,
    )
)
