"""The audit workflow (``advseg audit``): the gradient-masking checklist on a model, written and tracked.

Writes ``audit.json`` and ``audit.md`` and logs an MLflow run nested under the model's
training run, with a tag per item (``audit.item3 = PASS``) and the overall verdict
(``audit = PASS|WARN``), which is also set on the training run itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from keras_advseg.config import AuditConfig
from keras_advseg.errors import InputError
from keras_advseg.io import plural


def run_audit(
    model_ref: str,
    data,
    out,
    config: AuditConfig,
    *,
    reference_ref: str | None = None,
    split: str = "test",
    tracking_uri: str,
    experiment: str,
    run_name: str | None = None,
    progress=None,
) -> dict:
    """Audits a model on the first ``config.subjects`` subjects of ``split``.

    Returns:
        The document written to ``audit.json``.

    Raises:
        InputError / DataError: bad model reference or data. TrackingError: unreachable store.
    """
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.evaluation.audit import audit, overall
    from keras_advseg.workflows.evaluate import open_model_and_data
    from keras_advseg.workflows.frame import ready, scored_run

    out = ready(out, tracking_uri, {"model": model_ref, "data": data, "reference": reference_ref})
    model, reference, prepared, source, parent = open_model_and_data(
        model_ref, data, out, tracking_uri, other_ref=reference_ref, split=split
    )
    ids = prepared.ids(split)
    ids = ids[: config.subjects] if config.subjects else ids
    samples = []
    for subject_id in ids:
        image, labels = prepared.load(subject_id)
        if labels is None:
            raise InputError(f"subject {subject_id} has no labels; the audit needs them")
        samples.append((image[None], one_hot_labels(labels[None]).numpy()))

    params = {
        "model": str(model_ref),
        "reference": str(reference_ref),
        "split": split,
        "subjects": len(ids),
        "data_hash": prepared.data_hash,
        **{k: _text(v) for k, v in config.__dict__.items()},
    }
    with scored_run(
        tracking_uri,
        experiment,
        run_name=run_name or "audit",
        tags={"audit_of": str(model_ref), **parent},
        params=params,
    ) as run:
        items = audit(model, samples, config, reference=reference, progress=progress)
        verdict = overall(items)
        document = {
            "model": str(model_ref),
            "reference": reference_ref,
            "subjects": ids,
            "config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()
            },
            "verdict": verdict,
            "items": [item.to_json() for item in items],
            "audit_run_id": run.run_id,
            "source_run_id": source,
        }
        run.write_json(out / "audit.json", document)
        run.write_text(out / "audit.md", audit_markdown(document))
        run.set_tags({"audit": verdict, **{f"audit.item{i.number}": i.verdict for i in items}})
    if source:
        _tag_training_run(source, tracking_uri, verdict)
    return document


def audit_markdown(document: dict) -> str:
    """``audit.md``: the verdict, then one line per item with its numbers."""
    lines = [
        f"# Gradient-masking audit of `{document['model']}`: {document['verdict']}\n",
        f"{plural(len(document['subjects']), 'subject')}, eps {document['config']['eps']:g}, "
        f"{document['config']['steps']} steps, tolerance {document['config']['tolerance']:g} "
        "(mean Dice over WT, TC and ET).\n",
        "| item | check | verdict | numbers |",
        "|---|---|---|---|",
    ]
    for item in document["items"]:
        lines.append(
            f"| {item['item']} | {item['claim']} | {item['verdict']} | {item['evidence']} |"
        )
    lines.append(
        "\nA WARN means the robustness measured by the white-box attacks may be gradient "
        "masking: see the documentation's page Evaluation and audit (docs/evaluation.md), "
        'section "Auditing for gradient masking".\n'
    )
    return "\n".join(lines)


def read_audit(folder: Path) -> dict:
    """``audit.json`` of an audit folder (untrusted input).

    Raises:
        FileFormatError: missing, unreadable, or without a verdict and items.
    """
    from keras_advseg.io import FileFormatError, read_json

    document = read_json(Path(folder) / "audit.json", "audit")
    if (
        not isinstance(document, dict)
        or document.get("verdict") not in ("PASS", "WARN")
        or not isinstance(document.get("items"), list)
        or not all(isinstance(i, dict) and "verdict" in i for i in document["items"])
    ):
        raise FileFormatError(f"{folder}/audit.json: expected an audit (verdict and items)")
    return document


def _tag_training_run(run_id: str, tracking_uri: str, verdict: str) -> None:
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri).set_tag(run_id, "audit", verdict)
    except Exception:  # the training run may live in another store
        pass


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else json.dumps(value)
