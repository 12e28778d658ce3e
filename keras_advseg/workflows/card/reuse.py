"""Each command of a card computed once: reused from the card's folder when its stamp has the
same key, downloaded from a card run in the tracking store that logged it with that key, or
run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from keras_advseg.errors import FileFormatError
from keras_advseg.io import read_json, write_json_atomic

STAMP = "card_axis.json"
"""The file in an axis's folder that records the key it was computed with."""


def obtain_axis(folder: Path, axis: str, key: str, run, tracking_uri: str, say) -> str:
    """Makes ``folder`` hold ``axis`` computed with ``key``: reused when its stamp
    (``card_axis.json``) has the key, else downloaded from the card run in the tracking store
    that logged the axis with this key, else ``run(folder)``.

    Returns:
        ``"folder"``, ``"mlflow:<run id>"`` or ``"run"``: where the axis came from.
    """
    stamp = folder / STAMP
    try:
        done = read_json(stamp, "card axis stamp").get("key") == key
    except FileFormatError:
        done = False
    if done:
        say(f"{axis}: reused {folder}")
        return "folder"
    run_id = download_axis(folder, axis, key, tracking_uri)
    if run_id is not None:
        say(f"{axis}: reused from MLflow run {run_id}")
        origin = f"mlflow:{run_id}"
    else:
        say(f"{axis}: running")
        run(folder)
        origin = "run"
    write_json_atomic(stamp, {"axis": axis, "key": key}, indent=None)
    return origin


def download_axis(folder: Path, axis: str, key: str, tracking_uri: str) -> str | None:
    """Copies into ``folder`` the axis files of the newest finished card run tagged with ``key``
    (its files are untrusted input: the card reads them as it reads its own); None when the
    store has none."""
    import shutil
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`card.axis.{axis}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{axis}-", dir=folder.parent))
    try:
        downloaded = client.download_artifacts(run_id, f"axes/{axis}", str(staging))
        shutil.copytree(downloaded, folder, dirs_exist_ok=True)
    except Exception:  # the run's artifacts are gone or unreadable: compute the axis instead
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run_id


def digest(path: Path) -> str:
    """The SHA-256 of a model file (an axis of another model is never reused)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def data_identity(prepared_dir) -> str:
    """The raw dataset a prepared cache came from and its split and preparation (its hash)."""
    from keras_advseg.data.prepare import load_prepared

    prepared = load_prepared(prepared_dir)
    source = str(Path(prepared.source).resolve()) if prepared.source else ""
    return f"{source}|{prepared.data_hash}"
