"""Per-step cost of each defense against a clean training step, measured in one run.

For the 3-D UNet at 32^3 (and --sizes), batch 1, prints median seconds of a
clean training step (C) and the ratio to it of:

* adversarial training, joint (eq. 9): target <= 2.1 (one input gradient,
  then one update through clean and adversarial batches);
* adversarial training, alternating (the paper's two updates);
* noise augmentation (two updates per batch, as in the paper);
* distillation student: target <= 1.15. Soft labels are the teacher's
  softmax(z/T), computed ONCE per training volume and augmented jointly with
  the image, so a student step is a clean step on soft targets; the ratio of
  the paper's per-step alternative (teacher forward inside every step) is
  printed beside it for comparison;
* PGD-K adversarial training (K = --adv-steps, 3): target <= K + 1.2, with eq. 9's
  beta = 0.5 (one more forward and backward pass for the clean term) and with beta = 0
  (Madry's adversarial-only objective);
* fast adversarial training (FGSM from a random start, beta 0): target <= 2.1;
* TRADES (K steps on the KL, one update through clean and adversarial): target <= K + 1.2.

    python benchmarks/bench_train.py [--sizes 32 64] [--repeats 5] [--adv-steps 3]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from _timing import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import keras_advseg  # noqa: E402, F401  (before TensorFlow: it turns on oneDNN's CPU kernels)


def median_step(trainer, x, y, repeats):
    """Median seconds of one ``train_on_batch`` (after a tracing call)."""
    return median_time(lambda: trainer.train_on_batch(x, y), repeats)


def bench(size, repeats, adv_steps=3):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_advseg import defenses
    from keras_advseg.models import unet3d

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, size, size, size, 4)).astype("float32")
    y = tf.one_hot(rng.integers(0, 4, size=(1, size, size, size)), 4).numpy()
    network = lambda: unet3d((size, size, size, 4))

    def make(trainer):
        trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
        return trainer

    clean = median_step(make(defenses.SegmentationTrainer(network())), x, y, repeats)
    teacher = network()
    soft = keras.ops.convert_to_numpy(keras.ops.softmax(teacher(x) / 100.0, axis=-1))

    class PerStepTeacher(defenses.SegmentationTrainer):
        """The alternative: the teacher's forward pass inside every student step."""

        def train_step(self, data):
            inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            targets = tf.nn.softmax(teacher(inputs, training=False) / 100.0, axis=-1)
            return super().train_step((inputs, targets))

    timings = {
        "adversarial_joint": median_step(
            make(defenses.AdversarialTrainer(network(), mode="joint")), x, y, repeats
        ),
        "adversarial_alternating": median_step(
            make(defenses.AdversarialTrainer(network(), mode="alternating")), x, y, repeats
        ),
        "noise": median_step(make(defenses.NoiseTrainer(network())), x, y, repeats),
        "distillation_student_cached_soft_labels": median_step(
            make(defenses.SegmentationTrainer(network(), temperature=100.0)), x, soft, repeats
        ),
        "distillation_student_teacher_per_step": median_step(
            make(PerStepTeacher(network(), temperature=100.0)), x, y, repeats
        ),
        f"pgd{adv_steps}_beta0.5": median_step(
            make(defenses.PGDTrainer(network(), steps=adv_steps, beta=0.5)), x, y, repeats
        ),
        f"pgd{adv_steps}_beta0": median_step(
            make(defenses.PGDTrainer(network(), steps=adv_steps, beta=0.0)), x, y, repeats
        ),
        "fast": median_step(make(defenses.FastTrainer(network())), x, y, repeats),
        f"trades{adv_steps}": median_step(
            make(defenses.TradesTrainer(network(), steps=adv_steps)), x, y, repeats
        ),
    }
    return {
        "size": size,
        "clean_step_s": round(clean, 4),
        **{f"{k}_ratio": round(v / clean, 3) for k, v in timings.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--adv-steps", type=int, default=3)
    args = parser.parse_args()
    for size in args.sizes:
        print(json.dumps(bench(size, args.repeats, args.adv_steps)), flush=True)


if __name__ == "__main__":
    main()
