"""Forward and forward+backward (w.r.t. the input) cost of the 3-D UNet on this machine.

Prints, for each size at batch 1: median seconds of a forward pass, of a
gradient of the soft Dice loss with respect to the input, their ratio, and
the peak resident memory of a full training step measured in a fresh
subprocess, in float32 and under the mixed_bfloat16 policy (target: a 128^3
training step under 5 GB; ``advseg train --precision mixed_bfloat16``).

    python benchmarks/bench_models.py --sizes 32 64 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from _timing import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import keras_advseg  # noqa: E402, F401  (before TensorFlow: it turns on oneDNN's CPU kernels)


def measure(size, repeats):
    import numpy as np
    import tensorflow as tf

    from keras_advseg.losses import soft_dice_loss
    from keras_advseg.models import unet3d

    model = unet3d((size, size, size, 4))
    x = tf.constant(
        np.random.default_rng(0).normal(size=(1, size, size, size, 4)).astype("float32")
    )
    y = tf.one_hot(tf.zeros((1, size, size, size), tf.int32), 4)

    @tf.function
    def forward(x):
        return model(x, training=False)

    @tf.function
    def input_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(soft_dice_loss(y, model(x, training=False)))
        return tape.gradient(loss, x)

    fwd = median_time(lambda: forward(x).numpy(), repeats)
    grad = median_time(lambda: input_gradient(x).numpy(), repeats)
    return {"size": size, "forward_s": fwd, "grad_s": grad, "grad_over_forward": grad / fwd}


def train_step_peak_rss(size, policy="float32"):
    """Runs one training step in a child process under a dtype policy; returns its peak RSS in GB."""
    code = f"""
import os, resource
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, numpy as np
keras.mixed_precision.set_global_policy("{policy}")
from keras_advseg.losses import SoftDiceLoss
from keras_advseg.models import unet3d
m = unet3d(({size},) * 3 + (4,))
m.compile(optimizer=keras.optimizers.Adam(1e-4), loss=SoftDiceLoss())
x = np.random.default_rng(0).normal(size=(1, {size}, {size}, {size}, 4)).astype("float32")
y = keras.ops.convert_to_numpy(keras.ops.one_hot(np.zeros((1, {size}, {size}, {size}), int), 4))
m.train_on_batch(x, y)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for size in args.sizes:
        row = measure(size, args.repeats)
        row["train_step_peak_rss_gb"] = train_step_peak_rss(size)
        row["train_step_peak_rss_gb_mixed_bfloat16"] = train_step_peak_rss(size, "mixed_bfloat16")
        print(json.dumps(row))
    print(
        f"# this process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} "
        "GB"
    )


if __name__ == "__main__":
    main()
