"""The card as an MLflow model evaluator, registered under MLflow's ``mlflow.model_evaluator``
entry point as ``advseg``::

    mlflow.models.evaluate(
        "models:/m-...",  # or runs:/RUN_ID/model: a Keras model logged to MLflow
        data,  # a table of subject files, or one row naming a dataset folder
        model_type="segmentation",
        evaluators=["advseg"],
        evaluator_config={"advseg": {"plan": "quick", "seed": 0}},
    )

runs :func:`~keras_advseg.workflows.card.run.run_card` on the logged model inside the
evaluation's run (the card's own runs nest under it) and returns the card's headline numbers
as the evaluation's metrics (logged to its run and, when the model is a logged model, against
that model) and ``card.json``, ``card.md`` and ``card.html`` as its artifacts.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from keras_advseg.errors import InputError

NAME = "advseg"
"""The evaluator's name in ``evaluators=[...]``."""

MODEL_TYPES = ("segmentation",)
"""The ``model_type`` values the evaluator takes (MLflow requires one, or extra metrics)."""

CONFIG_KEYS = ("plan", "seed", "reference", "preprocessing", "out")
"""``evaluator_config``'s keys: the card's plan (``quick``), seed (0), reference model (a file,
run id or ``runs:/`` URI), the model's preprocessing (a dict or a JSON file, for a model that
does not carry it) and the card's folder (kept; default: a temporary one). The card's runs
nest under the evaluation's run, in its store and experiment."""

DATASET_COLUMN = "dataset"
"""A table with this one column and one row names a dataset folder: a raw dataset (the card
carded its test split, as ``advseg card --data``) or a prepared cache."""

SEQUENCE_COLUMNS = (("t1", "t1ce", "t2", "flair"), ("t1n", "t1c", "t2w", "t2f"))
"""A table of subject files has one row per subject and one column per sequence, named as
BraTS 2017-2021 (labels 0/1/2/4) or BraTS 2023 (labels 0/1/2/3) name the files, a ``seg``
column (the labels), and optionally ``subject`` (its id; default ``subject-NNN``) and
``split`` (``train`` or ``test``; rows marked ``train`` give the standardisation statistics
and are not carded; default: every row is carded)."""

CARD_FILES = ("card.json", "card.md", "card.html")
ARTIFACT_FOLDER = "advseg-card"
"""Where the card's files go among the evaluation run's artifacts."""

_PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CardEvaluator(ModelEvaluator):
    """``mlflow.models.evaluate(..., evaluators=["advseg"])``: the robustness card of a logged
    Keras segmentation model."""

    name = NAME

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        """True for ``model_type="segmentation"``."""
        return model_type in MODEL_TYPES

    def evaluate(
        self,
        *,
        model_type,
        dataset,
        run_id,
        evaluator_config,
        model=None,
        extra_metrics=None,
        custom_artifacts=None,
        predictions=None,
        **kwargs,
    ) -> EvaluationResult:
        """Runs the card and returns its metrics and files.

        Args:
            model_type: ``"segmentation"``.
            dataset: MLflow's evaluation dataset; its features are the table
                (:data:`DATASET_COLUMN` or :data:`SEQUENCE_COLUMNS`).
            run_id: The evaluation's run: the card's runs nest under it, its metrics and
                files are logged to it.
            evaluator_config: :data:`CONFIG_KEYS`.
            model: The loaded MLflow model (a PyFunc model of the Keras flavour).

        Returns:
            An ``EvaluationResult``: :func:`~keras_advseg.workflows.card.logged_model.model_metrics`
            of the card, and its three files as artifacts.

        Raises:
            InputError: no model, a model that is not a Keras model, a bad configuration or
                table, or (from the card) a model without preprocessing.
        """
        import mlflow
        from keras_advseg.workflows.card.logged_model import model_metrics
        from keras_advseg.workflows.card.run import run_card

        config = _checked_config(evaluator_config)
        if model is None:
            raise InputError(
                "the advseg evaluator needs a model (mlflow.models.evaluate(model=...))"
            )
        if extra_metrics or custom_artifacts:
            raise InputError(
                "the advseg evaluator takes no extra_metrics or custom_artifacts: its metrics are "
                "the card's"
            )
        from keras_advseg.io import write_json_atomic
        from keras_advseg.tracking import no_active_model

        tracking_uri = mlflow.get_tracking_uri()
        run = mlflow.get_run(run_id)
        experiment = mlflow.get_experiment(run.info.experiment_id).name
        with tempfile.TemporaryDirectory(prefix="advseg-evaluate-") as scratch:
            scratch = Path(scratch)
            model_ref, model_path = _keras_file(model, scratch, tracking_uri)
            if model_ref == str(model_path) and config.get("preprocessing") is None:
                raise InputError(
                    "the advseg evaluator: this Keras model does not carry the preprocessing it "
                    "was trained with (advseg train logs it beside the model); give it as "
                    "evaluator_config preprocessing (a dict or a JSON file: shape, n4, n4_shrink, "
                    "margin, normalization, mean, std)"
                )
            data = _card_data(dataset.features_data, scratch, model_path, config)
            preprocessing = config.get("preprocessing")
            if isinstance(preprocessing, dict):
                preprocessing = write_json_atomic(scratch / "preprocessing.json", preprocessing)
            out = Path(config["out"]) if config.get("out") else scratch / "card"
            # the card's own runs log their metrics to themselves, not to the evaluated model
            # that mlflow.models.evaluate makes active
            with no_active_model():
                card = run_card(
                    model_ref,
                    data,
                    out,
                    plan=config.get("plan", "quick"),
                    reference_ref=config.get("reference"),
                    preprocessing_json=preprocessing,
                    seed=int(config.get("seed", 0)),
                    tracking_uri=tracking_uri,
                    experiment=experiment,
                    say=lambda line: None,
                )
            metrics = model_metrics(card)
            if kwargs.get("model_id") is None:
                # given a model id, MLflow logs the returned metrics to the run and that model
                # itself; a runs:/ URI gives none, though the loaded model may be a logged model
                linked = getattr(model, "model_id", None)
                mlflow.log_metrics(
                    metrics, run_id=run_id, **({"model_id": linked} if linked else {})
                )
            for name in CARD_FILES:
                mlflow.log_artifact(str(out / name), ARTIFACT_FOLDER, run_id=run_id)
            artifacts = _artifacts(out, run.info.artifact_uri)
        return EvaluationResult(metrics=metrics, artifacts=artifacts, run_id=run_id)


