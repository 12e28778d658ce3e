"""What the attacks cost, against the physical limit measured in the same run.

For the 3-D UNet at 32^3 and 64^3 and the 2-D UNet run slice-wise on 64^3
volumes (batch 1), prints median seconds of one forward pass (F) and one
gradient w.r.t. the input (G), then:

* ifgsm, N=10:             t / (N * G)               target <= 1.05
* fgsm_sweep, 11 eps:       t / (G + 11 F)            target <= 1.15
                            speed-up over 11 separate FGSM runs (11 (G + F))
* ifgsm_trajectory, N=10:   t / (N G + F)             target <= 1.10
                            speed-up over separate runs for k = 1..N (55 G + 10 F)
* XLA: G with jit_compile=True over G without (> 1 means XLA is slower; the
  attacks do not use XLA).

    python benchmarks/bench_attacks.py [--sizes 32 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _timing import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def bench(name, model, size, repeats, steps=10):
    import numpy as np
    import tensorflow as tf

    from keras_advseg.attacks import fgsm_sweep, ifgsm, ifgsm_trajectory
    from keras_advseg.attacks.core import compiled
    from keras_advseg.losses import soft_dice_loss

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(1, size, size, size, 4)).astype("float32"))
    y = tf.one_hot(rng.integers(0, 4, size=(1, size, size, size)), 4)
    fns = compiled(model)
    forward = median_time(lambda: fns.forward(x, y)[0].numpy(), repeats)
    grad = median_time(lambda: fns.gradient(x, y)[1].numpy(), repeats)
    t_ifgsm = median_time(lambda: ifgsm(model, x, y, eps=0.05, steps=steps).numpy(), repeats)
    grid = [i / 1000 for i in range(11)]
    t_sweep = median_time(
        lambda: [logits.numpy() for _, _, logits in fgsm_sweep(model, x, y, grid)], repeats
    )
    t_traj = median_time(
        lambda: ifgsm_trajectory(model, x, y, eps=0.05, steps=steps).labels, repeats
    )

    @tf.function(jit_compile=True)
    def xla_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(soft_dice_loss(y, model(x, training=False)))
        return tape.gradient(loss, x)

    try:
        xla = median_time(lambda: xla_gradient(x).numpy(), repeats) / grad
    except Exception as exc:  # XLA may not support every op on every platform
        xla = f"unavailable ({type(exc).__name__})"
    naive_traj = sum(range(1, steps + 1)) * grad + steps * forward
    return {
        "model": name,
        "size": size,
        "forward_s": round(forward, 4),
        "grad_s": round(grad, 4),
        "ifgsm_ratio": round(t_ifgsm / (steps * grad), 3),
        "sweep_ratio": round(t_sweep / (grad + 11 * forward), 3),
        "sweep_speedup_vs_separate": round(11 * (grad + forward) / t_sweep, 2),
        "trajectory_ratio": round(t_traj / (steps * grad + forward), 3),
        "trajectory_speedup_vs_separate": round(naive_traj / t_traj, 2),
        "xla_grad_over_plain_grad": xla if isinstance(xla, str) else round(xla, 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from keras_advseg.models import SliceWise, unet2d, unet3d

    for size in args.sizes:
        print(
            json.dumps(bench("unet3d", unet3d((size, size, size, 4)), size, args.repeats)),
            flush=True,
        )
    size = max(args.sizes)
    print(
        json.dumps(
            bench("unet2d-slicewise", SliceWise(unet2d((size, size, 4))), size, args.repeats)
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
