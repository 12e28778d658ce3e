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
* segpgd, cospgd, apgd (masked CE, no early stopping), N steps:
                            t / (N * G)               target <= 1.05
  against the N gradients an N-step attack needs: APGD's bookkeeping and its
  step-size restarts are inside t (a restart reuses the gradient it stored at its
  best point, so it costs no gradient); the gradients each attack reports are printed.
* vafa, N steps:            t / (N * G)               target <= 1.25
  VAFA's gradient is taken w.r.t. its quantisation tables through the block DCT, the
  rounding and the inverse DCT, so the ratio is what those transforms add to a gradient
  of the model (plus the exact quantisation and the final forward pass).

With ``--study DIR`` (a finished ``advseg reproduce --preset quick`` folder), also the
worst-case ensemble's gradient count on its test subjects at eps 0.05, with early
stopping (``stop_dice=0``) and without, for the trained undefended 3-D UNet of training
seed ``--seed``.

    python benchmarks/bench_attacks.py [--sizes 32 64] [--repeats 5] [--steps 10] [--batch 1]
        [--study demo --seed 0]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from _timing import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import keras_advseg  # noqa: E402, F401  (before TensorFlow: it turns on oneDNN's CPU kernels)


def bench(name, model, size, repeats, steps=10, batch=1):
    import numpy as np
    import tensorflow as tf

    from keras_advseg.attacks import fgsm_sweep, ifgsm, ifgsm_trajectory
    from keras_advseg.attacks.core import compiled
    from keras_advseg.attacks.registry import run_attack
    from keras_advseg.losses import soft_dice_loss

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, size, 4)).astype("float32"))
    y = tf.one_hot(rng.integers(0, 4, size=(batch, size, size, size)), 4)
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
    segmentation = {}
    for attack in ("segpgd", "cospgd", "apgd-masked-ce"):
        info = {}
        run_attack(attack, model, x, y, eps=0.05, steps=steps, stop_dice=None, info=info)
        seconds = median_time(
            lambda attack=attack: run_attack(
                attack, model, x, y, eps=0.05, steps=steps, stop_dice=None
            ).numpy(),
            repeats,
        )
        segmentation[f"{attack}_ratio"] = round(seconds / (steps * grad), 3)
        segmentation[f"{attack}_gradients"] = info["gradients"] // batch
    t_vafa = median_time(
        lambda: run_attack("vafa", model, x, y, eps=0.05, steps=steps).numpy(), repeats
    )
    segmentation["vafa_ratio"] = round(t_vafa / (steps * grad), 3)
    return {
        "model": name,
        "size": size,
        "batch": batch,
        "steps": steps,
        "forward_s": round(forward, 4),
        "grad_s": round(grad, 4),
        "ifgsm_ratio": round(t_ifgsm / (steps * grad), 3),
        "sweep_ratio": round(t_sweep / (grad + 11 * forward), 3),
        "sweep_speedup_vs_separate": round(11 * (grad + forward) / t_sweep, 2),
        "trajectory_ratio": round(t_traj / (steps * grad + forward), 3),
        "trajectory_speedup_vs_separate": round(naive_traj / t_traj, 2),
        "xla_grad_over_plain_grad": xla if isinstance(xla, str) else round(xla, 3),
        **segmentation,
    }


def bench_ensemble(study, seed):
    """Gradients of the worst-case ensemble with and without early stopping on a quick study."""
    from pathlib import Path

    from keras_advseg.attacks import worst_case
    from keras_advseg.config import STUDIES
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.export import load_model
    from keras_advseg.workflows.reproduce import seed_dir

    study = Path(study)
    model = load_model(seed_dir(study, seed) / "models" / "unet3d-none" / "model.keras")
    prepared = load_prepared(study / "prepared")
    quick = STUDIES["quick"]
    counts = {}
    for label, stop in (("without_early_stopping", None), ("with_early_stopping", 0.0)):
        total = 0
        for subject in prepared.ids("test"):
            image, labels = prepared.load(subject)
            info = {}
            worst_case(
                model,
                image[None],
                one_hot_labels(labels[None]),
                eps=0.05,
                steps=quick.worst_steps,
                attacks=quick.ensemble,
                stop_dice=stop,
                info=info,
            )
            total += info["gradients"]
        counts[label] = total
    return {
        "seed": seed,
        "ensemble": list(quick.ensemble),
        "steps": quick.worst_steps,
        "subjects": len(prepared.ids("test")),
        **counts,
        "ratio": round(counts["with_early_stopping"] / counts["without_early_stopping"], 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="Iterations of each attack [10]")
    parser.add_argument("--batch", type=int, default=1, help="Volumes per batch [1]")
    parser.add_argument("--study", help="A finished quick study: the ensemble's gradient counts")
    parser.add_argument("--seed", type=int, default=0, help="The study's training seed [0]")
    args = parser.parse_args()
    from keras_advseg.models import SliceWise, unet2d, unet3d

    for size in args.sizes:
        print(
            json.dumps(
                bench(
                    "unet3d",
                    unet3d((size, size, size, 4)),
                    size,
                    args.repeats,
                    args.steps,
                    args.batch,
                )
            ),
            flush=True,
        )
    size = max(args.sizes)
    print(
        json.dumps(
            bench(
                "unet2d-slicewise",
                SliceWise(unet2d((size, size, 4))),
                size,
                args.repeats,
                args.steps,
                args.batch,
            )
        ),
        flush=True,
    )
    if args.study:
        print(json.dumps({"worst_case": bench_ensemble(args.study, args.seed)}), flush=True)


if __name__ == "__main__":
    main()
