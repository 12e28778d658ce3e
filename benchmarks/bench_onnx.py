"""What a model imported from ONNX costs against the same network in Keras, measured in one run.

The paper's 3-D UNet (16 filters, depth 5) is exported with ``export_onnx`` (its output the
probabilities) and imported back with ``import_onnx`` (channels last, probability outputs). For
each size at batch 1, prints the median seconds of a forward pass and of an input gradient of
the soft Dice loss, for the Keras network (its softmax appended) and for the imported one, and
their ratios (the imported graph moves the channels around every convolution and runs the
exporter's own group normalisation); and the import's one-off cost (its checks against ONNX
Runtime: some twenty runs of the model) against one forward pass.

    python benchmarks/bench_onnx.py --sizes 32 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from _timing import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import keras_advseg  # noqa: E402, F401  (before TensorFlow: it turns on oneDNN's CPU kernels)


def measure(size: int, repeats: int, folder: Path) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_advseg.losses import soft_dice_loss
    from keras_advseg.models import unet3d
    from keras_advseg.onnx.convert import OnnxImport, import_onnx
    from keras_advseg.onnx.export import export_onnx

    keras.utils.set_random_seed(0)
    native = unet3d((size, size, size, 4))
    native(np.zeros((1, size, size, size, 4), "float32"))
    path = folder / f"unet-{size}.onnx"
    export_onnx(native, path)
    started = time.perf_counter()
    imported, source = import_onnx(
        path, (size,) * 3, OnnxImport(outputs="probabilities", layout="channels-last")
    )
    import_s = time.perf_counter() - started
    x = tf.constant(
        np.random.default_rng(0).normal(size=(1, size, size, size, 4)).astype("float32")
    )
    y = tf.one_hot(tf.zeros((1, size, size, size), tf.int32), 4)
    row = {"size": size, "import_s": import_s, **source["checked"]}
    for name, model in (("keras", native), ("imported", imported)):

        @tf.function
        def forward(x, model=model):
            return tf.nn.softmax(model(x, training=False))

        @tf.function
        def input_gradient(x, model=model):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(soft_dice_loss(y, model(x, training=False)))
            return tape.gradient(loss, x)

        row[f"{name}_forward_s"] = median_time(lambda f=forward: f(x).numpy(), repeats)
        row[f"{name}_grad_s"] = median_time(lambda g=input_gradient: g(x).numpy(), repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        "size | Keras forward s | imported forward s | ratio | Keras gradient s | "
        "imported gradient s | ratio | import s | import / Keras forward | "
        "import's output difference | import's gradient error"
    )
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            r = measure(size, args.repeats, Path(folder))
            print(
                f"{size}^3 | {r['keras_forward_s']:.3f} | {r['imported_forward_s']:.3f} | "
                f"{r['imported_forward_s'] / r['keras_forward_s']:.2f} | {r['keras_grad_s']:.3f} | "
                f"{r['imported_grad_s']:.3f} | {r['imported_grad_s'] / r['keras_grad_s']:.2f} | "
                f"{r['import_s']:.1f} | {r['import_s'] / r['keras_forward_s']:.0f} | "
                f"{r['max_output_difference']:.1e} | {r['gradient_relative_error']:.1%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
