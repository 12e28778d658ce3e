"""The paper's figures: example attack (Fig. 2/9), Dice/PSNR vs iterations (Fig. 3/4), Dice vs eps (Fig. 5-8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_advseg.config import REGION_NAMES, REGIONS
from keras_advseg.io import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label_colours():
    from matplotlib.colors import ListedColormap

    return ListedColormap(
        [(0, 0, 0, 0), (1, 0.2, 0.2, 0.7), (0.2, 1, 0.2, 0.5), (0, 0, 0, 0), (1, 1, 0, 0.7)]
    )


def example_figure(example: dict, path: Path, amplify: float = 10.0) -> Path:
    """Axial slice through the tumour: clean and adversarial T1Gd input, the perturbation
    (amplified), and the ground truth, clean and adversarial segmentations (Fig. 2/9)."""
    plt = _pyplot()
    labels = example["labels"]
    z = int(np.argmax((labels > 0).sum(axis=(0, 1)))) if labels.any() else labels.shape[2] // 2
    clean, adversarial = example["image"][:, :, z, 1], example["adversarial"][:, :, z, 1]
    perturbation = (example["adversarial"] - example["image"])[:, :, z, 1]
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.4))
    vmin, vmax = float(clean.min()), float(clean.max())
    panels = [
        (axes[0, 0], clean, "clean T1Gd", dict(cmap="gray", vmin=vmin, vmax=vmax)),
        (
            axes[0, 1],
            adversarial,
            f"{example['attack']} T1Gd",
            dict(cmap="gray", vmin=vmin, vmax=vmax),
        ),
        (axes[0, 2], perturbation * amplify, f"perturbation x{amplify:g}", dict(cmap="RdBu_r")),
    ]
    for ax, data, title, kwargs in panels:
        ax.imshow(data.T, origin="lower", **kwargs)
        ax.set_title(title, fontsize=9)
    for ax, seg, title in (
        (axes[1, 0], labels, "ground truth"),
        (axes[1, 1], example["clean_prediction"], "prediction, clean"),
        (axes[1, 2], example["adversarial_prediction"], f"prediction, {example['attack']}"),
    ):
        ax.imshow(clean.T, cmap="gray", origin="lower")
        ax.imshow(
            seg[:, :, z].T,
            cmap=_label_colours(),
            vmin=0,
            vmax=4,
            origin="lower",
            interpolation="nearest",
        )
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{example['subject']}: NCR red, ED green, ET yellow", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def iterations_figure(curves: dict, path: Path) -> Path:
    """Mean Dice per region and mean PSNR after each i-FGSM / targeted i-FGSM iteration (Fig. 3/4)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for attack, values in curves.items():
        steps = np.arange(1, len(values["dice_wt"]) + 1)
        for region, style in zip(REGIONS, ("-", "--", ":")):
            axes[0].plot(
                steps,
                values[f"dice_{region}"],
                style,
                marker="o",
                ms=3,
                label=f"{attack} {region.upper()}",
            )
        axes[1].plot(steps, values["psnr"], marker="o", ms=3, label=attack)
    axes[0].set(xlabel="iterations", ylabel="mean Dice", title="Dice vs iterations")
    axes[1].set(xlabel="iterations", ylabel="mean input PSNR (dB)", title="PSNR vs iterations")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def eps_figure(
    models: dict[str, dict], path: Path, *, xlabel: str = "FGSM eps", log_x: bool = False
) -> Path:
    """Dice vs eps per region, one curve per model (Fig. 5-8) or per attack (the eps curve).

    Args:
        models: ``{name: {eps: {"dice_wt": mean, "dice_tc": mean, "dice_et": mean}}}``.
        xlabel: What eps belongs to.
        log_x: A logarithmic eps axis (the eps curve doubles).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for name, by_eps in models.items():
        grid = sorted(by_eps, key=float)
        for ax, region in zip(axes, REGIONS):
            ax.plot(
                [float(e) for e in grid],
                [by_eps[e][f"dice_{region}"] for e in grid],
                marker="o",
                ms=3,
                label=name,
            )
    for ax, region in zip(axes, REGIONS):
        ax.set(
            xlabel=f"{xlabel} (fraction of the intensity range)",
            xscale="log" if log_x else "linear",
            ylabel="mean Dice",
            title=REGION_NAMES[region],
        )
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
