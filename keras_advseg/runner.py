"""``advseg evaluate`` as a function: resolve the model, evaluate, write, track."""

from __future__ import annotations

import json
from pathlib import Path

from keras_advseg.evaluation import EvalConfig, evaluate, mlflow_metrics, summarize, write_outputs


def source_run_id(reference: str, path: Path) -> str | None:
    """The training run a model came from: the run id given, or its training folder's checkpoint state."""
    import re

    match = re.search(r"([0-9a-f]{32})", reference) if not Path(reference).is_file() else None
    if match:
        return match.group(1)
    state = path.parent / "checkpoint" / "state.json"
    if state.is_file():
        run_id = json.loads(state.read_text()).get("run_id")
        return run_id if run_id and re.fullmatch(r"[0-9a-f]{32}", run_id) else None
    return None


def run_evaluation(model_ref: str, data, out, config: EvalConfig, *, split: str = "test", transfer_ref=None,
                   tracking_uri: str, experiment: str, run_name: str | None = None, progress=None) -> dict:
    """Evaluates a model and logs everything to an MLflow run linked to its training run.

    Returns:
        The summary (as written to ``summary.json``).

    Raises:
        ValueError / DataError: bad model reference or data. TrackingError: unreachable store.
    """
    import mlflow

    from keras_advseg import figures
    from keras_advseg.export import load_model
    from keras_advseg.tracking import check_reachable, resolve_model_path, tracked_run
    from keras_advseg.training import open_data

    out = Path(out)
    check_reachable(tracking_uri)
    model_path = resolve_model_path(model_ref, tracking_uri)
    model = load_model(model_path)
    transfer = load_model(resolve_model_path(transfer_ref, tracking_uri)) if transfer_ref else None
    shape = _input_size(model)
    prepared = open_data(data, out / "prepared", shape)
    ids = prepared.ids("train") + prepared.ids("test") if split == "all" else prepared.ids(split)
    if not ids:
        raise ValueError(f"{data}: split {split!r} has no subjects")
    if shape is not None and prepared.shape[:2] != (shape, shape) and model.input_shape[1] is not None:
        raise ValueError(f"{data}: volumes are {prepared.shape}, the model expects {shape}^3")

    source = source_run_id(model_ref, model_path)
    tags = {"evaluation": "true", "attacks": ",".join(config.attacks)}
    if source:
        tags["mlflow.parentRunId"] = source
        tags["source_run_id"] = source
        tags.update(_source_tags(source, tracking_uri))
    if transfer_ref:
        tags["transfer_from"] = str(transfer_ref)
    with tracked_run(tracking_uri, experiment, run_name=run_name or f"eval-{'-'.join(config.attacks)}",
                     tags=tags) as run:
        mlflow.log_params({"model": str(model_ref), "split": split, "data_hash": prepared.data_hash,
                           "n_subjects": len(ids), "eps": ",".join(map(str, config.eps)), "steps": config.steps,
                           "eps_sweep": ",".join(map(str, config.eps_sweep)),
                           "iterations_sweep": config.iterations_sweep,
                           "attack_temperature": config.attack_temperature, "transfer_from": str(transfer_ref)})
        result = evaluate(model, prepared, ids, config, transfer_model=transfer, progress=progress)
        summary = summarize(result)
        meta = {"model": str(model_ref), "source_run_id": source, "evaluation_run_id": run.info.run_id,
                "split": split, "config": {**config.__dict__}, "data_hash": prepared.data_hash}
        written = write_outputs(result, summary, out, meta)
        if result.example is not None:
            written.append(figures.example_figure(result.example, out / "fig_example.png"))
        if summary["iterations"]:
            written.append(figures.iterations_figure(summary["iterations"], out / "fig_iterations.png"))
        sweep = summary["attacks"].get("fgsm_sweep")
        if sweep:
            curve = {eps: {m: entry[m]["mean"] for m in ("dice_wt", "dice_tc", "dice_et")} for eps, entry in sweep.items()}
            written.append(figures.eps_figure({tags.get("defense", "model"): curve}, out / "fig_eps.png"))
        flat, series = mlflow_metrics(summary)
        mlflow.log_metrics(flat)
        for name, points in series.items():
            for step, value in points:
                mlflow.log_metric(name, value, step=step)
        for path in written:
            mlflow.log_artifact(str(path))
    return {**meta, **summary}


def _input_size(model) -> int | None:
    from keras_advseg.models import SliceWise

    shape = model.slice_model.input_shape if isinstance(model, SliceWise) else model.input_shape
    return shape[1]


def _source_tags(run_id: str, tracking_uri: str) -> dict:
    """Copies the training run's comparison tags (defense, model, temperature, adv_eps) when it exists."""
    from mlflow.tracking import MlflowClient

    try:
        tags = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags
    except Exception:  # the training run may live in another store
        return {}
    return {k: tags[k] for k in ("defense", "model", "temperature", "adv_eps", "preset") if k in tags}


def run_compare(eval_dirs: list, baseline_dir, out, *, table_eps=(0.0, 0.05, 0.1), attack_eps: float = 0.05,
                title: str = "Defenses") -> str:
    """Writes the attack and defense tables, the tests and the overlay figure; returns the Markdown report.

    Raises:
        ValueError: a folder is not an evaluation, or subject sets differ.
    """
    from keras_advseg import figures, statistics as st
    from keras_advseg.atomic import rows_to_csv, write_text_atomic

    out = Path(out)
    baseline = st.load_results(baseline_dir)
    models = [st.load_results(d) for d in eval_dirs if Path(d).resolve() != Path(baseline_dir).resolve()]
    st.check_same_subjects(models, baseline)
    out.mkdir(parents=True, exist_ok=True)
    attack_rows, m_attacks = st.attack_table(baseline, attack_eps)
    defense_rows, m_defenses = st.defense_table(models, baseline, tuple(table_eps)) if models else ([], 0)
    n = len(baseline.subjects())
    parts = [f"# Robustness comparison ({n} subjects, paired by id)\n",
             f"## Table 1: attacks on {baseline.name} at eps {attack_eps:g}\n",
             f"Wilcoxon signed-rank vs no attack, Bonferroni over {m_attacks} comparisons; "
             f"* marks corrected p <= {st.ALPHA}.\n", st.to_markdown(attack_rows)]
    write_text_atomic(out / "table1_attacks.csv", rows_to_csv(attack_rows))
    if defense_rows:
        parts += [f"\n## {title}: FGSM, each model vs {baseline.name}\n",
                  f"Wilcoxon signed-rank vs {baseline.name}, Bonferroni over {m_defenses} comparisons; "
                  f"* marks corrected p <= {st.ALPHA}.\n", st.to_markdown(defense_rows)]
        write_text_atomic(out / "table_defenses.csv", rows_to_csv(defense_rows))
    report = "\n".join(parts)
    write_text_atomic(out / "tables.md", report)
    figures.eps_figure(st.sweep_curves([baseline] + models), out / "fig_eps_overlay.png")
    write_text_atomic(out / "compare.json", json.dumps({
        "baseline": str(baseline.path), "models": [str(m.path) for m in models], "n_subjects": n,
        "comparisons": {"attacks": m_attacks, "defenses": m_defenses},
        "table1": attack_rows, "defenses": defense_rows}, indent=2))
    return report
