"""``advseg card``: every command of the card's plan run (or reused) into its folder, then the
card built, written and logged."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from keras_advseg.errors import InputError
from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.build import build_card
from keras_advseg.workflows.card.plans import CARD_PLANS
from keras_advseg.workflows.card.publish import publish_card
from keras_advseg.workflows.card.reuse import data_identity, digest, obtain_axis
from keras_advseg.workflows.card.schema import validate_card


def run_card(
    model_ref: str,
    data,
    out,
    *,
    plan: str = "quick",
    reference_ref: str | None = None,
    preprocessing_json=None,
    seed: int = 0,
    tracking_uri: str,
    experiment: str,
    say=print,
) -> dict:
    """Runs (or reuses) every axis and writes ``card.json``, ``card.md`` and ``card.html``.

    Args:
        model_ref: A ``.keras`` file, MLflow run id or ``runs:/`` URI.
        data: The raw dataset (its test split; the corruptions need the raw scans).
        out: The card's folder.
        plan: A key of :data:`~keras_advseg.workflows.card.plans.CARD_PLANS`.
        reference_ref: An undefended model: the audit's transfer check and the corruptions' mCE.
        preprocessing_json: For a model trained elsewhere: its preprocessing as JSON
            (:class:`~keras_advseg.inference.Preprocessing`'s form); the card runs a copy of the
            model that carries it.
        seed: Seed of the attacks, corruptions and noise.
        tracking_uri, experiment: MLflow.
        say: Where progress lines go.

    Returns:
        The card (``card.json``'s content).

    Raises:
        InputError / DataError: bad references, data, plan or preprocessing.
    """
    from keras_advseg.tracking import resolve_model_path
    from keras_advseg.workflows.frame import ready

    if plan not in CARD_PLANS:
        raise InputError(f"plan must be one of {sorted(CARD_PLANS)}. Received: {plan!r}")
    chosen = CARD_PLANS[plan]
    out = ready(
        out,
        tracking_uri,
        {
            "model": model_ref,
            "data": data,
            "reference": reference_ref,
            "preprocessing": preprocessing_json,
        },
    )
    model_path = resolve_model_path(model_ref, tracking_uri)
    model_path, identity = _with_preprocessing(model_path, preprocessing_json, out)
    model = str(model_path)
    data = _prepared_for(model_path, data, out)
    common = dict(tracking_uri=tracking_uri, experiment=experiment)
    started = time.perf_counter()
    # what every command depends on besides its settings: the model's bytes (with the
    # preprocessing it is carded with), the seed, and the data (its raw source and split), not
    # the folders, so that another --out can reuse it
    context = {"model": identity, "seed": seed, "data": data_identity(data)}
    reference = reference_path = None
    if reference_ref:  # checked before any axis runs, not when the first axis that reads it does
        from keras_advseg.export import load_model, load_preprocessing
        from keras_advseg.inference import check_model_fits

        reference_path = Path(resolve_model_path(reference_ref, tracking_uri))
        check_model_fits(
            load_model(reference_path),
            reference_ref,
            load_preprocessing(model_path).shape,
            f"the preprocessing of {model_ref}",
        )
        reference = digest(reference_path)
    keys, origin = {}, {}
    for command in table.RUNS:
        keys[command.name] = chosen.key(
            command.name, **context, **({"reference": reference} if command.reference else {})
        )

        def run(folder, command=command):
            command.run(model, data, folder, chosen, seed, reference_ref, common)

        origin[command.name] = obtain_axis(
            out / command.name, command.name, keys[command.name], run, tracking_uri, say
        )
    card = build_card(
        out,
        chosen,
        model_ref,
        reference_ref,
        seed,
        model_path,
        prepared=data,
        reference_path=reference_path,
    )
    card["seconds"] = round(time.perf_counter() - started, 1)
    card["reused"] = sorted(a for a, o in origin.items() if o != "run")
    validate_card(card)
    logged = {a: keys[a] for a, o in origin.items() if not o.startswith("mlflow:")}
    publish_card(
        card,
        out,
        model_ref=model_ref,
        model_path=model_path,
        tracking_uri=tracking_uri,
        experiment=experiment,
        axes=logged,
    )
    return card


COPY_RECORD = "model.source.json"
"""Beside a card's ``OUT/model.keras`` (``--preprocessing``): the model and preprocessing it
was written from. A ``model.keras`` in OUT without it is not the card's and is never replaced."""


def _with_preprocessing(model_path: Path, preprocessing_json, out: Path) -> tuple[Path, str]:
    """The model to card and its identity (the reuse key's ``model``): the model itself and its
    SHA-256; or (``--preprocessing``) a copy ``OUT/model.keras`` that carries the given
    preprocessing, identified by the source's SHA-256 and the preprocessing, so that a second
    card of the same model and JSON reuses every axis. A model with neither is refused; the
    JSON is checked (types, ranges, the model's input shape) before any work.

    Raises:
        InputError: a bad JSON, a model that does not fit it, or an ``OUT/model.keras`` that
            is not the card's.
    """
    from keras_advseg.export import load_model, load_preprocessing, save_model
    from keras_advseg.inference import Preprocessing, check_model_fits
    from keras_advseg.io import read_json, write_json_atomic

    if preprocessing_json is None:
        load_preprocessing(model_path)  # refuses, in one line, a model saved without it
        return model_path, digest(model_path)
    preprocessing = Preprocessing.from_file(preprocessing_json)
    network = load_model(model_path)
    check_model_fits(network, model_path, preprocessing.shape, preprocessing_json)
    source = {"model_sha256": digest(model_path), "preprocessing": preprocessing.to_json()}
    identity = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()
    copy, record = out / "model.keras", out / COPY_RECORD
    if copy.exists() or record.exists():
        if not record.is_file():
            raise InputError(
                f"{copy}: exists and is not a copy this command wrote (no {COPY_RECORD} beside "
                "it); --out must be the card's own folder: choose another"
            )
        if read_json(record, "card model record") == json.loads(json.dumps(source)) and (
            copy.is_file()
        ):
            return copy, identity  # written before from the same model and preprocessing
    save_model(network, copy, preprocessing)
    write_json_atomic(record, source)
    return copy, identity


def _prepared_for(model_path: Path, data, out: Path) -> Path:
    """A raw dataset prepared as the model's stored preprocessing says (its size, N4, margin and
    normalisation; the split and the global statistics are the dataset's own), into
    ``OUT/prepared``; a prepared cache as it is."""
    from keras_advseg.data.prepare import prepare_dataset
    from keras_advseg.export import load_preprocessing

    data = Path(data)
    if (data / "prepared.json").is_file():
        return data
    config = load_preprocessing(model_path).prepare_config()
    prepare_dataset(data, out / "prepared", config, progress=False)
    return out / "prepared"
