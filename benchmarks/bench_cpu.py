"""TensorFlow's oneDNN CPU kernels on and off, measured in one run.

keras-advseg sets ``TF_ENABLE_ONEDNN_OPTS=1`` when it is imported before TensorFlow
(``keras_advseg/__init__.py``); TensorFlow itself enables oneDNN only on CPUs with
AVX-512 VNNI, AMX and the like. This script measures, in two child processes (the
variable is read once, at TensorFlow's import), the median seconds of a clean training
step and a forward pass of the ``quick`` preset's 3-D UNet (32^3, 8 filters, depth 4,
batch 1) and of its 2-D UNet (batch 32 slices), and prints the ratio off / on:
above 1 means oneDNN is faster on this machine.

    python benchmarks/bench_cpu.py [--size 32] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
import keras, tensorflow as tf
from _timing import median_time
from keras_advseg.models import unet2d, unet3d
size, repeats = int(sys.argv[2]), int(sys.argv[3])
keras.utils.set_random_seed(0)
out = {}
for name, model, batch in (
    ("3d", unet3d((size,) * 3 + (4,), base_filters=8, depth=4), (1,) + (size,) * 3),
    ("2d", unet2d((size, size, 4), base_filters=8, depth=4), (32, size, size)),
):
    x = tf.random.normal(batch + (4,))
    y = tf.one_hot(tf.random.uniform(batch, 0, 4, tf.int32), 4)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step(x, y, model=model, optimizer=optimizer):
        with tf.GradientTape() as tape:
            z = model(x, training=True)
            loss = keras.ops.mean(keras.losses.categorical_crossentropy(y, z, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    forward = tf.function(lambda x, model=model: model(x, training=False))
    out[name + "_step"] = median_time(lambda: step(x, y), repeats)
    out[name + "_forward"] = median_time(lambda: forward(x), repeats)
print("RESULT " + json.dumps(out))
"""


def measure(onednn: str, size: int, repeats: int) -> dict:
    """Median seconds per operation in a child process with ``TF_ENABLE_ONEDNN_OPTS=onednn``."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, __file__, str(size), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(r for r in done.stdout.splitlines() if r.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    off, on = measure("0", args.size, args.repeats), measure("1", args.size, args.repeats)
    print(f"{args.size}^3, median of {args.repeats}; seconds with oneDNN off | on | off/on")
    for key in off:
        print(f"  {key:12s} {off[key]:8.4f} {on[key]:8.4f} {off[key] / on[key]:6.2f}x")


if __name__ == "__main__":
    main()
