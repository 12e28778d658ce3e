"""``advseg reproduce``: the whole study in one command, resumable.

Prepare data (the phantom by default) -> train the 3-D and 2-D UNet without
and with each defense -> attack each (FGSM, i-FGSM, targeted i-FGSM, PGD,
sweeps, logit-level attacks on distilled models) -> paired statistics ->
``report.md`` with our tables beside the paper's published values and a
check of the paper's directional findings. Every step leaves its output in
``OUT``; re-running skips finished steps.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from keras_advseg import paper_values
from keras_advseg.atomic import write_text_atomic


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study."""

    model: str
    defense: str
    options: tuple = ()

    @property
    def name(self) -> str:
        suffix = "".join(f"-{k.replace('adv_eps', 'eps').replace('temperature', 'T')}{v:g}" for k, v in self.options)
        return f"{self.model}-{self.defense}{suffix}"

    @property
    def temperature(self) -> float:
        return dict(self.options).get("temperature", 1.0)


@dataclass(frozen=True)
class Study:
    """A preset of the study."""

    phantom_subjects: int
    voxel_mm: float
    shape: int
    n4: bool
    test_fraction: float
    train_preset: str
    models3d: tuple[ModelSpec, ...]
    models2d: tuple[ModelSpec, ...]
    steps: int
    eps_sweep: tuple[float, ...]
    epochs: int | None = None
    table_eps: tuple[float, ...] = (0.0, 0.05, 0.1)
    attacks: tuple[str, ...] = ("fgsm", "ifgsm", "tifgsm", "pgd")
    attacks2d: tuple[str, ...] | None = None  # the undefended 2-D UNet's attacks [attacks]
    warm_start: bool = False
    extra: dict = field(default_factory=dict)


def _defended(model: str, temperatures, epsilons, noise=True) -> tuple[ModelSpec, ...]:
    specs = [ModelSpec(model, "none")]
    specs += [ModelSpec(model, "distillation", (("temperature", t),)) for t in temperatures]
    specs += [ModelSpec(model, "adversarial", (("adv_eps", e),)) for e in epsilons]
    if noise:
        specs.append(ModelSpec(model, "noise"))
    return tuple(specs)


PAPER_GRID = tuple(round(0.001 * i, 3) for i in range(11))

STUDIES = {
    "smoke": Study(phantom_subjects=8, voxel_mm=6.0, shape=16, n4=False, test_fraction=0.25, train_preset="smoke",
                   models3d=_defended("unet3d", (20,), (0.05,)), models2d=_defended("unet2d", (), (0.05,), noise=False),
                   steps=3, eps_sweep=(0.0, 0.005, 0.01), warm_start=True),
    "quick": Study(phantom_subjects=56, voxel_mm=3.0, shape=32, n4=True, test_fraction=0.36, train_preset="quick",
                   models3d=_defended("unet3d", (20,), (0.05,), noise=False),
                   models2d=_defended("unet2d", (), (0.05,), noise=False),
                   steps=10, eps_sweep=PAPER_GRID, attacks2d=("fgsm", "ifgsm"), warm_start=True),
    "paper": Study(phantom_subjects=285, voxel_mm=1.0, shape=128, n4=True, test_fraction=0.2, train_preset="paper",
                   models3d=_defended("unet3d", (20, 100, 500, 5000), (0.01, 0.05, 0.1)),
                   models2d=_defended("unet2d", (20, 100, 500, 5000), (0.01, 0.05, 0.1)),
                   steps=10, eps_sweep=PAPER_GRID),
}


