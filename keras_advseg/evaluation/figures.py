"""The paper's figures: example attack (Fig. 2/9), Dice/PSNR vs iterations (Fig. 3/4), Dice vs eps (Fig. 5-8).

Drawn so that they tell the paper's point truthfully: the clean and attacked inputs share one
intensity window (the perturbation is "visually minor" only if both are shown alike), every
region's Dice shares one axis from 0 to 1, lines join only budgets measured next to each other,
and every title and legend says which model, attack and budget it shows.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from keras_advseg.config import REGION_NAMES, REGIONS, attack_display
from keras_advseg.io import save_figure

REGION_COLOURS = {"wt": "tab:blue", "tc": "tab:orange", "et": "tab:green"}
ATTACK_STYLES = ("-", "--", ":", "-.")


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


def model_label(name: str) -> str:
    """A model's name as a legend reads it: ``unet3d-none`` -> ``unet3d, no defense`` (``none``
    alone reads as "no attack")."""
    family, _, defense = name.partition("-")
    if family not in ("unet3d", "unet2d") or not defense:
        return name
    if defense == "none":
        return f"{family}, no defense"
    if defense == "none-control":
        return f"{family}, no defense (equal-budget control)"
    return f"{family}, defense {defense}"


def example_figure(example: dict, path: Path, model: str | None = None) -> Path:
    """Axial slice through the tumour: clean and attacked T1Gd in one intensity window with its
    colour bar, the perturbation in its own symmetric scale inside the brain, and the ground
    truth, clean and attacked segmentations (Fig. 2/9).

    Args:
        example: ``subject``, ``image`` and ``adversarial`` ``(X, Y, Z, C)``, ``labels`` and
            the two predictions ``(X, Y, Z)``, ``attack`` and (optionally) ``eps``.
        path: The PNG to write.
        model: The model's name, for the title.
    """
    plt = _pyplot()
    labels = example["labels"]
    z = int(np.argmax((labels > 0).sum(axis=(0, 1)))) if labels.any() else labels.shape[2] // 2
    volume = example["image"][..., 1]
    clean, adversarial = volume[:, :, z], example["adversarial"][:, :, z, 1]
    # one window for both, over both whole T1Gd volumes: nothing is clipped in either panel,
    # so what differs between them is the perturbation and nothing else
    attacked_volume = example["adversarial"][..., 1]
    vmin = float(min(volume.min(), attacked_volume.min()))
    vmax = float(max(volume.max(), attacked_volume.max()))
    brain = np.any(example["image"][:, :, z, :] != 0, axis=-1)
    perturbation = np.where(brain, adversarial - clean, np.nan)
    bound = float(np.nanmax(np.abs(perturbation))) if brain.any() else 0.0
    bound = bound or 1e-6
    attack = attack_display(example["attack"])
    eps = example.get("eps")
    budget = f" at eps {eps:g}" if eps is not None else ""
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7), layout="constrained")
    shown = None
    for ax, data, title in (
        (axes[0, 0], clean, "clean T1Gd"),
        (axes[0, 1], adversarial, f"{attack}{budget}, T1Gd"),
    ):
        shown = ax.imshow(data.T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=axes[0, :2].tolist(), shrink=0.8, label="T1Gd (standardised)")
    difference = axes[0, 2].imshow(
        perturbation.T, origin="lower", cmap="RdBu_r", vmin=-bound, vmax=bound
    )
    axes[0, 2].set_title("perturbation inside the brain (own scale)", fontsize=9)
    fig.colorbar(difference, ax=axes[0, 2], shrink=0.8, label="attacked - clean")
    for ax, seg, title in (
        (axes[1, 0], labels, "ground truth"),
        (axes[1, 1], example["clean_prediction"], "prediction, clean"),
        (axes[1, 2], example["adversarial_prediction"], f"prediction, {attack}{budget}"),
    ):
        ax.imshow(clean.T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax)
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
    who = f"{model_label(model)}, " if model else ""
    fig.suptitle(
        f"{who}{attack}{budget} (fraction of the intensity range), subject "
        f"{example['subject']}, axial slice {z}\nlabels: necrotic core red, oedema green, "
        "enhancing tumour yellow",
        fontsize=10,
    )
    return save_figure(fig, path)


def iterations_figure(
    curves: dict, path: Path, *, eps: float | None = None, model: str | None = None
) -> Path:
    """Mean Dice per region and mean input PSNR after each iteration of i-FGSM and targeted
    i-FGSM (Fig. 3/4): colour is the region, line style the attack (the same in both panels).

    Args:
        curves: ``{attack: {"dice_wt": [...], "dice_tc": [...], "dice_et": [...], "psnr": [...]}}``.
        path: The PNG to write.
        eps: The attacks' budget, for the title.
        model: The model's name, for the title.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for attack, style in zip(curves, ATTACK_STYLES):
        values = curves[attack]
        steps = np.arange(1, len(values["dice_wt"]) + 1)
        name = attack_display(attack)
        for region in REGIONS:
            axes[0].plot(
                steps,
                values[f"dice_{region}"],
                style,
                color=REGION_COLOURS[region],
                marker="o",
                ms=3,
                label=f"{name}, {region.upper()}",
            )
        axes[1].plot(steps, values["psnr"], style, color="black", marker="o", ms=3, label=name)
    axes[0].set(xlabel="iterations", ylabel="mean Dice", title="Dice", ylim=(0, 1.02))
    axes[1].set(xlabel="iterations", ylabel="mean input PSNR (dB)", title="input PSNR")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    budget = f" at eps {eps:g} (fraction of the intensity range)" if eps is not None else ""
    who = f"{model_label(model)}: " if model else ""
    fig.suptitle(f"{who}Dice and input PSNR after each iteration{budget}", fontsize=10)
    return save_figure(fig, path)


