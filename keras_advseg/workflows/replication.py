"""``report.md`` of a replicated study: each finding per training seed and pooled over seeds.

The pooled test of a finding is pre-specified: the finding's own test (paired Wilcoxon
signed-rank tests, Bonferroni over the finding's family) on per-subject Dice averaged
over the seeds (:func:`keras_advseg.evaluation.results.average_results`). A finding is
reproduced only when the pooled test holds; the per-seed verdicts stand beside it. The
spread of each defense's effect is the mean paired difference per seed, with a Student-t
95 % interval over seeds.
"""

from __future__ import annotations

import functools
from pathlib import Path

from keras_advseg.config import REGIONS, Study, attack_display
from keras_advseg.evaluation.results import average_results
from keras_advseg.evaluation.statistics import mean_ci
from keras_advseg.io import write_text_atomic
from keras_advseg.workflows.report import (
    FAMILIES,
    audit_verdict,
    failed_trainings,
    findings,
    mlflow_lines,
    study_loader,
    training_lines,
    worst_case_lines,
)

VERDICTS = {True: "**reproduced**", False: "**not reproduced**", None: "*measured*"}
MARKS = {True: "holds", False: "fails", None: "-"}
EFFECT_ATTACKS = (("none", 0.0), ("fgsm", 0.05), ("worst", 0.05))
"""The conditions of the effect table: clean, FGSM 0.05 and the worst case at 0.05."""


def seed_loaders(seed_dirs: dict[int, Path]) -> dict:
    """``{seed: load}``: each seed's evaluations, each read once (:func:`study_loader`)."""
    return {seed: study_loader(folder) for seed, folder in seed_dirs.items()}


def pooled_loader(loaders: dict):
    """``load(name)``: evaluation ``name`` averaged per subject over the seeds' ``loaders``."""
    return functools.cache(lambda name: average_results([load(name) for load in loaders.values()]))


def replicated_findings(
    study: Study, seed_dirs: dict[int, Path], loaders: dict | None = None, pooled=None
) -> list[dict]:
    """Every finding, pooled and per seed.

    Args:
        study: The study.
        seed_dirs: ``{training seed: its folder}``.
        loaders: :func:`seed_loaders` of ``seed_dirs``, to share their reads [new ones].
        pooled: :func:`pooled_loader` of ``loaders`` [a new one].

    Returns:
        ``[{"claim", "pooled": (passed, evidence), "seeds": {seed: passed}}]``.
    """
    loaders = loaders or seed_loaders(seed_dirs)
    checked = findings(pooled or pooled_loader(loaders), study)
    per_seed = {seed: findings(load, study) for seed, load in loaders.items()}
    return [
        {
            "claim": claim,
            "pooled": (passed, evidence),
            "seeds": {seed: per_seed[seed][i][1] for seed in seed_dirs},
        }
        for i, (claim, passed, evidence) in enumerate(checked)
    ]


def effect_rows(
    study: Study, seed_dirs: dict[int, Path], loaders: dict | None = None
) -> list[dict]:
    """The mean paired difference of per-subject Dice, model - reference, per seed.

    Every 3-D defense against the undefended UNet and against the equal-budget control,
    and the control against the undefended UNet, clean, under FGSM and the worst case.

    Args:
        study: The study.
        seed_dirs: ``{training seed: its folder}``.
        loaders: :func:`seed_loaders` of ``seed_dirs``, to share their reads [new ones].

    Returns:
        ``[{"model", "reference", "attack", "eps", "region", "per_seed": {seed: diff}}]``.
    """
    baseline = study.models3d[0].name
    control = study.control3d
    pairs = [(s.name, baseline) for s in study.defenses3d]
    if control is not None:
        pairs += [(control.name, baseline)] + [(s.name, control.name) for s in study.defenses3d]
    rows = []
    for seed, load in (loaders or seed_loaders(seed_dirs)).items():
        for model, reference in pairs:
            mine, theirs = load(model), load(reference)
            for attack, eps in EFFECT_ATTACKS:
                if not (mine.has(attack, eps) and theirs.has(attack, eps)):
                    continue
                for region in REGIONS:
                    a = mine.series(attack, eps, f"dice_{region}")
                    b = theirs.series(attack, eps, f"dice_{region}")
                    subjects = sorted(set(a) & set(b))
                    if not subjects:
                        continue
                    diff = sum(a[s] - b[s] for s in subjects) / len(subjects)
                    key = (model, reference, attack, eps, region)
                    row = next((r for r in rows if r["key"] == key), None)
                    if row is None:
                        row = {"key": key, "per_seed": {}}
                        rows.append(row)
                    row["per_seed"][seed] = diff
    return [
        dict(zip(("model", "reference", "attack", "eps", "region"), r["key"]), **r) for r in rows
    ]


