"""The cards of an ``advseg reproduce`` study: built from the study's own folders (its
evaluations, corruptions, certificates and audits), nothing run twice."""

from __future__ import annotations

import time
from pathlib import Path

from keras_advseg.io import ensure_writable_folder
from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.build import build_card
from keras_advseg.workflows.card.plans import CardPlan
from keras_advseg.workflows.card.publish import publish_card
from keras_advseg.workflows.card.schema import validate_card


def study_plan(study, preset: str) -> CardPlan:
    """What a card of an ``advseg reproduce`` study measured: the preset's worst case, corruptions,
    certificates and audit (:class:`~keras_advseg.config.Study`)."""
    audit = study.audit
    return CardPlan(
        f"study-{preset}",
        study.certify_subjects,
        tuple(e for e in study.table_eps if e > 0),
        study.worst_steps or study.steps,
        tuple(study.ensemble),
        tuple(study.corruptions),
        tuple(study.corruption_severities),
        tuple(study.certify_sigmas),
        study.certify_n,
        study.certify_n0,
        audit.steps,
        audit_curve=tuple(audit.curve),
        audit_restarts=audit.restarts,
        audit_queries=audit.queries,
        audit_subjects=audit.subjects,
        vafa=study.vafa_setting,
    )


def write_study_card(
    out,
    folders: dict,
    plan: CardPlan,
    model_path,
    *,
    reference_ref,
    seed,
    tracking_uri,
    experiment,
    prepared=None,
) -> dict:
    """A card from axes already measured elsewhere (a study's folders): each folder is copied into
    the card's own (so that the card folder stands alone), then the card is built, written and
    logged like ``advseg card``'s.

    Args:
        folders: ``{command: folder}`` for every command of
            :data:`~keras_advseg.workflows.card.table.RUNS`.
        prepared: The study's prepared data (the card's provenance: its subjects and the
            inputs' units and range).

    Returns:
        The card.
    """
    import shutil

    started = time.perf_counter()
    out = ensure_writable_folder(
        out, {"model": model_path, **{f"{axis} folder": f for axis, f in folders.items()}}
    )
    for axis, folder in folders.items():
        shutil.copytree(folder, out / table.run_named(axis).name, dirs_exist_ok=True)
    reference_path = None
    if reference_ref and Path(reference_ref).is_file():
        reference_path = Path(reference_ref)
    card = build_card(
        out,
        plan,
        str(model_path),
        reference_ref,
        seed,
        model_path,
        prepared=prepared,
        reference_path=reference_path,
    )
    card["seconds"] = round(time.perf_counter() - started, 1)
    card["reused"] = sorted(folders)
    validate_card(card)
    publish_card(
        card,
        out,
        model_ref=str(model_path),
        model_path=Path(model_path),
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    return card
