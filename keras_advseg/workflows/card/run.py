"""``advseg card``: every command of the card's plan run (or reused) into its folder, then the
card built, written and logged."""

from __future__ import annotations

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
    out = ready(out, tracking_uri)
    model_path = resolve_model_path(model_ref, tracking_uri)
    model_path = _with_preprocessing(model_path, preprocessing_json, out)
    model = str(model_path)
    data = _prepared_for(model_path, data, out)
    common = dict(tracking_uri=tracking_uri, experiment=experiment)
    started = time.perf_counter()
    # what every command depends on besides its settings: the model's bytes, the seed, and the
    # data (its raw source and split), not the folders, so that another --out can reuse it
    context = {"model": digest(model_path), "seed": seed, "data": data_identity(data)}
    reference = (
        digest(Path(resolve_model_path(reference_ref, tracking_uri))) if reference_ref else None
    )
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
    card = build_card(out, chosen, model_ref, reference_ref, seed, model_path)
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


def _with_preprocessing(model_path: Path, preprocessing_json, out: Path) -> Path:
    """The model to card: itself, or (``--preprocessing``) a copy that carries the given
    preprocessing; a model with neither is refused."""
    from keras_advseg.export import load_model, load_preprocessing, save_model
    from keras_advseg.inference import Preprocessing

    if preprocessing_json is None:
        load_preprocessing(model_path)  # refuses, in one line, a model saved without it
        return model_path
    try:
        value = json.loads(Path(preprocessing_json).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{preprocessing_json}: not a readable JSON file ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{preprocessing_json}: expected a JSON object")
    preprocessing = Preprocessing.from_json(value, preprocessing_json)
    copy = out / "model.keras"
    save_model(load_model(model_path), copy, preprocessing)
    return copy


def _prepared_for(model_path: Path, data, out: Path) -> Path:
    """A raw dataset prepared as the model's stored preprocessing says (its size, N4, margin and
    normalisation; the split and the global statistics are the dataset's own), into
    ``OUT/prepared``; a prepared cache as it is."""
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset
    from keras_advseg.export import load_preprocessing

    data = Path(data)
    if (data / "prepared.json").is_file():
        return data
    stored = load_preprocessing(model_path)
    config = PrepareConfig(
        shape=stored.shape,
        n4=stored.n4,
        n4_shrink=stored.n4_shrink,
        margin=stored.margin,
        normalization=stored.normalization,
    )
    prepare_dataset(data, out / "prepared", config, progress=False)
    return out / "prepared"
