"""What certifying one volume costs, against the forward passes it needs, measured in one run.

For the paper's 3-D UNet (16 filters, depth 5) at each ``--sizes``, prints the median seconds
of ``certify`` (n0 + n noisy samples, ``--batch`` copies per pass; left out, the batch
``certify`` chooses from the memory available) and of the same number of batched forward passes
alone (the noise drawn at once, no counting, no test), and their ratio: the target is at most
1.1 (the per-copy noise, the counting on the device, the binomial test and Holm's correction
cost under 10 %). Beside them: the batch, the forward pass's memory as ``certify`` estimates it
from the traced graph, and the process's peak resident memory so far (sizes run in the order
given, so list them smallest first).

    python benchmarks/bench_certify.py [--sizes 32 128] [--n 100] [--n0 10] [--batch 8]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from _timing import median_time  # noqa: E402

import keras_advseg  # noqa: E402, F401  (before TensorFlow: it turns on oneDNN's CPU kernels)


def measure(size: int, args) -> tuple[float, float, int, float]:
    """Median seconds of ``certify`` and of its forward passes alone at ``size``^3, the batch,
    and the estimated GiB of its forward pass."""
    import numpy as np
    import tensorflow as tf

    from keras_advseg.attacks.core import logits_function
    from keras_advseg.certification import SmoothedModel, certify
    from keras_advseg.certification.memory import forward_memory
    from keras_advseg.models import unet3d

    model = unet3d((size, size, size, 4), base_filters=16, depth=5)
    x = np.random.default_rng(0).normal(size=(size, size, size, 4)).astype("float32")
    logits = logits_function(model)
    smoothed = SmoothedModel(model, sigma=0.25, n=args.n, n0=args.n0, batch_size=args.batch)
    batch = smoothed.batch_for(x)  # decided now, while the memory is free; certify reuses it
    estimate = forward_memory(model, x.shape).batch_bytes(batch) / 2**30
    # the passes certify makes: each stage in passes of min(batch, its samples) copies
    sizes = [
        size_
        for samples in (args.n0, args.n)
        for size_ in [min(batch, samples)] * math.ceil(samples / min(batch, samples))
    ]

    @tf.function
    def noisy_pass(x, seed, copies):
        shape = tf.concat([[copies], tf.shape(x)[1:]], 0)
        return tf.argmax(logits(x + 0.25 * tf.random.stateless_normal(shape, seed)), -1)

    tensor = tf.constant(x[None])

    def passes():
        for b, copies in enumerate(sizes):
            noisy_pass(tensor, tf.constant([0, b], tf.int64), copies).numpy()

    def timed(fn):
        if args.repeats:
            return median_time(fn, args.repeats)
        start = time.perf_counter()  # the first call alone, its tracing included
        fn()
        return time.perf_counter() - start

    t_passes = timed(passes)
    t_certify = timed(
        lambda: certify(model, x, sigma=0.25, n=args.n, n0=args.n0, batch_size=args.batch, seed=0)
    )
    return t_certify, t_passes, batch, estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--n0", type=int, default=10)
    parser.add_argument("--batch", type=int, default=None, help="default: chosen from memory")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed calls after a first one (0: time the first)"
    )
    args = parser.parse_args()
    import resource

    from keras_advseg.certification.memory import available_memory

    memory, where = available_memory()
    print(
        f"n0 + n = {args.n0} + {args.n} samples, "
        + (f"{args.batch} per forward pass" if args.batch else "batch chosen from memory")
        + f"; {memory / 2**30:.1f} GiB of {where}"
    )
    print(
        f"{'size':>6} {'batch':>6} {'certify s':>10} {'passes s':>10} {'ratio':>7} "
        f"{'est. GiB':>9} {'peak RSS GiB':>13}"
    )
    for size in args.sizes:
        t_certify, t_passes, batch, estimate = measure(size, args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        print(
            f"{size:>5}^3 {batch:>6} {t_certify:10.3f} {t_passes:10.3f} "
            f"{t_certify / t_passes:7.2f} {estimate:9.2f} {peak:13.2f}"
        )


if __name__ == "__main__":
    main()
