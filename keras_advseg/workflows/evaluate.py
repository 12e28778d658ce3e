"""The evaluation workflow (``advseg evaluate``): resolve the model, evaluate, write, track.

The MLflow run is nested under the model's training run and copies its
comparison tags, so the UI lines evaluations up beside their training runs.
"""

from __future__ import annotations

from pathlib import Path

from keras_advseg.config import DICE_METRICS, REGIONS, EvalConfig, attack_display
from keras_advseg.data.prepare import open_prepared
from keras_advseg.errors import InputError
from keras_advseg.evaluation import figures, metric_names, summarize
from keras_advseg.evaluation.results import Evaluation, Summary, eps_key
from keras_advseg.export import load_model
from keras_advseg.io import write_json_atomic, write_text_atomic
from keras_advseg.workflows.frame import lineage, ready, scored_run, summary_head


def run_evaluation(
    model_ref: str,
    data,
    out,
    config: EvalConfig,
    *,
    split: str = "test",
    transfer_ref=None,
    tracking_uri: str,
    experiment: str,
    run_name: str | None = None,
    native: bool | str = False,
    strategy: str = "default",
    progress=None,
) -> dict:
    """Evaluates a model and logs everything to an MLflow run linked to its training run.

    ``native``: also score in each scan's own space, every row (True) or the clean row only
    (``"clean"``). With ``strategy`` ``mirrored`` the subjects are spread over the local devices, with
    ``multiworker`` also over the workers in ``TF_CONFIG``
    (:mod:`keras_advseg.evaluation.distributed`); only the chief writes and tracks.

    Returns:
        The summary as written to ``summary.json`` (eps keys as text), with the run's metadata.

    Raises:
        ValueError / DataError: bad model reference or data. TrackingError: unreachable store.
    """
    import mlflow
    from keras_advseg.evaluation.distributed import evaluate_distributed
    from keras_advseg.io import refuse_inputs_in_output
    from keras_advseg.training import make_strategy, worker_role

    inputs = {"model": model_ref, "data": data, "transfer source": transfer_ref}
    refuse_inputs_in_output(out, inputs)  # every worker, with the --out it was given
    distribution = make_strategy(strategy)  # before any other TensorFlow work
    chief, role = worker_role(strategy)
    if not chief:  # other workers evaluate their share and keep their files apart
        out = Path(out) / "workers" / role
    out = ready(out, tracking_uri, inputs)
    model, transfer, prepared, source, parent = open_model_and_data(
        model_ref, data, out, tracking_uri, other_ref=transfer_ref, split=split
    )
    ids = evaluated_ids(prepared, split)
    tags = {"evaluation": "true", "attacks": ",".join(config.attacks), **parent}
    if transfer_ref:
        tags["transfer_from"] = str(transfer_ref)
    grids = native_grids(prepared, ids) if native else None
    if not chief:
        result = evaluate_distributed(
            distribution, model, prepared, ids, config, transfer_model=transfer, native=grids
        )
        return {"model": str(model_ref), "worker": role, **summarize(result).to_json()}
    params = {
        "model": str(model_ref),
        "split": split,
        "data_hash": prepared.data_hash,
        "n_subjects": len(ids),
        "eps": ",".join(map(str, config.eps)),
        "steps": config.steps,
        "eps_sweep": ",".join(map(str, config.eps_sweep)),
        "iterations_sweep": config.iterations_sweep,
        "attack_temperature": config.attack_temperature,
        "vafa_setting": config.vafa_setting,
        "transfer_from": str(transfer_ref),
        "strategy": strategy,
    }
    run_name = run_name or f"eval-{'-'.join(config.attacks)}"
    with scored_run(tracking_uri, experiment, run_name=run_name, tags=tags, params=params) as run:
        result = evaluate_distributed(
            distribution,
            model,
            prepared,
            ids,
            config,
            transfer_model=transfer,
            native=grids,
            native_rows="clean" if native == "clean" else "all",
            progress=progress,
        )
        summary = summarize(result)
        meta = {
            **summary_head(model_ref, source, run, split),
            "config": {**config.__dict__},
            "data_hash": prepared.data_hash,
            "lesion_wise": lesion_wise_settings(prepared),
        }
        for path in write_outputs(result, summary, out, meta):
            run.keep(path)
        for path in _figures(result, summary, out, model_name(model_ref, tags), config):
            run.keep(path)
        flat, series = metric_names(summary)
        run.log_metrics(flat)
        run.log_series(series)
        in_store = "mlflow.parentRunId" in tags
        if source and in_store and transfer_ref is None and config.attack_temperature == 1.0:
            # the few numbers a reader compares first, on the model's own training run, so
            # that the runs table shows them in the model's row (its evaluations nest below)
            client = mlflow.MlflowClient()
            for key, value in headline_metrics(summary, split).items():
                client.log_metric(source, key, value)
    return {**meta, **summary.to_json()}