def reproduce(preset: str, out: str | Path, *, data: str | Path | None = None, tracking_uri: str,
              experiment: str | None = None, seed: int = 0, workers: int = 1) -> Path:
    """Runs (or resumes) the study and returns the path of ``report.md``.

    Raises:
        ValueError: unknown preset. DataError / TrainingError / TrackingError: as the steps.
    """
    from keras_advseg.data.phantom import PhantomConfig, synthesize_dataset
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset
    from keras_advseg.evaluation import EvalConfig
    from keras_advseg.runner import run_compare, run_evaluation
    from keras_advseg.tracking import check_reachable
    from keras_advseg.training import train

    if preset not in STUDIES:
        raise ValueError(f"--preset must be one of {sorted(STUDIES)}. Received: {preset!r}")
    study = STUDIES[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    experiment = experiment or f"advseg-reproduce-{preset}"
    # Under `mlflow run` the project's run id is in the environment; the study's runs are its own.
    os.environ.pop("MLFLOW_RUN_ID", None)
    check_reachable(tracking_uri)
    models = study.models3d + study.models2d
    plan = ["data", "prepare"] + [f"train {m.name}" for m in models]
    for m in models:
        plan.append(f"evaluate {m.name}")
        if m.defense == "distillation":
            plan.append(f"evaluate {m.name} at T={m.temperature:g}")
    plan += ["compare", "report"]
    progress = _Progress(plan, out / "progress.json")

    with progress.step("data") as skip:
        if data is None:
            data = out / "phantom"
            if not skip:
                synthesize_dataset(data, study.phantom_subjects, seed=seed,
                                   config=PhantomConfig(voxel_mm=study.voxel_mm), workers=workers)
    with progress.step("prepare") as skip:
        prepared = prepare_dataset(data, out / "prepared",
                                   PrepareConfig(shape=(study.shape,) * 3, n4=study.n4,
                                                 test_fraction=study.test_fraction, seed=seed), workers=workers)

    model_dirs = {}
    for spec in models:
        model_dir = out / "models" / spec.name
        model_dirs[spec.name] = model_dir
        with progress.step(f"train {spec.name}") as skip:
            if not skip:
                state = model_dir / "checkpoint" / "state.json"
                resume = state.is_file() and not json.loads(state.read_text()).get("finished")
                config = spec_config(study, spec, seed=seed, **warm_start_options(study, spec, model_dirs))
                train(config, out / "prepared", model_dir, tracking_uri=tracking_uri, experiment=experiment,
                      run_name=spec.name, resume=resume, verbose=0)

    eval_dirs = {}
    for spec in models:
        baseline = spec.defense == "none"
        attacks = (study.attacks2d or study.attacks) if spec.model == "unet2d" else study.attacks
        config = EvalConfig(attacks=attacks if baseline else ("fgsm",),
                            eps=tuple(e for e in study.table_eps if e > 0), iterative_eps=(0.05,), steps=study.steps,
                            eps_sweep=study.eps_sweep, iterations_sweep=baseline and spec.model == "unet3d",
                            seed=seed)
        jobs = [(f"evaluate {spec.name}", out / "evals" / spec.name, config)]
        if spec.defense == "distillation":
            logit = EvalConfig(attacks=("fgsm",), eps=config.eps, steps=study.steps, eps_sweep=(),
                               attack_temperature=spec.temperature, seed=seed)
            jobs.append((f"evaluate {spec.name} at T={spec.temperature:g}", out / "evals" / f"{spec.name}-logit", logit))
        for label, eval_dir, eval_config in jobs:
            eval_dirs[eval_dir.name] = eval_dir
            with progress.step(label) as skip:
                if not skip:
                    run_evaluation(str(model_dirs[spec.name] / "model.keras"), out / "prepared", eval_dir,
                                   eval_config, tracking_uri=tracking_uri, experiment=experiment,
                                   run_name=f"eval-{eval_dir.name}", progress=False)

    with progress.step("compare") as skip:
        for family, specs in (("3d", study.models3d), ("2d", study.models2d)):
            if not specs:
                continue
            baseline = eval_dirs[specs[0].name]
            others = [eval_dirs[s.name] for s in specs[1:]]
            others += [eval_dirs[f"{s.name}-logit"] for s in specs if s.defense == "distillation"]
            run_compare(others, baseline, out / f"compare{family}",
                        table_eps=study.table_eps, title=f"{family.upper()}-UNet")
    with progress.step("report"):
        report = write_report(out, preset, study, prepared)
    return report


def spec_config(study: Study, spec: ModelSpec, **overrides):
    """The training configuration of one model of the study."""
    from keras_advseg.training import TrainConfig

    return TrainConfig.from_preset(study.train_preset, spec.model, spec.defense, epochs=study.epochs,
                                   **dict(spec.options), **overrides)


def fine_tunes(study: Study, spec: ModelSpec) -> bool:
    """Whether ``spec`` starts from its family's trained no-defense model (``study.warm_start``).

    Adversarial training and noise augmentation do; distillation always trains its own
    teacher at T, as the paper does: a teacher trained at T = 1 (the no-defense model)
    gave soft labels that made the student no more robust than no defense.
    """
    return study.warm_start and spec.defense in ("adversarial", "noise")


def warm_start_options(study: Study, spec: ModelSpec, model_dirs: dict[str, Path]) -> dict:
    """``{"init": <the no-defense model>}`` when :func:`fine_tunes`, else ``{}``."""
    return {"init": str(model_dirs[f"{spec.model}-none"] / "model.keras")} if fine_tunes(study, spec) else {}


def training_lines(study: Study) -> list[str]:
    """One line per model: its epochs, and where a defense started (for the report)."""
    lines, longer = [], False
    for spec in study.models3d + study.models2d:
        config = spec_config(study, spec)
        baseline = spec_config(study, ModelSpec(spec.model, "none")).epochs
        total, how = config.epochs, f"{config.epochs} epochs"
        if spec.defense == "distillation":
            how += f" for the teacher and for the student, both at T = {config.temperature:g}"
        if fine_tunes(study, spec):
            total += baseline
            how += f", fine-tuning {spec.model}-none ({total} in all)"
        longer = longer or total > baseline
        lines.append(f"- {spec.name}: {how}.")
    if longer:
        lines.append("\nAs in the paper, which trains its defenses 400 epochs against 100, defenses here train "
                     "longer than the undefended network; part of their advantage may be that extra training.\n")
    return lines


def findings(out: Path, study: Study) -> list[tuple[str, bool | None, str]]:
    """The paper's directional findings, checked on our results: ``(claim, passed, evidence)``.

    Each finding is a pre-specified family of paired Wilcoxon tests, Bonferroni-corrected
    over that family's own comparisons (the tables correct over all of their cells).
    """
    from keras_advseg.statistics import ALPHA, load_results, mean_sd, paired_tests

    regions = ("wt", "tc", "et")
    base_name = study.models3d[0].name
    baseline = load_results(out / "evals" / base_name)
    base = baseline.summary
    clean = {r: base["clean"][f"dice_{r}"]["mean"] for r in regions}
    attacks = base["attacks"]
    results = []
    results.append(("(a) clean 3D-UNet Dice WT >= 0.80", clean["wt"] >= 0.80, f"WT {clean['wt']:.3f}"))

    def attack_mean(name, region):
        return attacks[name]["0.05"][f"dice_{region}"]["mean"]

    def series(result, attack, region, eps=0.05):
        return result.series(attack, eps, f"dice_{region}")

    names = {"fgsm": "FGSM", "ifgsm": "i-FGSM", "tifgsm": "targeted i-FGSM"}
    _, tests_b = paired_tests({(a, r): (series(baseline, "none", r, 0.0), series(baseline, a, r))
                               for a in names for r in regions})
    drops = {r: (clean[r] - attack_mean("fgsm", r)) / clean[r] if clean[r] else 0.0 for r in regions}
    significant = all(p <= ALPHA for p in tests_b.values())
    ifgsm_stronger = all(attack_mean("ifgsm", r) < attack_mean("fgsm", r) for r in regions)
    targeted_lowers = all(attack_mean("tifgsm", r) < clean[r] for r in regions)
    passed_b = all(d >= 0.25 for d in drops.values()) and ifgsm_stronger and targeted_lowers and significant
    worst = max(tests_b, key=tests_b.get)
    results.append(("(b) FGSM eps 0.05 lowers mean Dice by >= 25% in every region; i-FGSM lowers it more; "
                    "targeted i-FGSM lowers it; all p <= 0.05 corrected", passed_b,
                    "FGSM drops " + ", ".join(f"{r.upper()} {d:.1%}" for r, d in drops.items())
                    + f"; i-FGSM below FGSM everywhere: {ifgsm_stronger}; targeted below clean: {targeted_lowers}; "
                    f"all {len(tests_b)} comparisons with clean significant after Bonferroni over them: {significant} "
                    f"(largest corrected p {tests_b[worst]:.2g}, {names[worst[0]]} {worst[1].upper()})"))
    curve = base["iterations"].get("ifgsm", {})
    mean_curve = [sum(curve[f"dice_{r}"][k] for r in regions) / 3 for k in range(len(curve.get("dice_wt", [])))]
    monotone = all(b <= a + 1e-9 for a, b in zip(mean_curve, mean_curve[1:])) if mean_curve else None
    results.append(("(c) Dice falls monotonically with i-FGSM iterations", monotone,
                    "mean Dice per iteration " + ", ".join(f"{v:.3f}" for v in mean_curve)))
    defended = [spec for spec in study.models3d[1:] if spec.defense in ("distillation", "adversarial")]
    evaluated = {spec.name: load_results(out / "evals" / spec.name) for spec in defended}
    pairs_d = {(spec.name, r): (series(evaluated[spec.name], "fgsm", r), series(baseline, "fgsm", r))
               for spec in defended for r in regions}
    _, tests_d = paired_tests(pairs_d)
    for spec in defended:
        parts, beats = [], True
        for r in regions:
            mine, theirs = (mean_sd(s)[0] for s in pairs_d[(spec.name, r)])
            p = tests_d[(spec.name, r)]
            beats = beats and mine > theirs and p <= ALPHA
            parts.append(f"{r.upper()} {mine:.3f} vs {theirs:.3f} (p = {p:.2g})")
        results.append((f"(d) {spec.name} beats no defense at FGSM eps 0.05 in every region (p <= 0.05, Bonferroni "
                        f"over the {len(tests_d)} defense x region comparisons of this finding)", beats,
                        "; ".join(parts)))
    for spec in study.models3d:
        if spec.defense != "distillation":
            continue
        normal = load_results(out / "evals" / spec.name).summary["attacks"]["fgsm"]["0.05"]
        logit = load_results(out / "evals" / f"{spec.name}-logit").summary["attacks"]["fgsm"]["0.05"]
        parts = []
        for r in regions:
            gain = normal[f"dice_{r}"]["mean"] - attack_mean("fgsm", r)
            kept = logit[f"dice_{r}"]["mean"] - attack_mean("fgsm", r)
            if gain <= 0:
                parts.append(f"{r.upper()}: no gain over no defense at T=1 ({gain:+.3f})")
            elif kept <= 0:
                parts.append(f"{r.upper()}: gain {gain:+.3f} at T=1, {kept:+.3f} under the T={spec.temperature:g} "
                             "attack (all of the gain is gradient masking)")
            else:
                parts.append(f"{r.upper()}: gain {gain:+.3f} at T=1, {kept:+.3f} under the T={spec.temperature:g} "
                             f"attack ({(gain - kept) / gain:.0%} of the gain is gradient masking)")
        results.append((f"(e) logit-level attack on {spec.name}: how much of the gain is gradient masking", None,
                        "; ".join(parts)))
    return results


def write_report(out: Path, preset: str, study: Study, prepared) -> Path:
    """``report.md``: findings, our tables beside the paper's, figures."""
    lines = [f"# keras-advseg reproduction ({preset} preset)\n",
             f"Data: `{prepared.root}` ({len(prepared.train_ids)} training, {len(prepared.test_ids)} test subjects, "
             f"{study.shape}^3). Models: " + ", ".join(m.name for m in study.models3d + study.models2d) + ".\n",
             "## The paper's findings, checked\n"]
    checked = findings(out, study)
    for claim, passed, evidence in checked:
        verdict = {True: "**reproduced**", False: "**not reproduced**", None: "*measured*"}[passed]
        lines.append(f"- {claim}: {verdict}. {evidence}")
    if any(passed is False for _, passed, _ in checked):
        lines.append(f"\nWhat does not reproduce is reported as such. Likely reasons: the phantom is simpler than "
                     f"BraTS (one tumour, clean contrasts), the {preset} preset trains small networks briefly, and "
                     f"paired tests on {len(prepared.test_ids)} test subjects have limited power after Bonferroni "
                     "correction.\n")
    else:
        lines.append("\nEvery checked finding reproduces on this data.\n")
    lines.append("## How each model was trained\n")
    lines += training_lines(study)
    lines.append("## Ours: attacks and 3D-UNet defenses\n")
    lines.append((out / "compare3d" / "tables.md").read_text())
    if (out / "compare2d" / "tables.md").is_file():
        lines.append("\n## Ours: 2D-UNet\n")
        lines.append((out / "compare2d" / "tables.md").read_text())
    lines.append("\n## The paper's published values (BraTS 2017, 128^3)\n")
    lines.append("Table 1 (3D-UNet, eps 0.05): mean Dice TC / ET / WT, input PSNR / SSIM / RMSE\n")
    lines.append("| attack | TC | ET | WT | PSNR | SSIM | RMSE |\n|---|---|---|---|---|---|---|")
    for attack, values in paper_values.TABLE1.items():
        lines.append(f"| {attack} | " + " | ".join("-" if v is None else f"{v:g}" for v in values) + " |")
    for title, table in (("Table 2 (3D-UNet)", paper_values.TABLE2_3D), ("Table 3 (2D-UNet)", paper_values.TABLE3_2D)):
        lines.append(f"\n{title}, mean Dice under FGSM at eps 0 / 0.05 / 0.1 (selected rows)\n")
        lines.append("| region | model | eps 0 | eps 0.05 | eps 0.1 |\n|---|---|---|---|---|")
        for region, rows in table.items():
            for model, values in rows.items():
                lines.append(f"| {region.upper()} | {model} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    lines.append("\n## Figures\n")
    base = study.models3d[0].name
    for caption, path in (("Example attack (Fig. 2)", f"evals/{base}/fig_example.png"),
                          ("Dice and PSNR vs i-FGSM iterations (Fig. 3/4)", f"evals/{base}/fig_iterations.png"),
                          ("Dice vs FGSM eps, 3D-UNet models (Fig. 5/7)", "compare3d/fig_eps_overlay.png"),
                          ("Dice vs FGSM eps, 2D-UNet models (Fig. 6/8)", "compare2d/fig_eps_overlay.png")):
        if (out / path).is_file():
            lines.append(f"![{caption}]({path})\n")
    lines.append("\nAll runs are in one MLflow experiment: `mlflow ui --backend-store-uri <tracking store>`.\n")
    return write_text_atomic(out / "report.md", "\n".join(lines))


class _Progress:
    """Numbered steps with timings; finished steps are recorded and skipped on a re-run."""

    def __init__(self, plan: list[str], record: Path):
        self.plan, self.record = plan, record
        self.done = set(json.loads(record.read_text())) if record.is_file() else set()

    def step(self, name: str):
        progress = self

        class _Step:
            def __enter__(self):
                self.start = time.time()
                self.skip = name in progress.done and name not in ("prepare", "report")
                index = progress.plan.index(name) + 1
                state = "skipped (done before)" if self.skip else "running"
                click.echo(f"[{index}/{len(progress.plan)}] {name}: {state}", err=True)
                return self.skip

            def __exit__(self, kind, value, traceback):
                if kind is None:
                    progress.done.add(name)
                    write_text_atomic(progress.record, json.dumps(sorted(progress.done)))
                    if not self.skip:
                        click.echo(f"    done in {time.time() - self.start:.0f} s", err=True)
                return False

        return _Step()
