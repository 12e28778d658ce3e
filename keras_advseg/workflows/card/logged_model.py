"""A card as an MLflow logged model (MLflow 3): its headline numbers as the model's metrics,
linked to the evaluation dataset, and the card's folder as its artifacts; and cards read back
from the tracking store alone (``advseg leaderboard --from-mlflow``)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from keras_advseg.config import REGIONS

CARD_TAG = "keras_advseg.card"
"""The tag (value ``"true"``) of every logged model that holds a card."""

MODEL_TYPE = "keras-advseg/segmentation"

RANKED = {
    "worst_dice": ("worst", "dice"),
    "corrupted_dice": ("corruptions", "corrupted_dice"),
    "certified_dice": ("certified", "certified_dice"),
    "clean_dice": ("clean", "dice"),
}
"""The logged model's metrics ``search_logged_models(order_by=...)`` ranks on: each the mean
over WT, TC and ET of the card's headline (``clean``: clean) result entries of that axis and
metric, the values of the leaderboard's columns of the same name; ``<metric>_<region>`` beside
them."""

SKIPPED = ("prepared", "model.keras", "model.source.json")
DOWNLOADED = ".from-mlflow.json"
"""The mark ``leaderboard --from-mlflow`` leaves in each card folder it downloads: only a
folder with it is ever replaced."""
"""What a card's folder holds that is not the card (the prepared data, a model copy)."""


def model_metrics(card: dict) -> dict[str, float]:
    """The logged model's metrics: :data:`RANKED`'s means over the regions and each region's
    value (a metric whose entries are not all there is left out)."""
    metrics = {}
    for name, (axis, metric) in RANKED.items():
        entries = {
            e["region"]: e["value"]
            for e in card["results"]
            if e["axis"] == axis
            and e["metric"] == metric
            and (e["headline"] or axis == "clean")
            and e["value"] is not None
        }
        for region, value in entries.items():
            metrics[f"{name}_{region}"] = float(value)
        if set(entries) == set(REGIONS):
            metrics[name] = float(sum(entries.values()) / len(REGIONS))
    return metrics


def log_card_model(card: dict, out: Path, run_id: str, experiment_id: str) -> str:
    """Logs ``card`` as an MLflow logged model of the card's run: tags and params that say
    which model and plan, :func:`model_metrics` against the evaluation dataset, the card's
    folder (but :data:`SKIPPED`) as its artifacts; READY once all are there.

    Args:
        card: The card as written.
        out: Its folder.
        run_id, experiment_id: The card's MLflow run and its experiment.

    Returns:
        The logged model's id.
    """
    from mlflow.entities import LoggedModelStatus

    import mlflow
    from keras_advseg.workflows.card.hub import default_model_name

    provenance = card["provenance"]
    name = default_model_name(card)
    model = mlflow.initialize_logged_model(
        name=logged_name(name),
        source_run_id=run_id,
        experiment_id=experiment_id,
        model_type=MODEL_TYPE,
        tags={
            CARD_TAG: "true",
            "card.model_name": name,
            "card.plan": card["plan"]["name"],
            "card.version": str(card["version"]),
            "card.unreliable": str(card["unreliable"]["flag"]).lower(),
            **(
                {"model.sha256": provenance["model"]["sha256"]}
                if (provenance.get("model") or {}).get("sha256")
                else {}
            ),
        },
        params={"model": str(card["model"]), "plan": card["plan"]["name"], "seed": card["seed"]},
    )
    try:
        mlflow.log_metrics(
            model_metrics(card), run_id=run_id, model_id=model.model_id, dataset=_dataset(card)
        )
        with tempfile.TemporaryDirectory() as staging:
            folder = Path(staging) / "card"
            shutil.copytree(out, folder, ignore=shutil.ignore_patterns(*SKIPPED, "*.partial"))
            mlflow.MlflowClient().log_model_artifacts(model.model_id, str(folder))
    except BaseException:
        mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return model.model_id


def logged_name(name: str) -> str:
    """``name`` as MLflow accepts a logged model's name: ``/ : . % " '`` become ``_``
    (``unet3d-adversarial-eps0.05`` -> ``unet3d-adversarial-eps0_05``; the tag
    ``card.model_name`` keeps the name as it was)."""
    return re.sub(r"[/:.%\"']", "_", name) or "model"


def _dataset(card: dict):
    """The evaluation data as an MLflow dataset: its source, name and digest."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    from keras_advseg.workflows.card.hub import default_dataset_name

    data = card["provenance"]["data"]
    source = data.get("source")
    if not source:
        uri = "unknown:"
    else:
        uri = source if "://" in source else Path(source).resolve().as_uri()
    # no spaces: MLflow's folder store writes a metric's dataset name in a space-separated line
    name = re.sub(r"\s+", "-", f"{default_dataset_name(card)}:{data['split']}")
    return MetaDataset(
        source=HTTPDatasetSource(uri),
        name=name,
        digest=str(data.get("digest") or "unknown")[:36],
    )


def cards_from_tracking(tracking_uri: str, experiment: str, into: Path, say=None) -> list[Path]:
    """Every READY card model of ``experiment`` downloaded into ``into/<name>`` (a second
    model of the same name as ``<name>-2``), oldest first (the first is the leaderboard's
    reference).

    Raises:
        InputError: no such experiment, or fewer than two card models in it.
        TrackingError: the store is unreachable.
    """
    from mlflow.entities import LoggedModelStatus

    import mlflow
    from keras_advseg.errors import InputError
    from keras_advseg.tracking import check_reachable, environ_values

    check_reachable(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise InputError(f"--experiment: no experiment {experiment!r} in {tracking_uri}")
    models, token = [], None
    while True:  # every page: a page holds at most 100 models
        page = client.search_logged_models(
            experiment_ids=[found.experiment_id],
            filter_string=f"tags.`{CARD_TAG}` = 'true'",
            order_by=[{"field_name": "creation_time", "ascending": True}],
            page_token=token,
        )
        models += [m for m in page if m.status == LoggedModelStatus.READY]
        token = page.token
        if not token:
            break
    if len(models) < 2:
        raise InputError(
            f"--from-mlflow: {len(models)} card model(s) in experiment {experiment!r} of "
            f"{tracking_uri}; a leaderboard needs at least two (advseg card logs one per card)"
        )
    planned, names = [], set()
    for model in models:  # names from the store are untrusted: one path component each
        name = logged_name(model.tags.get("card.model_name") or model.name or model.model_id)
        unique, k = name, 2
        while unique in names:
            unique, k = f"{name}-{k}", k + 1
        names.add(unique)
        folder = into / unique
        if folder.exists() and not (folder / DOWNLOADED).is_file():
            raise InputError(
                f"{folder}: exists and is not a card this command downloaded; choose another --out"
            )
        planned.append((model, unique, folder))
    into.mkdir(parents=True, exist_ok=True)
    folders = []
    for model, unique, folder in planned:
        with tempfile.TemporaryDirectory(dir=into, prefix=".download-") as staging:
            # MLflow's progress bars off: one line per card is said instead
            with environ_values({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=model.artifact_location,
                        dst_path=staging,
                        tracking_uri=tracking_uri,
                    )
                )
            (local / DOWNLOADED).write_text(
                json.dumps({"model_id": model.model_id, "run_id": model.source_run_id}) + "\n"
            )
            if folder.exists():  # an earlier download of this command (its mark): replaced
                shutil.rmtree(folder)
            local.rename(folder)
        if say is not None:
            say(f"{unique}: logged model {model.model_id} (run {model.source_run_id})")
        folders.append(folder)
    return folders
