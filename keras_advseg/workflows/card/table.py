"""The table of the card's axes: every place that shows an axis iterates it.

An axis (:class:`Axis`) is one record: its name and label, the command whose folder it reads
(:class:`AxisRun`: the command, its folder in the card's ``OUT`` and the settings its reuse key
hashes), its section of ``card.json`` (the same name heads its rows in ``card.md`` and
``card.html``), the MLflow metrics it logs, and its leaderboard columns (:class:`Column`).
:func:`~keras_advseg.workflows.card.build_card`, the card's pages, the leaderboard, the study
report's leaderboard section and the docs' table of axes (``docs/hooks/card_axes.py``) read
:data:`AXES` and :data:`RUNS`; a new axis is one module in ``card/axes/`` and one entry here
(its schema joins the published one, its numbers the card's ``results``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keras_advseg.workflows.card import commands
from keras_advseg.workflows.card.axes import (
    adversarial,
    audit,
    certified,
    clean,
    corruptions,
    min_eps,
    vafa,
)


@dataclass(frozen=True)
class AxisRun:
    """One command a card runs into a folder of its own, computed once per reuse key.

    Attributes:
        name: Its folder in the card's ``OUT``, the axis its reuse key names, and the MLflow tag
            ``card.axis.<name>`` a card run sets when it logs the folder.
        command: The command, as a user would run it.
        short: How the card's list of files names the command.
        settings: The plan's fields the reuse key hashes (with the model's digest, the data,
            the seed and, with ``reference``, the reference model's digest).
        version: Bumped when the command's numbers change definition, so that a card never
            reuses a folder computed under the old one.
        reference: Whether the reference model takes part (its digest joins the key).
        run: ``run(model, data, folder, plan, seed, reference_ref, common)`` writes the folder.
    """

    name: str
    command: str
    short: str
    settings: tuple[str, ...]
    version: int
    reference: bool
    run: Callable


@dataclass(frozen=True)
class Column:
    """One leaderboard column: each card's mean over WT, TC and ET of ``value(card)``, tested
    per subject on ``per_subject(card)`` against the first card.

    Attributes:
        name: The column in ``leaderboard.csv`` (and its ``<name>_p``, ``_n``, ``_m``,
            ``_reachable``).
        label: Its header in ``leaderboard.md``, the figure and the study's report.
        value: ``{region: value or None}`` of a card.
        per_subject: ``{subject: mean over the regions}`` of a card (read from its folder).
        comparable: Whether a card is tested against the first card at all.
    """

    name: str
    label: str
    value: Callable[[dict], dict]
    per_subject: Callable[[dict], dict]
    comparable: Callable[[dict, dict], bool] = lambda card, reference: True


@dataclass(frozen=True)
class Axis:
    """One axis of the card.

    Attributes:
        name: The axis (a key of the card's ``claims`` where it has a claim).
        label: What the docs call it.
        run: The :class:`AxisRun` whose folder it reads (and reuses with it).
        section: Its section of ``card.json``, and the first cell of its rows in ``card.md``
            and ``card.html``.
        key: Its key inside the section; None: its entries are the section's own.
        read: ``read(sources) -> value`` of its section from the folders
            (:class:`~keras_advseg.workflows.card.build.Sources`).
        rows: ``rows(card) -> [(measure, value)]`` on the card's pages.
        headline: ``headline(card) -> {"card.<metric>": value}`` logged to MLflow.
        metrics: The MLflow metrics' names, as the docs give them.
        shows: What it puts on the card, as the docs say it.
        schema: The JSON Schema of its value (the section, or the section's ``key``), part of
            the published schema (:func:`~keras_advseg.workflows.card.schema.card_schema`);
            None: any JSON object.
        results: ``results(card, sources) -> [entry]``: its numbers as entries of
            ``card.json``'s ``results`` (``sources`` None when a card of an older version is
            converted: no confidence intervals or subjects then); None: no entries.
        claim: ``claim(plan) -> str``: what its numbers can and cannot claim.
        columns: Its leaderboard columns.
    """

    name: str
    label: str
    run: str
    section: str
    key: str | None
    read: Callable
    rows: Callable[[dict], list]
    headline: Callable[[dict], dict]
    metrics: tuple[str, ...]
    shows: str
    schema: dict | None = None
    results: Callable | None = None
    claim: Callable | None = None
    columns: tuple[Column, ...] = ()


def axis_of(module, name, label, run, section, key, metrics, shows, columns=()) -> Axis:
    """The :class:`Axis` whose ``read``, ``rows``, ``headline``, ``results``, ``SCHEMA`` and
    (where it has one) ``claim`` are those of its module in ``card/axes/``; the other arguments
    are its other fields."""
    return Axis(
        name,
        label,
        run,
        section,
        key,
        module.read,
        module.rows,
        module.headline,
        metrics,
        shows,
        schema=module.SCHEMA,
        results=module.results,
        claim=getattr(module, "claim", None),
        columns=columns,
    )


RUNS = (
    AxisRun(
        "adversarial",
        "advseg evaluate --attacks fgsm,vafa,worst",
        "advseg evaluate",
        ("name", "eps", "steps", "ensemble", "vafa"),
        2,
        False,
        commands.evaluate,
    ),
    AxisRun(
        "corruptions",
        "advseg corruptions",
        "advseg corruptions",
        ("name", "corruptions", "severities"),
        2,
        True,
        commands.corruptions,
    ),
    AxisRun(
        "certified",
        "advseg certify",
        "advseg certify",
        ("name", "sigmas", "n", "n0", "subjects"),
        2,
        False,
        commands.certify,
    ),
    AxisRun(
        "audit",
        "advseg audit",
        "advseg audit",
        (
            "name",
            "audit_steps",
            "audit_curve",
            "audit_restarts",
            "audit_queries",
            "audited",
            "ensemble",
        ),
        2,
        True,
        commands.audit,
    ),
)
"""The commands a card runs. Version 2: per-subject corruption draws, sigma in standardised
units with region certificates, the audit's eighth item, VAFA's named settings and lesion-wise
scores."""

AXES = (
    axis_of(
        clean,
        "clean",
        "clean",
        "adversarial",
        "clean",
        None,
        ("card.clean_dice_<region>",),
        "Dice WT/TC/ET in model space, Dice and HD95 (mm) in each scan's own space, "
        "lesion-wise Dice and HD95 (BraTS 2023)",
        columns=(Column("clean", "clean Dice", clean.value, clean.per_subject),),
    ),
    axis_of(
        adversarial,
        "adversarial",
        "attacked: FGSM and the worst case",
        "adversarial",
        "adversarial",
        None,
        ("card.worst_dice_eps<eps>_<region>",),
        "Dice under FGSM at each eps of the plan and under the per-subject worst case of its "
        "ensemble at the first (an upper bound)",
        columns=(
            Column(
                "worst",
                "Dice under the worst case",
                adversarial.value,
                adversarial.per_subject,
            ),
        ),
    ),
    axis_of(
        vafa,
        "vafa",
        "VAFA",
        "adversarial",
        "adversarial",
        "vafa",
        ("card.vafa_dice_<region>",),
        "Dice under VAFA at its named setting, with its PSNR and SSIM",
        columns=(
            Column("vafa", "Dice under VAFA", vafa.value, vafa.per_subject, vafa.same_setting),
        ),
    ),
    axis_of(
        min_eps,
        "min_eps",
        "min_eps",
        "adversarial",
        "adversarial",
        "min_eps",
        ("card.min_eps_median",),
        "each subject's smallest FGSM eps that halves its mean Dice, and their median "
        "(unbroken subjects censored at the grid's top)",
    ),
    axis_of(
        corruptions,
        "corruptions",
        "corruptions (simulated MRI artifacts and operator errors)",
        "corruptions",
        "corruptions",
        None,
        ("card.corruptions_corrupted_dice_<region>", "card.corruptions_rood_overall_<region>"),
        "the mean Dice of the corrupted scans, ROOD-MRI's overall and degradation scores "
        "(where every severity 1-5 ran), mRR, the worst corruption, mCE against `--reference`",
        columns=(
            Column(
                "corruptions",
                "mean Dice of the corrupted scans",
                corruptions.corrupted_dice,
                corruptions.per_subject,
            ),
        ),
    ),
    axis_of(
        certified,
        "certified",
        "certified",
        "certified",
        "certified",
        None,
        (
            "card.certified_dice_sigma<sigma>_<region>",
            "card.region_certified_dice_sigma<sigma>_<region>",
        ),
        "certified Dice (class-wise and per region), the smoothed model's Dice, abstaining "
        "shares, the l2 radius and the l-infinity budget it covers, per sigma",
        columns=(
            Column("certified", "certified Dice", certified.value, certified.per_subject),
            Column(
                "certified_regions",
                "certified Dice per region",
                certified.region_value,
                certified.region_per_subject,
            ),
        ),
    ),
    axis_of(
        audit,
        "audit",
        "gradient-masking audit",
        "audit",
        "audit",
        None,
        ("card.audit_pass",),
        "the gradient-masking verdict and its eight items",
    ),
)
"""The card's axes, in the order of its sections and rows."""


def run_named(name: str) -> AxisRun:
    """The :class:`AxisRun` called ``name``.

    Raises:
        KeyError: no such run.
    """
    for run in RUNS:
        if run.name == name:
            return run
    raise KeyError(name)


def sections() -> tuple[str, ...]:
    """The card's sections, in order (each axis's, once)."""
    return tuple(dict.fromkeys(axis.section for axis in AXES))


def columns() -> tuple[Column, ...]:
    """The leaderboard's columns, in order."""
    return tuple(column for axis in AXES for column in axis.columns)


def docs_table() -> str:
    """The docs' table of axes (``docs/card.md``, through ``docs/hooks/card_axes.py``): each
    axis's command and folder, its place in ``card.json``, what it shows, its leaderboard
    columns and MLflow metrics; then each command's reuse key."""
    lines = [
        "| axis | command (folder) | `card.json` | numbers on the card | leaderboard column | "
        "MLflow metrics |",
        "|---|---|---|---|---|---|",
    ]
    for axis in AXES:
        run = run_named(axis.run)
        where = axis.section if axis.key is None else f"{axis.section}.{axis.key}"
        columns = ", ".join(c.label for c in axis.columns) or "-"
        metrics = ", ".join(f"`{m}`" for m in axis.metrics)
        lines.append(
            f"| {axis.label} | `{run.command}` (`{run.name}/`) | `{where}` | {axis.shows} | "
            f"{columns} | {metrics} |"
        )
    lines += [
        "",
        "| folder | command | its reuse key hashes the plan's | version |",
        "|---|---|---|---|",
    ]
    for run in RUNS:
        settings = ", ".join(f"`{s}`" for s in run.settings)
        also = "; the reference model's SHA-256" if run.reference else ""
        lines.append(f"| `{run.name}/` | `{run.command}` | {settings}{also} | {run.version} |")
    return "\n".join(lines)
