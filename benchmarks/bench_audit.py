"""What the quick audit says about an ordinary and a saturated network, and what it costs.

On a finished ``advseg reproduce --preset quick`` folder: the undefended 3-D UNet of training
seed ``--seed`` as trained, and the same network with its logits multiplied by 1000 (the same
predictions, a saturated softmax), each audited with ``advseg card --plan quick``'s audit on
the first ``--subjects`` test subjects. Prints each item's verdict and evidence, the overall
verdict and the seconds (one audit, on this machine).

    python benchmarks/bench_audit.py --study demo [--seed 0] [--subjects 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras_advseg  # noqa: E402, F401  (before TensorFlow: it turns on oneDNN's CPU kernels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="A finished quick study")
    parser.add_argument("--seed", type=int, default=0, help="The study's training seed [0]")
    parser.add_argument("--subjects", type=int, default=2, help="Test subjects [2]")
    args = parser.parse_args()

    from dataclasses import replace
    from pathlib import Path

    import keras

    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.evaluation.audit import audit, overall
    from keras_advseg.export import load_model
    from keras_advseg.workflows.card import CARD_PLANS
    from keras_advseg.workflows.reproduce import seed_dir

    study = Path(args.study)
    model = load_model(seed_dir(study, args.seed) / "models" / "unet3d-none" / "model.keras")
    inputs = keras.Input(model.input_shape[1:])
    saturated = keras.Model(inputs, keras.layers.Rescaling(1000.0)(model(inputs)))
    prepared = load_prepared(study / "prepared")
    samples = []
    for subject in prepared.ids("test")[: args.subjects]:
        image, labels = prepared.load(subject)
        samples.append((image[None], one_hot_labels(labels[None]).numpy()))
    config = replace(CARD_PLANS["quick"].audit_config(seed=0), subjects=args.subjects)
    for name, network in (("as trained", model), ("logits x 1000", saturated)):
        started = time.perf_counter()
        items = audit(network, samples, config)
        print(
            json.dumps(
                {
                    "model": f"unet3d-none seed {args.seed}, {name}",
                    "subjects": len(samples),
                    "verdict": overall(items),
                    "seconds": round(time.perf_counter() - started, 1),
                    "items": {i.number: f"{i.verdict}: {i.evidence}" for i in items},
                },
                indent=1,
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
