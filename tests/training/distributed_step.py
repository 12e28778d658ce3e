"""Helper run in a subprocess: one training step on one device vs MirroredStrategy over two CPUs.

Prints the largest weight difference per defense as JSON.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: support

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
# isort: off
import keras_advseg  # noqa: E402, F401  (turns on oneDNN's CPU kernels before TensorFlow loads)
import tensorflow as tf  # noqa: E402

# isort: on

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from support import small_segmenter  # noqa: E402

from keras_advseg.defenses import (  # noqa: E402
    AdversarialTrainer,
    FastTrainer,
    PGDTrainer,
    SegmentationTrainer,
    TradesTrainer,
)

rng = np.random.default_rng(0)
x = rng.normal(size=(4, 16, 16, 16, 4)).astype("float32")
y = tf.one_hot(rng.integers(0, 4, size=(4, 16, 16, 16)), 4).numpy()
makers = {
    "none": lambda n: SegmentationTrainer(n),
    "adversarial-joint": lambda n: AdversarialTrainer(n, eps=0.05, mode="joint"),
    "adversarial-alternating": lambda n: AdversarialTrainer(n, eps=0.05, mode="alternating"),
    "pgd": lambda n: PGDTrainer(n, eps=0.05, steps=1),
    "fast": lambda n: FastTrainer(n, eps=0.05),
    "trades": lambda n: TradesTrainer(n, eps=0.05, steps=1),
}


def one_step(make, strategy):
    with strategy.scope():
        trainer = make(small_segmenter(0))
        trainer.compile(optimizer=keras.optimizers.SGD(0.5))
        trainer(x[:1])
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # global batch 4
    trainer.fit(data, epochs=1, verbose=0, shuffle=False)
    return [np.asarray(w) for w in trainer.network.get_weights()]


initial = None
result = {}
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for name, make in makers.items():
    single = one_step(make, tf.distribute.get_strategy())
    parallel = one_step(make, mirrored)
    start = [np.asarray(w) for w in small_segmenter(0).get_weights()]
    result[name] = {
        "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(single, parallel)),
        "max_update": max(float(np.abs(a - b).max()) for a, b in zip(single, start)),
        "replicas": mirrored.num_replicas_in_sync,
    }
print(json.dumps(result))
