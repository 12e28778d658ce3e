"""A card written (``card.json``, ``card.md``, ``card.html``) and logged with its headline
metrics to an MLflow run nested under the model's training run."""

from __future__ import annotations

from pathlib import Path

from keras_advseg.io import write_json_atomic, write_text_atomic
from keras_advseg.workflows.card.logged_model import log_card_model
from keras_advseg.workflows.card.render import card_html, card_markdown, headline_metrics


def publish_card(
    card: dict, out: Path, *, model_ref, model_path, tracking_uri, experiment, axes=None
) -> list[Path]:
    """Writes ``card.json``, ``card.md`` and ``card.html`` into ``out`` and logs them with the
    headline metrics to an MLflow run nested under the model's training run (where the store
    has it), and the card as an MLflow logged model of that run
    (:func:`~keras_advseg.workflows.card.logged_model.log_card_model`).

    Args:
        axes: ``{command: key}`` of the commands whose folders the run also logs (under
            ``axes/<command>``) and tags (``card.axis.<command>``), for a card elsewhere to
            reuse.

    Returns:
        The written files.
    """
    from keras_advseg.workflows.frame import lineage, scored_run

    plan = card["plan"]["name"]
    _, parent = lineage(model_ref, model_path, tracking_uri)
    written = [
        write_json_atomic(out / "card.json", card),
        write_text_atomic(out / "card.md", card_markdown(card)),
        write_text_atomic(out / "card.html", card_html(card, out)),
    ]
    with scored_run(
        tracking_uri,
        experiment,
        run_name=f"card-{plan}",
        tags={"card": "true", "card_plan": plan, **parent},
        params={"model": str(model_ref), "plan": plan, "seed": card["seed"]},
    ) as run:
        run.log_metrics(headline_metrics(card))
        for path in written:
            run.keep(path)
        for axis, key in (axes or {}).items():
            # each command's files, and a tag with its key: what a card elsewhere reuses
            run.log_folder(out / axis, f"axes/{axis}")
            run.set_tags({f"card.axis.{axis}": key})
        # the card as an MLflow logged model: ranked by its headline numbers in the UI's
        # model view and by search_logged_models, its folder its artifacts
        log_card_model(card, out, run.run_id, run.run.info.experiment_id)
    return written
