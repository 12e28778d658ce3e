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
        "eps": 0.05,
        "adversarial": image + 0.1,
        "clean_prediction": labels,
        "adversarial_prediction": labels * 0,
    }
    path = figures.example_figure(example, tmp_path / "fig_example.png", model="unet3d-none")
    height, width, _ = png_shape(path)
    assert (height, width) == (700, 1050)  # 10.5 x 7 inches at 100 dpi


def test_iteration_and_eps_figures(tmp_path):
    curve = {m: [0.8, 0.6, 0.5] for m in ("dice_wt", "dice_tc", "dice_et")} | {
        "psnr": [40.0, 38.0, 37.0]
    }
    path = figures.iterations_figure({"ifgsm": curve}, tmp_path / "it.png", eps=0.05)
    assert png_shape(path)[:2] == (440, 1100)
    models = {
        "none": {
            0.0: {"dice_wt": 0.8, "dice_tc": 0.7, "dice_et": 0.6},
            0.01: {"dice_wt": 0.5, "dice_tc": 0.4, "dice_et": 0.3},
        }
    }
    assert png_shape(figures.eps_figure(models, tmp_path / "eps.png"))[:2] == (460, 1300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eps.png", "it.png"]


def test_legends_name_the_defense_and_lines_join_only_neighbouring_budgets():
    assert figures.model_label("unet3d-none") == "unet3d, no defense"
    assert figures.model_label("unet3d-none-control") == (
        "unet3d, no defense (equal-budget control)"
    )
    assert (
        figures.model_label("unet2d-adversarial-eps0.05") == "unet2d, defense adversarial-eps0.05"
    )
    # the paper's sweep 0..0.01 by 0.001, then the table's 0.05 and 0.1: no line to 0.05
    grid = [i / 1000 for i in range(11)] + [0.05, 0.1]
    joined = figures._joined(grid)
    assert joined[:11] == [False] + [True] * 10 and joined[11:] == [False, False]