def _checked_config(config) -> dict:
    """``evaluator_config`` with only :data:`CONFIG_KEYS`, each of its type.

    Raises:
        InputError: an unknown key or a value of the wrong type.
    """
    from keras_advseg.workflows.card.plans import CARD_PLANS

    config = dict(config or {})
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise InputError(
            f"evaluator_config: unknown key(s) {', '.join(unknown)}; expected some of "
            f"{', '.join(CONFIG_KEYS)}"
        )
    if "plan" in config and config["plan"] not in CARD_PLANS:
        raise InputError(
            f"evaluator_config: plan must be one of {sorted(CARD_PLANS)}. Received: "
            f"{config['plan']!r}"
        )
    if "seed" in config and (
        isinstance(config["seed"], bool) or not isinstance(config["seed"], int)
    ):
        raise InputError(f"evaluator_config: seed must be an integer. Received: {config['seed']!r}")
    for key in ("reference", "out"):
        if key in config and not isinstance(config[key], (str, Path)):
            raise InputError(
                f"evaluator_config: {key} must be a path or a name. Received: {config[key]!r}"
            )
    if "preprocessing" in config and not isinstance(config["preprocessing"], (dict, str, Path)):
        raise InputError(
            "evaluator_config: preprocessing must be a dict or the path of a JSON file. "
            f"Received: {type(config['preprocessing']).__name__}"
        )
    return config


def _keras_file(model, scratch: Path, tracking_uri: str) -> tuple[str, Path]:
    """The model to card for the loaded MLflow model, as ``(reference, .keras file)``: the
    ``model.keras`` that ``advseg train`` logged beside it (``runs:/RUN_ID/model.keras``: the
    card names the training run) when its run has one holding the same weights (it carries the
    model's preprocessing), or else the Keras model written to
    ``scratch/<its name>/model.keras`` (its preprocessing must come from
    ``evaluator_config["preprocessing"]``; written anew at each evaluation, so its axes are
    not reused), its reference that path.

    Raises:
        InputError: the MLflow model is not a Keras model.
    """
    import keras

    from keras_advseg.export import load_model, save_model

    try:
        network = model.get_raw_model()
    except (AttributeError, NotImplementedError):
        network = None
    if not isinstance(network, keras.Model):
        flavor = sorted(getattr(getattr(model, "metadata", None), "flavors", None) or {})
        raise InputError(
            "the advseg evaluator cards Keras models (MLflow's keras flavour); this model's "
            f"flavours: {', '.join(flavor) or 'unknown'}"
        )
    metadata = getattr(model, "metadata", None)
    source = getattr(metadata, "run_id", None)
    if source:
        reference = f"runs:/{source}/model.keras"
        try:
            from keras_advseg.tracking import resolve_model_path

            logged = resolve_model_path(reference, tracking_uri)
            beside = load_model(logged)
        except Exception:  # no such artifact: a Keras model logged by other means
            beside = None
        if beside is not None and _same_weights(network, beside):
            return reference, logged
    name = str(getattr(metadata, "name", None) or getattr(metadata, "artifact_path", None) or "")
    folder = scratch / (name if _PLAIN_ID.match(name) else "model")
    folder.mkdir()
    path = save_model(network, folder / "model.keras")
    return str(path), path


def _same_weights(a, b) -> bool:
    import numpy as np

    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(wa, wb)
    )