def effect_cell(per_seed: dict[int, float]) -> str:
    """``+0.067 [+0.021, +0.113] 4/5``: mean over seeds, 95 % interval, seeds above 0."""
    mean, low, high = mean_ci(per_seed.values())
    above = sum(d > 0 for d in per_seed.values())
    interval = f" [{low:+.3f}, {high:+.3f}]" if low is not None else ""
    return f"{mean:+.3f}{interval} {above}/{len(per_seed)}"


def write_replicated_report(
    out: Path,
    preset: str,
    study: Study,
    seed_dirs: dict[int, Path],
    prepared,
    tracking_uri: str = "<tracking store>",
    timings: dict[str, float | None] | None = None,
    experiment: str | None = None,
    elapsed: float | None = None,
) -> Path:
    """``OUT/report.md``: findings per seed and pooled, effects with their spread over seeds,
    the worst case and audits, and links to each seed's own ``report.md``.

    Args:
        out: The study folder.
        preset: The study's preset name.
        study: The study.
        seed_dirs: ``{training seed: its folder}`` (see ``reproduce.seed_dir``).
        prepared: The prepared dataset the seeds share.
        tracking_uri: Where the runs are.
        timings: ``{step: seconds}`` of the study's steps (wall time).
        elapsed: Wall-clock seconds of the whole study (its steps may overlap).

    Returns:
        The report's path.
    """
    from keras_advseg.tracking import environment_tags

    out = Path(out)
    seeds = list(seed_dirs)
    n = len(seeds)
    env = environment_tags()
    lines = [
        f"# keras-advseg reproduction ({preset} preset, {n} training seed{'s' * (n > 1)}: "
        f"{', '.join(map(str, seeds))})\n",
        f"Data: `{Path(prepared.root).resolve()}` ({len(prepared.train_ids)} training, "
        f"{len(prepared.test_ids)} test subjects, {study.shape}^3), the same for every seed. "
        "A training seed sets initialisation, augmentation order, dropout, the validation "
        "subset that picks the best epoch, and the attacks' random starts.\n",
        f"Machine: {env['env.cpu']}, {env['env.cores']} cores, oneDNN "
        f"`TF_ENABLE_ONEDNN_OPTS={env['env.onednn']}`, TensorFlow "
        f"{env.get('env.tensorflow') or _installed('tensorflow')}. Bitwise results repeat on one machine only: op "
        "determinism fixes the order of every sum on one machine, but another CPU or "
        "oneDNN setting runs other kernels, and training diverges from there. So a "
        "finding here is what holds across training seeds, not one run's numbers.\n",
    ]
    if timings:
        known = [v for v in timings.values() if v is not None]
        lines.append(
            (f"Elapsed: {elapsed / 60:.1f} min. " if elapsed else "")
            + f"Wall time of the steps: {sum(known) / 60:.1f} min in all"
            + (f", {sum(known) / 60 / n:.1f} min a seed" if n > 1 else "")
            + (
                " (some steps were timed by an older version and are not counted)"
                if len(known) < len(timings)
                else ""
            )
            + (" (steps run side by side with --workers overlap)" if elapsed else "")
            + ".\n"
        )
    from keras_advseg.workflows.report import report_lines

    lines += report_lines(seed_dirs, out)
    lines += [
        "## The paper's findings, across seeds\n",
        "Each finding's test is a pre-specified family of paired Wilcoxon signed-rank tests, "
        "Bonferroni over the family. **Pooled**: that test on each test subject's Dice "
        f"averaged over the {n} seed{'s' * (n > 1)}; a finding is reproduced only when the "
        "pooled test holds. **Per seed**: the same test on one seed's models alone.\n",
        "| finding | pooled | " + " | ".join(f"seed {s}" for s in seeds) + " | seeds holding |",
        "|---|---|" + "---|" * n + "---|",
    ]
    loaders = seed_loaders(seed_dirs)
    pooled = pooled_loader(loaders)
    checked = replicated_findings(study, seed_dirs, loaders, pooled)
    for item in checked:
        passed = item["pooled"][0]
        marks = [MARKS[item["seeds"][s]] for s in seeds]
        holding = (
            f"{sum(v is True for v in item['seeds'].values())}/{n}" if passed is not None else "-"
        )
        lines.append(
            f"| {item['claim']} | {VERDICTS[passed]} | " + " | ".join(marks) + f" | {holding} |"
        )
    labels = {item["claim"].split()[0] for item in checked}
    clauses = [f"- {label}: {FAMILIES[label]}." for label in FAMILIES if label in labels]
    if clauses:
        lines += ["", "Per-defense findings, one row per defense:", "", *clauses]
    failed = failed_trainings(pooled, study)
    if failed:
        lines += ["\nFailed trainings (clean Dice averaged over the seeds):\n", *failed]
    lines.append("\nPooled evidence:\n")
    for item in checked:
        passed, evidence = item["pooled"]
        words = item["claim"].split()
        short = " ".join(words[:2]) if words[1].startswith(("unet3d", "unet2d")) else words[0]
        lines.append(f"- {short}: {VERDICTS[passed]}. {evidence}")
    rows = effect_rows(study, seed_dirs, loaders)
    if rows:
        lines += [
            "\n## Each defense's effect, with its spread over seeds\n",
            "Mean paired difference of per-subject Dice (model - reference) in each seed; the "
            "cell gives the mean over seeds, its 95 % Student-t interval over seeds (from two "
            "seeds on), and the number of seeds in which the difference is positive.\n",
            "| model | reference | condition | WT | TC | ET |",
            "|---|---|---|---|---|---|",
        ]
        keys = []
        for row in rows:
            key = (row["model"], row["reference"], row["attack"], row["eps"])
            if key not in keys:
                keys.append(key)
        for model, reference, attack, eps in keys:
            cells = {
                r["region"]: effect_cell(r["per_seed"])
                for r in rows
                if (r["model"], r["reference"], r["attack"], r["eps"])
                == (model, reference, attack, eps)
            }
            condition = "clean" if attack == "none" else f"{attack_display(attack)} {eps:g}"
            lines.append(
                f"| {model} | {reference} | {condition} | "
                + " | ".join(cells.get(r, "-") for r in REGIONS)
                + " |"
            )
    lines.append("\n## Worst case and gradient-masking audit (3-D models, mean over seeds)\n")
    lines += worst_case_lines(
        pooled,
        lambda name: (
            "; ".join(
                f"seed {s}: {audit_verdict(d / 'audits' / name)}" for s, d in seed_dirs.items()
            )
            if n > 1
            else audit_verdict(seed_dirs[seeds[0]] / "audits" / name)
        ),
        study,
        preset,
    )
    lines.append("## How each model was trained\n")
    lines += training_lines(study)
    lines.append("\n## Each seed's report\n")
    lines += [
        f"- seed {s}: [`{d.relative_to(out)}/report.md`]({d.relative_to(out)}/report.md) "
        "(tables beside the paper's values, figures)"
        for s, d in seed_dirs.items()
    ]
    lines += [
        "\n## MLflow\n",
        "Run names end in `-seed<N>`.",
        *mlflow_lines(tracking_uri, experiment),
    ]
    return write_text_atomic(out / "report.md", "\n".join(lines))


def _installed(package: str) -> str:
    """The installed version of ``package`` (this process need not have imported it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"
