"""A card as a Hugging Face model card: ``README.md`` with the Hub's ``model-index`` metadata and
the card's Markdown body, and the Hub's ``.eval_results/`` file. Nothing is uploaded."""

from __future__ import annotations

from pathlib import Path

from keras_advseg.errors import FileFormatError, InputError

EVAL_RESULTS = Path(".eval_results") / "keras-advseg.yaml"
"""The Hub's evaluation-results file, relative to the exported folder."""

TASK = {"type": "image-segmentation", "name": "Brain tumour segmentation (BraTS regions)"}


def hub_metrics(card: dict) -> list[dict]:
    """The card's clean and headline numbers as ``model-index`` metrics: one per number (type
    ``dice``, a name that says what it is, the value as in ``card.json``, its settings, region
    and bound in ``args``), in the order of the card's ``results``."""
    metrics = []
    for entry in card["results"]:
        if not (entry["headline"] or entry["axis"] == "clean") or entry["value"] is None:
            continue
        args = {"axis": entry["axis"], "region": entry["region"], "bound": entry["bound"]}
        args.update(entry["settings"])
        if entry["ci95"] is not None:
            args["ci95"] = entry["ci95"]
        if entry["subjects"] is not None:
            args["subjects"] = len(entry["subjects"])
        metrics.append(
            {
                "type": "dice",
                "name": metric_name(entry),
                "value": entry["value"],
                "args": args,
                "verified": False,
            }
        )
    return metrics


def metric_name(entry: dict) -> str:
    """What a ``results`` entry measures, in words (the Hub shows it as the metric's name)."""
    region, settings = (entry["region"] or "scan").upper(), entry["settings"]
    eps, sigma = settings.get("eps"), settings.get("sigma")
    if entry["axis"] == "clean":
        return f"Dice {region}, clean scans"
    if entry["axis"] == "worst" and isinstance(eps, (int, float)):
        return f"Dice {region} under the worst-case attack, l-inf eps {eps:g} (an upper bound)"
    if entry["axis"] == "corruptions":
        levels = ", ".join(str(s) for s in settings.get("severities") or [])
        return f"Dice {region} of the corrupted scans (severity {levels})"
    if entry["axis"] == "certified" and isinstance(sigma, (int, float)):
        return f"certified Dice {region}, sigma {sigma:g} (a guarantee)"
    return f"{entry['metric']} {region} ({entry['axis']}, {entry['bound']})"


def model_card(card: dict, *, model_name: str, dataset_name: str, dataset_id: str | None) -> str:
    """``README.md`` of a Hugging Face model repository: YAML metadata (``model-index`` with the
    task, the dataset and :func:`hub_metrics`) and the card's Markdown body."""
    import yaml

    from keras_advseg.workflows.card.render import card_markdown

    metadata = {
        "library_name": "keras",
        "pipeline_tag": "image-segmentation",
        "tags": ["keras-advseg", "robustness-card", "medical-imaging", "brain-tumor", "3d"],
        "model-index": [
            {
                "name": model_name,
                "results": [
                    {
                        "task": dict(TASK),
                        "dataset": {
                            "type": dataset_id or dataset_name,
                            "name": dataset_name,
                            "split": card["provenance"]["data"]["split"],
                        },
                        "metrics": hub_metrics(card),
                    }
                ],
            }
        ],
    }
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    warning = ""
    if card["unreliable"]["flag"]:
        items = ", ".join(
            f"item {i.get('number', '?')} ({i.get('claim', 'no claim recorded')})"
            for i in card["unreliable"]["items"]
        )
        warning = (
            f"> **Unreliable evaluation**: the gradient-masking audit says "
            f"{card['unreliable']['verdict']} ({items}); read the attacked numbers with it.\n\n"
        )
    return f"---\n{front}---\n\n{warning}{card_markdown(card)}"


def eval_results(card: dict, dataset_id: str) -> list[dict]:
    """The Hub's ``.eval_results/`` entries: one per :func:`hub_metrics` number, the benchmark
    dataset ``dataset_id``, the card's date, what the number is in ``notes``."""
    created = str(card.get("created") or "")
    date = created.replace(" UTC", "Z").replace(" ", "T") if created.endswith("UTC") else None
    entries = []
    for metric in hub_metrics(card):
        entry = {
            "dataset": {"id": dataset_id, "task_id": task_id(metric)},
            "value": metric["value"],
            "notes": f"keras-advseg robustness card, plan {card['plan']['name']}: {metric['name']}",
        }
        if date:
            entry["date"] = date
        entries.append(entry)
    return entries