def _joined(grid: list[float]) -> list[bool]:
    """Whether each point is joined to the previous one: only where the gap is at most 1.5
    times the smallest step measured, so no line crosses budgets that were not measured."""
    steps = [b - a for a, b in zip(grid, grid[1:]) if b > a]
    if not steps:
        return [False] * len(grid)
    smallest = min(steps)
    return [False] + [b - a <= 1.5 * smallest for a, b in zip(grid, grid[1:])]


def eps_figure(
    models: dict[str, dict],
    path: Path,
    *,
    xlabel: str = "FGSM eps",
    log_x: bool = False,
    title: str | None = None,
) -> Path:
    """Dice vs eps per region, one curve per model (Fig. 5-8) or per attack (the eps curve).

    The three regions share a y-axis from 0 to 1, so a small drop looks small; markers sit at
    the measured budgets, and lines join only budgets measured next to each other (on a log
    axis, doubling budgets are next to each other).

    Args:
        models: ``{name: {eps: {"dice_wt": mean, "dice_tc": mean, "dice_et": mean}}}``; a
            model name (``unet3d-none``) is shown as ``unet3d, no defense``.
        path: The PNG to write.
        xlabel: What eps belongs to.
        log_x: A logarithmic eps axis (the eps curve doubles).
        title: The figure's title.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharey=True)
    for index, (name, by_eps) in enumerate(models.items()):
        grid = sorted(float(e) for e in by_eps)
        lookup = {float(e): v for e, v in by_eps.items()}
        joined = _joined([np.log(g) if log_x and g > 0 else g for g in grid])
        style = ATTACK_STYLES[index // 10 % len(ATTACK_STYLES)]
        for ax, region in zip(axes, REGIONS):
            values = [lookup[g][f"dice_{region}"] for g in grid]
            colour = f"C{index % 10}"
            ax.plot(grid, values, "o", ms=4, color=colour, label=model_label(name))
            for k in range(1, len(grid)):
                if joined[k]:
                    ax.plot(grid[k - 1 : k + 1], values[k - 1 : k + 1], style, color=colour)
    for ax, region in zip(axes, REGIONS):
        ax.set(
            xlabel=f"{xlabel} (fraction of the intensity range)",
            xscale="log" if log_x else "linear",
            title=REGION_NAMES[region],
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean Dice")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=9)
    fig.suptitle(title or f"Mean Dice vs {xlabel}", fontsize=11)
    fig.tight_layout(rect=(0, 0.08 + 0.05 * ((len(labels) - 1) // 3), 1, 1))
    return save_figure(fig, path)


def corruption_severity_figure(
    curves: dict, path: Path, model: str | None = None, clean: dict | None = None
) -> Path:
    """Mean Dice against severity, one panel per region, one line per corruption; severity 0 is
    the clean scan, and every panel shares the 0-1 axis. Markers sit at the severities run;
    lines join adjacent severities only (one severity run: markers at 0 and at it, no line).

    Args:
        curves: ``{corruption: {severity: {region: mean Dice}}}``.
        path: The PNG to write.
        model: The model's name, for the title.
        clean: ``{region: clean mean Dice}``, drawn at severity 0 of every line.
    """
    from keras_advseg.corruptions import CORRUPTIONS

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True, layout="constrained")
    colours = plt.get_cmap("tab20").colors
    for ax, region in zip(axes, REGIONS):
        for index, (name, by_severity) in enumerate(curves.items()):
            levels = sorted(by_severity)
            values = [by_severity[s][region] for s in levels]
            if clean is not None:
                levels, values = [0, *levels], [clean[region], *values]
            style = "-" if CORRUPTIONS.get(name).kind == "scanner" else "--"
            colour = colours[index % 20]
            ax.plot(
                levels, values, "o", markersize=3, color=colour, label=CORRUPTIONS.display(name)
            )
            # lines join adjacent severities only: no line crosses a level that was not run
            for k in range(1, len(levels)):
                if levels[k] - levels[k - 1] == 1:
                    ax.plot(levels[k - 1 : k + 1], values[k - 1 : k + 1], style, color=colour)
        ax.set_title(REGION_NAMES[region], fontsize=10)
        ax.set_xlabel("severity (0: clean)")
        ax.set_xticks(range(0, 6))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean Dice over subjects")
    joined = any(
        b - a == 1 for by in curves.values() for a, b in zip(sorted(by), sorted(by)[1:])
    ) or (clean is not None and any(1 in by for by in curves.values()))
    axes[-1].legend(
        fontsize=7,
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        title="lines: solid scanner, dashed operator" if joined else "one severity: no lines",
        title_fontsize=7,
    )
    who = f"{model_label(model)}: " if model else ""
    fig.suptitle(f"{who}Dice against severity of each MRI corruption", fontsize=11)
    return save_figure(fig, path)


def corruption_grid_figure(
    example: dict, path: Path, corruptions, severities=(1, 3, 5), model: str | None = None
) -> Path:
    """One row per corruption: the clean scan and the corrupted one at each severity shown, one
    axial slice of the sequence the corruption changed most, with the predicted outlines; the
    last column is the ground truth. A row shares one intensity window.

    Args:
        example: :class:`~keras_advseg.evaluation.corrupted.CorruptionEvaluation`'s example.
        path: The PNG to write.
        corruptions: The rows, in order.
        severities: The columns after the clean one (those evaluated).
        model: The model's name, for the title.
    """
    from keras_advseg.corruptions import CORRUPTIONS
    from keras_advseg.data.subject import MODALITIES
    from keras_advseg.evaluation.corrupted import example_channel

    plt = _pyplot()
    from matplotlib import colors as mcolors

    panels = example["panels"]
    rows = [c for c in corruptions if any((c, s) in panels for s in severities)]
    columns = [s for s in severities if any((c, s) in panels for c in rows)]
    n_rows, n_cols = max(1, len(rows)), len(columns) + 2
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(1.9 * n_cols, 1.9 * n_rows + 0.9),
        squeeze=False,
        layout="constrained",
    )
    outline = mcolors.ListedColormap(["none", "red", "lime", "none", "yellow"])
    clean_image, clean_prediction = panels[("none", 0)]
    for i, name in enumerate(rows):
        channel = example_channel(example, name)
        shown = [clean_image[..., channel]] + [
            panels[(name, s)][0][..., channel] for s in columns if (name, s) in panels
        ]
        vmin = float(min(a.min() for a in shown))
        vmax = float(max(a.max() for a in shown)) or 1.0
        cells = [("clean", clean_image, clean_prediction)] + [
            (f"severity {s}", *panels[(name, s)])
            if (name, s) in panels
            else (f"severity {s}", None, None)
            for s in columns
        ]
        cells.append(("ground truth", clean_image, example["labels"]))
        for j, (title, image, labels) in enumerate(cells):
            ax = axes[i, j]
            ax.axis("off")
            if image is None:
                continue
            ax.imshow(image[..., channel].T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
            ax.contour(labels.T > 0, levels=[0.5], colors="cyan", linewidths=0.6, origin="lower")
            ax.imshow(
                np.ma.masked_equal(labels.T, 0),
                origin="lower",
                cmap=outline,
                vmin=0,
                vmax=4,
                alpha=0.35,
                interpolation="nearest",
            )
            if i == 0:
                ax.set_title(title, fontsize=8)
        axes[i, 0].text(
            -0.08,
            0.5,
            f"{CORRUPTIONS.display(name)}\n({MODALITIES[channel]})",
            transform=axes[i, 0].transAxes,
            ha="right",
            va="center",
            fontsize=8,
        )
    who = f"{model_label(model)}, " if model else ""
    text = (
        f"{who}subject {example['subject']}, axial slice {example['z']} in model space: "
        "predicted outline (cyan) and regions necrotic core red, oedema green, enhancing "
        "tumour yellow; each row in one intensity window"
    )
    # wrapped to the figure's width (about 14 characters an inch at this size), so that a grid
    # of few columns does not clip its title at both edges
    width = max(int(fig.get_figwidth() * 14), 40)
    fig.suptitle(textwrap.fill(text, width), fontsize=9)
    return save_figure(fig, path)


def certified_figure(by_sigma: dict, path: Path, model: str | None = None) -> Path:
    """Certified Dice (solid: class-wise; dotted: the region's own certificate, where the
    summary has it) and the smoothed model's Dice (dashed) against sigma, one colour per region,
    with the certified radius on a second axis label (sigma and radius in standardised units).

    Args:
        by_sigma: ``{sigma (text): mean of each row field}`` (``certify_summary.json``'s).
        path: The PNG to write.
        model: The model's name, for the title.
    """
    plt = _pyplot()
    sigmas = sorted(by_sigma, key=float)
    x = [float(s) for s in sigmas]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for region in REGIONS:
        colour = REGION_COLOURS[region]
        ax.plot(
            x,
            [by_sigma[s][f"certified_dice_{region}"] for s in sigmas],
            "-o",
            color=colour,
            label=f"{REGION_NAMES[region]}, certified",
        )
        if all(f"region_certified_dice_{region}" in by_sigma[s] for s in sigmas):
            ax.plot(
                x,
                [by_sigma[s][f"region_certified_dice_{region}"] for s in sigmas],
                ":s",
                color=colour,
                label=f"{REGION_NAMES[region]}, certified as a region",
            )
        ax.plot(
            x,
            [by_sigma[s][f"smoothed_dice_{region}"] for s in sigmas],
            "--x",
            color=colour,
            alpha=0.6,
            label=f"{REGION_NAMES[region]}, smoothed",
        )
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(x, [f"{v:g}\nR={by_sigma[s]['radius']:.2g}" for v, s in zip(x, sigmas)])
    ax.set_ylim(0, 1)
    ax.set_xlabel("sigma (and certified l2 radius R), in standardised units (tissue std)")
    ax.set_ylabel("mean Dice over subjects")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    who = f"{model_label(model)}: " if model else ""
    fig.suptitle(f"{who}certified Dice (abstaining voxels count as wrong)", fontsize=10)
    return save_figure(fig, path)


def certificate_slices(example: dict, path: Path, model: str | None = None) -> Path:
    """One axial slice through the tumour: the ground truth, then the certified labels at each
    sigma with the abstaining voxels in white.

    Args:
        example: ``subject``, ``image`` ``(X, Y, Z, C)``, ``labels`` and ``certificates``
            ``{sigma: certified labels (X, Y, Z), ABSTAIN where not certified}``.
        path: The PNG to write.
        model: The model's name, for the title.
    """
    from matplotlib.colors import ListedColormap

    from keras_advseg.certification.smoothing import ABSTAIN

    plt = _pyplot()
    labels = example["labels"]
    z = int(np.argmax((labels > 0).sum(axis=(0, 1)))) if labels.any() else labels.shape[2] // 2
    background = example["image"][:, :, z, 1]
    panels = [("ground truth", labels[:, :, z])] + [
        (f"certified, sigma {s:g}", c[:, :, z]) for s, c in example["certificates"].items()
    ]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.6 * len(panels), 3.2), layout="constrained", squeeze=False
    )
    colours = ListedColormap(
        [
            (0, 0, 0, 0),
            (1, 0.2, 0.2, 0.7),
            (0.2, 1, 0.2, 0.5),
            (0, 0, 0, 0),
            (1, 1, 0, 0.7),
            (1, 1, 1, 1),
        ]
    )
    for ax, (title, seg) in zip(axes[0], panels):
        shown = np.where(seg == ABSTAIN, 5, seg)
        ax.imshow(background.T, origin="lower", cmap="gray")
        ax.imshow(shown.T, origin="lower", cmap=colours, vmin=0, vmax=5, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    who = f"{model_label(model)}, " if model else ""
    fig.suptitle(
        f"{who}subject {example['subject']}, axial slice {z}\nabstaining voxels white; "
        "necrotic core red,\noedema green, enhancing tumour yellow",
        fontsize=8,
    )
    return save_figure(fig, path)