def lesion_wise_settings(prepared) -> dict:
    """How the clean row's lesion-wise scores were measured (``summary.json``'s
    ``lesion_wise``): in model space, at the prepared grid's voxel size when the raw scans
    are at hand (``spacing_known``), else at 1 mm per voxel; with BraTS-GLI's parameters."""
    from keras_advseg.evaluation.robustness import lesion_spacing_of
    from keras_advseg.lesionwise import DILATION, MIN_VOLUME_MM3, MISSED_HD95

    spacing = lesion_spacing_of(prepared)
    return {
        "space": "model",
        "spacing_mm": list(spacing or (1.0, 1.0, 1.0)),
        "spacing_known": spacing is not None,
        "dilation": DILATION,
        "min_volume_mm3": MIN_VOLUME_MM3,
        "missed_hd95_mm": MISSED_HD95,
    }


HEADLINE_ATTACKS = ("fgsm", "worst")


def headline_metrics(summary: Summary, split: str = "test") -> dict[str, float]:
    """Mean Dice over WT, TC and ET clean, under FGSM and under the worst case at each budget:
    ``eval_test.dice_mean_clean``, ``eval_test.dice_mean_worst_eps0.05``."""

    def mean(entry) -> float | None:
        values = [entry[m]["mean"] for m in DICE_METRICS]
        return None if any(v is None for v in values) else sum(values) / len(values)

    found = {"clean": mean(summary.clean)}
    for attack in HEADLINE_ATTACKS:
        for eps, entry in summary.attacks.get(attack, {}).items():
            found[f"{attack}_eps{eps_key(eps)}"] = mean(entry)
    return {f"eval_{split}.dice_mean_{k}": v for k, v in found.items() if v is not None}


def evaluated_ids(prepared, split: str) -> list[str]:
    """The labelled subjects of ``split``: ``all`` is training and test, not unlabelled."""
    return prepared.ids("train") + prepared.ids("test") if split == "all" else prepared.ids(split)


def open_model_and_data(model_ref, data, out: Path, tracking_uri: str, *, other_ref=None, split):
    """What attacking a model starts with: the model (and another one, the transfer source or
    the audit's reference), the data prepared at its input size, both checked to fit, and the
    training run it came from with the tags that nest a run under it.

    Returns:
        ``(model, other or None, prepared, source run id or None, tags)``.

    Raises:
        InputError: a model does not fit the data, or ``split`` has no subjects.
    """
    from keras_advseg.tracking import resolve_model_path

    model_path = resolve_model_path(model_ref, tracking_uri)
    model = load_model(model_path)
    other = load_model(resolve_model_path(other_ref, tracking_uri)) if other_ref else None
    prepared = open_prepared(data, out / "prepared", model_input_size(model))
    if not evaluated_ids(prepared, split):
        raise InputError(f"{data}: split {split!r} has no subjects")
    check_model_fits_data(model, model_path, prepared, data)
    if other is not None:
        check_model_fits_data(other, other_ref, prepared, data)
    source, tags = lineage(model_ref, model_path, tracking_uri)
    return model, other, prepared, source, tags


def write_outputs(evaluation: Evaluation, summary: Summary, out: Path, meta: dict) -> list[Path]:
    """Writes ``per_subject.csv``, ``iterations.csv`` (if any) and ``summary.json`` atomically."""
    out.mkdir(parents=True, exist_ok=True)
    written = [write_text_atomic(out / "per_subject.csv", evaluation.rows_csv())]
    if evaluation.iterations:
        written.append(write_text_atomic(out / "iterations.csv", evaluation.iterations_csv()))
    document = {**meta, **summary.to_json()}
    written.append(write_json_atomic(out / "summary.json", document, default=_jsonable))
    return written


def model_name(model_ref, tags: dict) -> str:
    """A model's name for figures: its folder (``models/unet3d-none/model.keras``), else
    ``<model>-<defense>`` from its training run's tags, else the file's stem."""
    path = Path(str(model_ref))
    if path.suffix == ".keras" and path.stem == "model" and path.parent.name:
        return path.parent.name
    if "model" in tags and "defense" in tags:
        return f"{tags['model']}-{tags['defense']}"
    return path.stem


def _figures(
    result: Evaluation, summary: Summary, out: Path, label: str, config: EvalConfig
) -> list[Path]:
    written = []
    if result.example is not None:
        written.append(figures.example_figure(result.example, out / "fig_example.png", model=label))
    if summary.iterations:
        written.append(
            figures.iterations_figure(
                summary.iterations,
                out / "fig_iterations.png",
                eps=config.budgets_iterative[0],
                model=label,
            )
        )
    sweep = summary.attacks.get("fgsm_sweep")
    if sweep:
        # the sweep and FGSM at the evaluation's own budgets (e.g. the card's 0.05 and 0.1), so
        # that the figure spans the budgets the numbers beside it were measured at
        points = {**summary.attacks.get("fgsm", {}), **sweep}
        curve = {eps: {m: entry[m]["mean"] for m in DICE_METRICS} for eps, entry in points.items()}
        written.append(
            figures.eps_figure(
                {label: curve},
                out / "fig_eps.png",
                title="Mean Dice vs FGSM eps (the sweep and the evaluation's budgets)",
            )
        )
    if config.eps_curve:
        curves = {
            attack_display(attack): {
                eps: {m: entry[m]["mean"] for m in DICE_METRICS} for eps, entry in by_eps.items()
            }
            for attack, by_eps in summary.attacks.items()
            if attack != "fgsm_sweep"
        }
        written.append(
            figures.eps_figure(
                curves,
                out / "fig_eps_curve.png",
                xlabel="eps",
                log_x=True,
                title=f"{figures.model_label(label)}: mean Dice vs eps, every attack",
            )
        )
    return written