def task_id(metric: dict) -> str:
    """A task id for one metric: its axis, region and the settings that tell numbers apart."""
    args = metric["args"]
    parts = [str(args.get("axis")), str(args.get("region") or "scan")]
    for key in ("eps", "sigma"):
        if isinstance(args.get(key), (int, float)):
            parts.append(f"{key}{args[key]:g}")
    return "-".join(parts)


def write_hub_card(
    card_dir,
    out,
    *,
    model_name: str | None = None,
    dataset_name: str | None = None,
    dataset_id: str | None = None,
) -> list[Path]:
    """Writes ``OUT/README.md`` (and, with ``dataset_id``, ``OUT/.eval_results/keras-advseg.yaml``)
    from the card in ``card_dir``; each file atomically, none of them over a file the export
    did not write.

    Args:
        card_dir: A card folder (or its ``card.json``); read and validated.
        out: The folder to write (a local copy of the model repository, or a new folder).
        model_name: The ``model-index`` name; None: the carded model's folder name.
        dataset_name: The dataset's name; None: from the card's data.
        dataset_id: The Hub id of the benchmark dataset the results belong to (the Hub's
            ``.eval_results/`` requires one); None: no ``.eval_results/`` file.

    Returns:
        The files written.

    Raises:
        FileFormatError: not a card.
        InputError: a README.md (or, with ``dataset_id``, an ``.eval_results`` file) in OUT
            that this export did not write.
    """
    import yaml

    from keras_advseg.io import ensure_writable_folder, write_text_atomic
    from keras_advseg.workflows.card.schema import read_card

    card = read_card(card_dir)
    out = ensure_writable_folder(out, {"card": card["path"]})
    readme = out / "README.md"
    _refuse_unless_ours(readme, "keras-advseg", _front_matter)
    results_file = out / EVAL_RESULTS
    if dataset_id:
        if results_file.parent.exists() and not results_file.parent.is_dir():
            raise InputError(
                f"{results_file.parent}: exists and is not a folder; choose another --out"
            )
        _refuse_unless_ours(results_file, "keras-advseg robustness card", _text)
    model_name = model_name or default_model_name(card)
    dataset_name = dataset_name or default_dataset_name(card)
    try:
        text = model_card(
            card, model_name=model_name, dataset_name=dataset_name, dataset_id=dataset_id
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise FileFormatError(
            f"{card['path']}/card.json: malformed for a model card ({type(exc).__name__}: {exc})"
        ) from None
    written = [write_text_atomic(readme, text)]
    if dataset_id:
        results_file.parent.mkdir(exist_ok=True)
        text = yaml.safe_dump(eval_results(card, dataset_id), sort_keys=False)
        written.append(write_text_atomic(results_file, text))
    return written


def default_model_name(card: dict) -> str:
    """The carded model's folder name for ``model.keras`` (the name ``advseg train`` gives),
    else its file name without the suffix."""
    path = Path(str(card["model"]))
    return path.parent.name if path.name == "model.keras" and path.parent.name else path.stem


def default_dataset_name(card: dict) -> str:
    """``BraTS-layout phantom`` for the built-in phantom, else the raw data's folder name."""
    data = card["provenance"]["data"]
    if str(data.get("kind", "")).startswith("phantom"):
        return "BraTS-layout phantom (keras-advseg, MNI152-based)"
    source = data.get("source")
    return Path(source).name if source else "unknown"


def _refuse_unless_ours(path: Path, mark: str, read) -> None:
    """Refuses an existing ``path`` whose text (as ``read`` gives it) lacks ``mark``: a file
    the export did not write is never replaced.

    Raises:
        InputError: naming the file.
    """
    if path.exists() and mark not in read(path):
        raise InputError(
            f"{path}: exists and was not written by advseg card-export; choose another --out "
            "or move it"
        )


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _front_matter(path: Path) -> str:
    text = _text(path)
    if not text.startswith("---\n"):
        return ""
    return text.split("\n---\n", 1)[0]
