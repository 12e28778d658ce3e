"""What the corruption benchmark costs, against the model's forward pass measured in the same run.

On a 1 mm scan of BraTS's size (240 x 240 x 155, four sequences, an ellipsoidal brain of smooth
texture), prints the median seconds of:

* each corruption at severity 3 (:func:`keras_advseg.corruptions.corrupt`), and at severity 5
  for motion (10 movements, its most expensive level);
* the preprocessing a corrupted scan then goes through (crop, resize; and with N4);
* one forward pass (F) of the paper's 3-D UNet (16 filters, depth 5) at each ``--sizes``,

and each as a ratio to F: how many forward passes one corrupted scan costs. A corrupted scan
is prepared once and shared by every model evaluated on it, so its cost is paid once per
subject, corruption and severity, not once per model.

    python benchmarks/bench_corruptions.py [--sizes 32 128] [--repeats 3] [--only motion,...]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _timing import median_time  # noqa: E402


def scan(shape=(240, 240, 155)):
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(0)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32) - 1)[:, None, None, None] / 2
    radii = np.array([70, 85, 65], np.float32)[:, None, None, None]
    inside = np.sqrt((((grid - centre) / radii) ** 2).sum(0)) < 1
    texture = ndimage.zoom(rng.uniform(0, 1, (30, 30, 20, 4)), (8, 8, 7.75, 1), order=1)
    return np.where(inside[..., None], 100 + 400 * texture, 0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only", default="", help="comma-separated corruptions to time (default: all)"
    )
    args = parser.parse_args()

    import numpy as np

    from keras_advseg.corruptions import CORRUPTIONS, corrupt
    from keras_advseg.data.preprocess import crop_and_resize
    from keras_advseg.metrics import traced_inference
    from keras_advseg.models import unet3d

    image = scan()
    spacing = (1.0, 1.0, 1.0)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {entry.name for entry in CORRUPTIONS}
    if unknown:
        parser.error(f"--only: unknown corruption(s) {', '.join(sorted(unknown))}")
    costs = {}
    for entry in CORRUPTIONS:
        if only and entry.name not in only:
            continue
        costs[f"{entry.name} s3"] = median_time(
            lambda n=entry.name: corrupt(image, n, 3, spacing=spacing, seed=0), args.repeats
        )
    if not only or "motion" in only:
        costs["motion s5"] = median_time(
            lambda: corrupt(image, "motion", 5, spacing=spacing, seed=0), args.repeats
        )
    forwards = {}
    for size in args.sizes:
        model = unet3d((size, size, size, 4), base_filters=16, depth=5)
        forward = traced_inference(model)
        x = np.zeros((1, size, size, size, 4), np.float32)
        forwards[size] = median_time(lambda f=forward, x=x: np.asarray(f(x)), args.repeats)
        for n4 in () if only else (False, True):  # the preprocessing: with every corruption
            costs[f"preprocess {size}^3" + (" + N4" if n4 else "")] = median_time(
                lambda s=size, n4=n4: crop_and_resize(
                    image, (s, s, s), n4=n4, n4_shrink=4, margin=2, name="scan"
                ),
                1 if n4 else args.repeats,
            )
    print(
        f"scan {image.shape}, 1 mm; forward passes: "
        + ", ".join(f"{s}^3 {t:.3f} s" for s, t in forwards.items())
    )
    header = f"{'step':<32} {'seconds':>8} " + " ".join(f"{'/ F ' + str(s):>10}" for s in forwards)
    print(header)
    for name, seconds in costs.items():
        ratios = " ".join(f"{seconds / f:10.1f}" for f in forwards.values())
        print(f"{name:<32} {seconds:8.3f} {ratios}")


if __name__ == "__main__":
    main()