def native_grids(prepared, ids):
    """``subject_id -> NativeGrid`` from the raw dataset the cache was prepared from.

    Raises:
        InputError: the cache records no source dataset, or it lacks a subject.
    """
    from keras_advseg.inference import NativeGrid

    subjects = {s.subject_id: s for s in raw_subjects(prepared, ids, "native-space scores")}
    return lambda subject_id: NativeGrid.of(subjects[subject_id], prepared.config.margin)


def raw_subjects(prepared, ids, purpose: str) -> list:
    """The raw :class:`~keras_advseg.data.Subject` of ``ids`` in the dataset the cache was
    prepared from, in ``ids``' order.

    Raises:
        InputError: the cache records no source dataset, or it lacks a subject.
    """
    from keras_advseg.data import discover_subjects

    source = prepared.source
    if source is None or not Path(source).is_dir():
        raise InputError(
            f"{prepared.root}: the raw dataset it was prepared from ({source}) is not available; "
            f"{purpose} need the original scans"
        )
    subjects = {s.subject_id: s for s in discover_subjects(source)}
    missing = [i for i in ids if i not in subjects]
    if missing:
        raise InputError(f"{source}: lacks subjects {missing[:3]} of {prepared.root}")
    return [subjects[i] for i in ids]


def check_model_fits_data(model, model_ref, prepared, data) -> None:
    """Says, before the first attack, when the model and the prepared volumes disagree
    (:func:`keras_advseg.inference.check_model_fits`).

    Raises:
        InputError: naming both.
    """
    from keras_advseg.inference import check_model_fits

    check_model_fits(model, model_ref, tuple(prepared.shape), data)


def model_input_size(model) -> int | None:
    from keras_advseg.models import SliceWise

    shape = model.slice_model.input_shape if isinstance(model, SliceWise) else model.input_shape
    return shape[1]


def _jsonable(value):
    import numpy as np

    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def summary_lines(summary: dict, out: Path) -> list[str]:
    """What ``advseg evaluate`` prints: clean Dice, Dice under each attack and budget, and what
    was written (or, on a worker that is not the chief, that the chief writes the rows)."""

    def dice(entry) -> str:
        return ", ".join(f"{r.upper()} {entry[f'dice_{r}']['mean']:.3f}" for r in REGIONS)

    from keras_advseg.workflows.corruptions import low_clean_dice_warning

    lines = [f"clean Dice {dice(summary['clean'])}"]
    lines += low_clean_dice_warning({r: summary["clean"][f"dice_{r}"]["mean"] for r in REGIONS})
    lesion = {
        (m, r): summary["clean"].get(f"lesion_{m}_{r}", {}).get("mean")
        for m in ("dice", "hd95")
        for r in REGIONS
    }
    if None not in lesion.values():  # not in evaluations written before lesion-wise scores
        settings = summary.get("lesion_wise", {})
        voxel = " x ".join(f"{v:g}" for v in settings.get("spacing_mm", (1, 1, 1)))
        scale = f"{voxel} mm voxels" if settings.get("spacing_known") else "1 voxel = 1 mm"
        lines.append(
            "clean lesion-wise Dice (BraTS 2023) "
            + ", ".join(f"{r.upper()} {lesion['dice', r]:.3f}" for r in REGIONS)
            + "; HD95 "
            + ", ".join(f"{r.upper()} {lesion['hd95', r]:.1f}" for r in REGIONS)
            + f" mm (model space, {scale})"
        )
    setting = (summary.get("config") or {}).get("vafa_setting", "light")
    for attack, by_eps in summary["attacks"].items():
        if attack == "vafa":  # outside the l-inf ball: its setting, not eps, is its budget
            lines += [f"vafa ({setting} setting): Dice {dice(e)}" for e in by_eps.values()]
        elif attack != "fgsm_sweep":
            lines += [f"{attack} eps {value}: Dice {dice(e)}" for value, e in by_eps.items()]
    if "worker" in summary:
        lines.append(f"{summary['worker']}: evaluated its share; the chief writes the rows")
    else:
        lines.append(f"wrote {Path(out) / 'per_subject.csv'} and {Path(out) / 'summary.json'}")
    return lines
