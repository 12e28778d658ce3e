"""One robustness card per model (``advseg card``): clean, attacked, corrupted, certified, audited.

Each axis of the card is one entry of :data:`~keras_advseg.workflows.card.table.AXES`, which
names the command whose folder it reads (``adversarial/``, ``corruptions/``, ``certified/``,
``audit/`` under ``OUT``), so every number on the card is the number that command writes; a
command's folder already there with the same settings, or logged by a card run in the tracking
store with them, is reused. ``advseg reproduce`` builds its cards from the study's own folders
(:func:`write_study_card`). The card is ``card.json`` (schema :data:`CARD_SCHEMA`, version
:data:`CARD_VERSION`), ``card.md`` and a self-contained ``card.html``, logged with the headline
metrics to an MLflow run nested under the model's training run and as an MLflow logged model.

Modules: :mod:`.table` (the axes), :mod:`.axes` (one module per axis), :mod:`.plans` (what a
card runs and claims), :mod:`.commands` and :mod:`.reuse` (running or reusing each command),
:mod:`.build` (``card.json``), :mod:`.schema` (its published JSON Schema, checking and reading
it), :mod:`.render` (its pages and metrics), :mod:`.publish` (writing and logging),
:mod:`.logged_model` (the card as an MLflow logged model, and cards read back from the store),
:mod:`.hub` (a Hugging Face model card), :mod:`.run` (``advseg card``), :mod:`.study` (a study's
cards).
"""

from __future__ import annotations

from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.axes.audit import audit_found_lower
from keras_advseg.workflows.card.axes.clean import card_flags
from keras_advseg.workflows.card.axes.corruptions import all_rood_levels
from keras_advseg.workflows.card.axes.min_eps import censored_median, min_eps_summary
from keras_advseg.workflows.card.axes.vafa import input_grid, vafa_label
from keras_advseg.workflows.card.build import build_card, data_description
from keras_advseg.workflows.card.plans import CARD_PLANS, CardPlan, claims
from keras_advseg.workflows.card.publish import publish_card
from keras_advseg.workflows.card.render import (
    FIGURES,
    card_html,
    card_markdown,
    card_rows,
    headline_metrics,
    provenance,
    summary_lines,
)
from keras_advseg.workflows.card.run import run_card
from keras_advseg.workflows.card.schema import CARD_SCHEMA, CARD_VERSION, read_card, validate_card
from keras_advseg.workflows.card.study import study_plan, write_study_card

SECTIONS = table.sections()
"""The card's sections, in order (from the table of axes)."""

AXIS_FOLDERS = {run.name: run.name for run in table.RUNS}
"""Each command's folder in a card's ``OUT``."""

AXIS_VERSIONS = {run.name: run.version for run in table.RUNS}
"""Each command's version (:attr:`~keras_advseg.workflows.card.table.AxisRun.version`)."""

__all__ = [
    "AXIS_FOLDERS",
    "AXIS_VERSIONS",
    "CARD_PLANS",
    "CARD_SCHEMA",
    "CARD_VERSION",
    "FIGURES",
    "SECTIONS",
    "CardPlan",
    "all_rood_levels",
    "audit_found_lower",
    "build_card",
    "card_flags",
    "card_html",
    "card_markdown",
    "card_rows",
    "censored_median",
    "claims",
    "data_description",
    "headline_metrics",
    "input_grid",
    "min_eps_summary",
    "provenance",
    "publish_card",
    "read_card",
    "run_card",
    "study_plan",
    "summary_lines",
    "table",
    "validate_card",
    "vafa_label",
    "write_study_card",
]
