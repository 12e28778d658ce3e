"""The paper's figures are written as PNG files of the expected layout."""

from __future__ import annotations

import matplotlib.image
import numpy as np

from keras_advseg.evaluation import figures


def png_shape(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path).shape


def test_example_figure(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(8, 8, 6, 4)).astype("float32")
    labels = np.zeros((8, 8, 6), np.uint8)
    labels[2:5, 2:5, 3] = 4
    example = {
        "subject": "s1",
        "image": image,
        "labels": labels,
        "attack": "fgsm",
        "adversarial": image + 0.1,
        "clean_prediction": labels,
        "adversarial_prediction": labels * 0,
    }
    height, width, _ = png_shape(figures.example_figure(example, tmp_path / "fig_example.png"))
    assert (height, width) == (640, 900)  # 9 x 6.4 inches at 100 dpi


def test_iteration_and_eps_figures(tmp_path):
    curve = {m: [0.8, 0.6, 0.5] for m in ("dice_wt", "dice_tc", "dice_et")} | {
        "psnr": [40.0, 38.0, 37.0]
    }
    assert png_shape(figures.iterations_figure({"ifgsm": curve}, tmp_path / "it.png"))[:2] == (
        400,
        1000,
    )
    models = {
        "none": {
            0.0: {"dice_wt": 0.8, "dice_tc": 0.7, "dice_et": 0.6},
            0.01: {"dice_wt": 0.5, "dice_tc": 0.4, "dice_et": 0.3},
        }
    }
    assert png_shape(figures.eps_figure(models, tmp_path / "eps.png"))[:2] == (400, 1300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eps.png", "it.png"]