def _card_data(table, scratch: Path, model_path: Path, config: dict) -> Path:
    """The card's ``data`` for the evaluation's table: the folder a one-row
    :data:`DATASET_COLUMN` table names, or a table of subject files linked into a raw dataset
    and prepared as the model's preprocessing says, its test split the rows to card.

    Raises:
        InputError: a table of neither form, a missing file, a bad subject id or split.
    """
    columns = [str(c) for c in table.columns]
    if DATASET_COLUMN in columns:
        if columns != [DATASET_COLUMN] or len(table) != 1:
            raise InputError(
                f"data: a '{DATASET_COLUMN}' table has that one column and one row (the folder "
                f"of a raw dataset or a prepared cache). Received: columns {columns}, "
                f"{len(table)} row(s)"
            )
        folder = Path(str(table[DATASET_COLUMN].iloc[0]))
        if not folder.is_dir():
            raise InputError(f"data: {folder}: no such dataset folder")
        return folder
    sequences = next((s for s in SEQUENCE_COLUMNS if set(s) <= set(columns)), None)
    allowed = set(sequences or ()) | {"seg", "subject", "split"}
    if sequences is None or "seg" not in columns or set(columns) - allowed:
        raise InputError(
            f"data: expected a table with one column '{DATASET_COLUMN}', or one row per subject "
            f"with the columns {', '.join(SEQUENCE_COLUMNS[0])} (or "
            f"{', '.join(SEQUENCE_COLUMNS[1])}) and seg, optionally subject and split. "
            f"Received: columns {columns}"
        )
    raw = scratch / "raw"
    test_ids = []
    for index, row in enumerate(table.to_dict("records")):
        subject = _cell(row, "subject", f"subject-{index:03d}")
        if not _PLAIN_ID.match(subject):
            raise InputError(f"data: row {index}: subject {subject!r} is not a plain name")
        split = _cell(row, "split", "test")
        if split not in ("train", "test"):
            raise InputError(f"data: row {index}: split must be train or test. Received: {split!r}")
        folder = raw / subject
        if folder.exists():
            raise InputError(f"data: subject {subject!r} appears twice")
        folder.mkdir(parents=True)
        for column in (*sequences, "seg"):
            given = _cell(row, column, "")
            path = Path(given).expanduser().absolute()
            match = re.search(r"\.nii(\.gz)?$", path.name, re.IGNORECASE)
            if not given or not match or not path.is_file():
                raise InputError(
                    f"data: row {index}, {column}: {given or '(empty)'}: not a NIfTI file "
                    "(.nii or .nii.gz)"
                )
            (folder / f"{subject}_{column}{match.group(0).lower()}").symlink_to(path)
        if split == "test":
            test_ids.append(subject)
    return _prepare_table(raw, scratch / "prepared", model_path, test_ids, config)


def _cell(row: dict, column: str, default: str) -> str:
    """A table cell as text: ``default`` where the column is absent or the cell empty (None,
    NaN: pandas fills a column's gaps with NaN); a whole number as written (``7.0`` -> ``7``:
    pandas stores a column of ids with gaps as floats)."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return default
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _prepare_table(raw: Path, out: Path, model_path: Path, test_ids, config) -> Path:
    """The linked table prepared as the model's stored (or the configured) preprocessing says:
    its rows marked ``test`` the test split; the standardisation statistics the model's own
    when it has them and no row is marked ``train``."""
    from keras_advseg.data.prepare import prepare_dataset
    from keras_advseg.export import load_preprocessing
    from keras_advseg.inference import Preprocessing

    given = config.get("preprocessing")
    if given is None:
        stored = load_preprocessing(model_path)
    elif isinstance(given, dict):
        stored = Preprocessing.from_json(given, "evaluator_config preprocessing")
    else:
        stored = Preprocessing.from_file(given)
    if not test_ids:
        raise InputError("data: no row is marked split=test: nothing to card")
    trained = len(test_ids) < len(list(raw.iterdir()))
    statistics = None
    if stored.normalization == "global" and not trained:
        if stored.mean is None:
            raise InputError(
                "data: every row is a test row and the model's preprocessing has no statistics: "
                "mark the rows that give them split=train"
            )
        statistics = (stored.mean, stored.std)
    prepare_dataset(
        raw,
        out,
        stored.prepare_config(),
        progress=False,
        test_ids=test_ids,
        statistics=statistics,
    )
    return out


def _artifacts(out: Path, artifact_uri: str) -> dict:
    """The card's files as MLflow evaluation artifacts: their run URIs and content as written."""
    from mlflow.models.evaluation.artifacts import (
        JsonEvaluationArtifact,
        TextEvaluationArtifact,
    )

    base = f"{artifact_uri.rstrip('/')}/{ARTIFACT_FOLDER}"
    return {
        "card_json": JsonEvaluationArtifact(
            f"{base}/card.json", json.loads((out / "card.json").read_text())
        ),
        "card_md": TextEvaluationArtifact(f"{base}/card.md", (out / "card.md").read_text()),
        "card_html": TextEvaluationArtifact(f"{base}/card.html", (out / "card.html").read_text()),
    }
