"""The replicated study: per-subject averages over seeds, the pooled findings beside the
per-seed verdicts, each defense's effect with its interval over seeds, and the options
and records of `advseg reproduce --seeds / --data-seed` (on fabricated evaluations)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from keras_advseg.cli import main, parse_seeds
from keras_advseg.config import REGIONS, STUDIES
from keras_advseg.errors import InputError
from keras_advseg.evaluation.results import (
    Evaluation,
    average_results,
    load_results,
    summarize,
)
from keras_advseg.evaluation.statistics import mean_ci, wilcoxon
from keras_advseg.io import FileFormatError, write_json_atomic, write_text_atomic
from keras_advseg.workflows.replication import (
    effect_rows,
    replicated_findings,
    write_replicated_report,
)
from keras_advseg.workflows.study import planned_steps
from keras_advseg.workflows.study_record import Progress, check_same_study, record_study

STUDY = STUDIES["smoke"]  # 3-D: none, distillation T20, adversarial 0.05, the control
SUBJECTS = [f"s{i:02d}" for i in range(12)]
ATTACKED = (
    ("fgsm", 0.05),
    ("fgsm", 0.1),
    ("ifgsm", 0.05),
    ("targeted-ifgsm", 0.05),
    ("worst", 0.05),
)


def write_evaluation(
    folder: Path, clean: np.ndarray, attacked: np.ndarray, curve=False, jitter=None, edit=None
) -> None:
    """An evaluation folder: clean Dice ``clean[subject]`` (every region), attacked Dice
    ``attacked[subject]`` under every attack (i-FGSM and the worst case a little lower).

    ``jitter`` (a NumPy generator) lowers each attacked value by up to 0.01 more, so that
    paired differences do not tie (SciPy's Wilcoxon falls back to a slow permutation test
    on ties in small samples). ``edit(rows) -> rows`` changes the rows before they are
    written."""
    rows, iterations = [], []

    def noise():
        return 0.0 if jitter is None else jitter.uniform(0, 0.01)

    for i, subject in enumerate(SUBJECTS):
        base = {"subject": subject, "steps": 1, "psnr": 40.0, "ssim": 0.9, "rmse": 0.01}
        rows.append(
            {**base, "attack": "none", "eps": 0.0, **{f"dice_{r}": clean[i] for r in REGIONS}}
        )
        for attack, eps in ATTACKED:
            lower = {"ifgsm": 0.05, "worst": 0.1}.get(attack, 0.0) + (eps - 0.05)
            value = float(np.clip(attacked[i] - lower - noise(), 0, 1))
            row = {**base, "attack": attack, "eps": eps, **{f"dice_{r}": value for r in REGIONS}}
            if attack == "worst":
                row["found_by"] = "segpgd"
            rows.append(row)
        if curve:
            for k in range(1, 4):
                value = float(np.clip(attacked[i] - 0.02 * k - noise(), 0, 1))
                iterations.append(
                    {
                        "subject": subject,
                        "attack": "ifgsm",
                        "iteration": k,
                        "psnr": 40.0,
                        "ssim": 0.9,
                        "rmse": 0.01,
                        **{f"dice_{r}": value for r in REGIONS},
                    }
                )
    if edit is not None:
        rows = edit(rows)
    evaluation = Evaluation(rows, iterations)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "per_subject.csv", evaluation.rows_csv())
    write_json_atomic(folder / "summary.json", summarize(evaluation).to_json())


def write_seed(folder: Path, seed: int, gains: dict[str, float]) -> None:
    """One seed's evaluations: the baseline, and each model ``gains[name]`` above it under
    attack (plus a little noise of this seed)."""
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.8, 0.9, len(SUBJECTS))
    attacked = rng.uniform(0.3, 0.5, len(SUBJECTS))
    write_evaluation(folder / "evals" / STUDY.models3d[0].name, clean, attacked, curve=True)
    for spec in STUDY.models3d[1:]:
        gain = gains[spec.name] + rng.normal(0, 0.01, len(SUBJECTS))
        write_evaluation(folder / "evals" / spec.name, clean, attacked + gain)
        if spec.defense == "distillation":
            write_evaluation(folder / "evals" / f"{spec.name}-logit", clean, attacked)


@pytest.fixture
def replicated(tmp_path):
    """Three seeds: adversarial training gains 0.2 in every seed; distillation gains 0.3
    in seed 0 and loses 0.3 in seeds 1 and 2; the control gains 0.05."""
    seed_dirs = {}
    for seed in (0, 1, 2):
        seed_dirs[seed] = tmp_path / "seeds" / str(seed)
        write_seed(
            seed_dirs[seed],
            seed,
            {
                "unet3d-adversarial-eps0.05": 0.2,
                "unet3d-distillation-T20": 0.3 if seed == 0 else -0.3,
                "unet3d-none-control": 0.05,
            },
        )
    return tmp_path, seed_dirs


def test_average_results_averages_each_subject_and_refuses_other_subjects(replicated):
    _, seed_dirs = replicated
    name = "unet3d-adversarial-eps0.05"
    results = [load_results(d / "evals" / name) for d in seed_dirs.values()]
    pooled = average_results(results)
    for subject in SUBJECTS:
        expected = np.mean([r.series("fgsm", 0.05, "dice_tc")[subject] for r in results])
        assert pooled.series("fgsm", 0.05, "dice_tc")[subject] == pytest.approx(expected)
    expected = np.mean([r.summary.mean("worst", 0.05, "dice_et") for r in results])
    assert pooled.summary.mean("worst", 0.05, "dice_et") == pytest.approx(expected)
    assert len(pooled.found_by[("worst", 0.05)]) == 3 * len(SUBJECTS)  # every seed's winner
    assert average_results(results[:1]) is results[0]
    other = results[1]
    other.values[("fgsm", 0.05)]["someone_else"] = other.values[("fgsm", 0.05)].pop("s00")
    with pytest.raises(FileFormatError, match="differ from"):
        average_results(results)


def test_mean_ci_is_the_student_t_interval():
    values = [0.1, 0.25, 0.18, 0.3]
    mean, low, high = mean_ci(values)
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected)
    assert mean_ci([0.4]) == (0.4, None, None)


def test_pooled_findings_hold_only_where_the_pooled_test_does(replicated):
    _, seed_dirs = replicated
    checked = {
        item["claim"].split(" beats")[0]: item for item in replicated_findings(STUDY, seed_dirs)
    }
    adversarial = checked["(d) unet3d-adversarial-eps0.05"]
    assert adversarial["pooled"][0] is True
    assert adversarial["seeds"] == {0: True, 1: True, 2: True}
    distilled = checked["(d) unet3d-distillation-T20"]
    assert distilled["pooled"][0] is False  # one seed holds, the pooled test does not
    assert distilled["seeds"] == {0: True, 1: False, 2: False}
    # against the equal-budget control (+0.05), adversarial training's +0.2 still holds
    assert checked["(d-control) unet3d-adversarial-eps0.05"]["pooled"][0] is True
    assert checked["(f-control) unet3d-adversarial-eps0.05"]["seeds"][1] is True
    # the pooled p is the Wilcoxon test on per-subject Dice averaged over the seeds
    name = "unet3d-adversarial-eps0.05"
    mine = average_results([load_results(d / "evals" / name) for d in seed_dirs.values()])
    base = average_results([load_results(d / "evals" / "unet3d-none") for d in seed_dirs.values()])
    _, p = wilcoxon(mine.series("fgsm", 0.05, "dice_wt"), base.series("fgsm", 0.05, "dice_wt"))
    family = 2 * 3  # (d): two defenses x three regions, Bonferroni
    assert f"(p = {min(1, p * family):.2g})" in adversarial["pooled"][1]


def test_effects_over_seeds_and_the_replicated_report(replicated):
    out, seed_dirs = replicated
    rows = effect_rows(STUDY, seed_dirs)
    row = next(
        r
        for r in rows
        if (r["model"], r["reference"], r["attack"], r["region"])
        == ("unet3d-adversarial-eps0.05", "unet3d-none", "fgsm", "wt")
    )
    per_seed = []
    for folder in seed_dirs.values():
        a = load_results(folder / "evals" / "unet3d-adversarial-eps0.05")
        b = load_results(folder / "evals" / "unet3d-none")
        x, y = a.series("fgsm", 0.05, "dice_wt"), b.series("fgsm", 0.05, "dice_wt")
        per_seed.append(np.mean([x[s] - y[s] for s in SUBJECTS]))
    assert list(row["per_seed"].values()) == pytest.approx(per_seed)
    assert {(r["model"], r["reference"]) for r in rows} >= {
        ("unet3d-none-control", "unet3d-none"),
        ("unet3d-distillation-T20", "unet3d-none-control"),
    }
    prepared = SimpleNamespace(root=out / "prepared", train_ids=["a"] * 30, test_ids=SUBJECTS)
    timings = {"data": 60.0, "seed 0: train unet3d-none": 120.0, "seed 1: compare": None}
    report = write_replicated_report(
        out, "smoke", STUDY, seed_dirs, prepared, "sqlite:///x.db", timings
    ).read_text()
    assert "3 training seeds: 0, 1, 2" in report
    line = next(x for x in report.splitlines() if x.startswith("| (d) unet3d-distillation-T20"))
    assert "**not reproduced** | holds | fails | fails | 1/3 |" in line
    line = next(x for x in report.splitlines() if x.startswith("| (d) unet3d-adversarial"))
    assert "**reproduced** | holds | holds | holds | 3/3 |" in line
    mean, low, high = mean_ci(per_seed)
    assert f"+{mean:.3f} [{low:+.3f}, {high:+.3f}] 3/3" in report
    assert (
        "Most Dice kept under the worst case at eps 0.05 (mean of WT, TC, ET): **unet3d-adversarial-eps0.05**"
        in report
    )
    assert "Wall time of the steps: 3.0 min in all, 1.0 min a seed" in report
    assert "seeds/1/report.md" in report and "TF_ENABLE_ONEDNN_OPTS=" in report


def test_seed_options_and_the_study_record(tmp_path):
    assert parse_seeds("0,1,2,3,4") == (0, 1, 2, 3, 4) == parse_seeds("0-4")
    assert parse_seeds("5") == (5,) and parse_seeds("0-2,7") == (0, 1, 2, 7)
    for bad in ("", "a", "-1", "1,1", "0-2,2", "3-1", "0-1000"):
        with pytest.raises(InputError, match="--seeds"):
            parse_seeds(bad)
    result = CliRunner().invoke(
        main, ["reproduce", "--preset", "smoke", "--out", str(tmp_path / "s"), "--seeds", "1,x"]
    )
    assert result.exit_code == 2 and "--seeds: expected distinct integers" in result.output
    assert not (tmp_path / "s").exists()  # nothing written for a bad option
    record_study(tmp_path, check_same_study(tmp_path, "smoke", None, 0))
    assert json.loads((tmp_path / "study.json").read_text())["data_seed"] == 0
    assert check_same_study(tmp_path, "smoke", None, 0) is None  # the same study continues
    with pytest.raises(InputError, match="started with --data-seed 0; received 1"):
        check_same_study(tmp_path, "smoke", None, 1)
    with pytest.raises(InputError, match="--preset smoke"):
        check_same_study(tmp_path, "quick", None, 0)
    # a study of an earlier version (its steps mean something else) is not resumed
    record = json.loads((tmp_path / "study.json").read_text())
    del record["definitions"]
    (tmp_path / "study.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="another keras-advseg \\(definitions 1, this one 2"):
        check_same_study(tmp_path, "smoke", None, 0)


def test_progress_records_seconds_and_reads_the_older_list(tmp_path):
    record = tmp_path / "progress.json"
    record.write_text(json.dumps(["data", "prepare"]))  # an older version's record
    names = [s.name for s in planned_steps(STUDY)] + ["report"]
    plan = ["data", "prepare"] + [f"seed 3: {s}" for s in names] + ["report"]
    progress = Progress(plan, record)
    assert progress.is_done("data")
    for name in ("seed 3: train unet3d-none", "seed 3: report"):
        assert not progress.is_done(name)  # reports are always rewritten
        progress.end(name, progress.begin(name))
    done = json.loads(record.read_text())
    assert done["data"] is None and done["seed 3: train unet3d-none"] >= 0
    assert list(progress.timings()) == [
        "data",
        "prepare",
        "seed 3: train unet3d-none",
        "seed 3: report",
    ]
    # the study's wall clock is kept beside the steps (not one of them) and adds up over runs
    assert done["(elapsed)"] >= 0
    record.write_text(json.dumps({**done, "(elapsed)": 100.0}))
    again = Progress(plan, record)
    assert 100 <= again.elapsed() < 160 and "(elapsed)" not in again.timings()
    assert "seed 3: audit unet3d-none-control" not in plan  # the control is not audited
    record.write_text(json.dumps({"data": "soon"}))
    with pytest.raises(FileFormatError, match="progress"):
        Progress(plan, record)


def test_the_control_trains_as_long_as_the_longest_defense():
    from keras_advseg.workflows.study import fine_tunes, spec_config

    quick = STUDIES["quick"]
    control = quick.control3d
    assert control.name == "unet3d-none-control" and control not in quick.defenses3d
    base = spec_config(quick, quick.models3d[0]).epochs
    longest = max(
        spec_config(quick, s).epochs + (base if fine_tunes(quick, s) else 0)
        for s in quick.defenses3d
        if s.defense != "distillation"
    )
    assert fine_tunes(quick, control)
    assert base + spec_config(quick, control).epochs == longest == 33
    assert {s.defense for s in quick.defenses3d} == {
        "distillation",
        "adversarial",
        "fast",
        "gaussian",
    }
    assert spec_config(replace(quick), control).defense == "none"


@pytest.mark.slow
def test_adding_seeds_reuses_finished_ones_and_seeds_every_step(
    tmp_path, brats2021, monkeypatch, new_store
):
    """The study's orchestration, with training, evaluation and the audit replaced by
    stand-ins that record their calls (the smoke study test runs the real steps)."""
    import keras_advseg.workflows.audit as audit_module
    import keras_advseg.workflows.card as card_module
    import keras_advseg.workflows.certify as certify_module
    import keras_advseg.workflows.corruptions as corruptions_module
    import keras_advseg.workflows.evaluate as evaluate_module
    import keras_advseg.workflows.leaderboard as leaderboard_module
    import keras_advseg.workflows.train as train_module
    from keras_advseg.workflows.reproduce import reproduce

    calls = []

    def train(config, prepared, out, **kwargs):
        calls.append(("train", Path(out), config.seed, config.init, kwargs["run_name"]))
        Path(out).mkdir(parents=True)
        (Path(out) / "model.keras").write_bytes(b"stand-in")

    def run_evaluation(model_ref, data, out, config, **kwargs):
        calls.append(("evaluate", Path(out), config.seed, None, kwargs["run_name"]))
        rng = np.random.default_rng([config.seed, len(Path(out).name)])
        clean = rng.uniform(0.8, 0.9, len(SUBJECTS))
        attacked = clean - rng.uniform(0.3, 0.5, len(SUBJECTS))
        write_evaluation(Path(out), clean, attacked, curve=config.iterations_sweep, jitter=rng)

    def run_audit(model_ref, data, out, config, **kwargs):
        calls.append(("audit", Path(out), config.seed, kwargs["reference_ref"], kwargs["run_name"]))

    def run_corruption_evaluation(model_ref, data, out, **kwargs):
        calls.append(
            ("corruptions", Path(out), int(kwargs["run_name"][-1]), None, kwargs["run_name"])
        )

    def run_certification(model_ref, data, out, **kwargs):
        calls.append(("certify", Path(out), kwargs["seed"], None, kwargs["run_name"]))

    def write_study_card(out, folders, plan, model_path, **kwargs):
        calls.append(("card", Path(out), kwargs["seed"], kwargs["reference_ref"], plan.name))
        assert set(folders) == {"adversarial", "corruptions", "certified", "audit"}

    def run_leaderboard(card_dirs, out):
        calls.append(("leaderboard", Path(out), None, None, [Path(d).name for d in card_dirs]))

    monkeypatch.setattr(card_module, "write_study_card", write_study_card)
    monkeypatch.setattr(leaderboard_module, "run_leaderboard", run_leaderboard)
    monkeypatch.setattr(train_module, "train", train)
    monkeypatch.setattr(evaluate_module, "run_evaluation", run_evaluation)
    monkeypatch.setattr(audit_module, "run_audit", run_audit)
    monkeypatch.setattr(corruptions_module, "run_corruption_evaluation", run_corruption_evaluation)
    monkeypatch.setattr(certify_module, "run_certification", run_certification)
    out = tmp_path / "study"
    options = dict(data=brats2021, tracking_uri=new_store(tmp_path))
    reproduce("smoke", out, seeds=(0,), **options)
    first = list(calls)
    models = STUDY.models3d + STUDY.models2d
    assert [c for c in first if c[0] == "train"]
    assert all(c[2] == 0 for c in first if c[0] != "leaderboard")
    calls.clear()
    report = reproduce("smoke", out, seeds=(0, 1), **options).read_text()
    # seed 0 was not trained, evaluated, audited or carded again
    assert {c[2] for c in calls if c[0] != "leaderboard"} == {1}
    trained = {c[1].name: c for c in calls if c[0] == "train"}
    assert set(trained) == {s.name for s in models}
    seed1 = out / "seeds" / "1"
    assert trained["unet3d-none-control"][3] == str(
        seed1 / "models" / "unet3d-none" / "model.keras"
    )
    assert trained["unet3d-distillation-T20"][3] is None  # distillation trains from scratch
    assert all(
        c[1].is_relative_to(seed1) and c[4].endswith("-seed1")
        for c in calls
        if c[0] not in ("card", "leaderboard")
    )
    # every 3-D model but the control scored under the corruptions, certified and carded, at
    # seed 1 only, and one leaderboard of those cards
    carded = {s.name for s in STUDY.models3d if not s.control}
    for step in ("corruptions", "certify", "card"):
        assert {c[1].name for c in calls if c[0] == step} == carded
    assert {c[4] for c in calls if c[0] == "card"} == {"study-smoke"}
    assert [set(c[4]) for c in calls if c[0] == "leaderboard"] == [carded]
    audited = {c[1].name: c[3] for c in calls if c[0] == "audit"}
    assert set(audited) == {s.name for s in STUDY.models3d if not s.control}
    assert audited["unet3d-adversarial-eps0.05"] == str(
        seed1 / "models" / "unet3d-none" / "model.keras"
    )
    assert "(smoke preset, 2 training seeds: 0, 1)" in report
    assert (
        (seed1 / "report.md")
        .read_text()
        .startswith("# keras-advseg reproduction (smoke preset, training seed 1)")
    )
    # the same split for every seed: prepared once, at the data seed
    prepared = json.loads((out / "prepared" / "prepared.json").read_text())
    assert json.loads((out / "study.json").read_text())["data_seed"] == 0
    assert prepared["split"]["test"]
    with pytest.raises(InputError, match="--data-seed"):
        reproduce("smoke", out, seeds=(2,), data_seed=3, **options)
    assert not (out / "seeds" / "2").exists()


def test_the_seed_report_says_what_one_seed_shows_and_flags_a_failed_training(tmp_path):
    from keras_advseg.workflows.report import write_report

    folder = tmp_path / "seeds" / "0"
    write_seed(
        folder,
        0,
        {
            "unet3d-adversarial-eps0.05": 0.2,
            "unet3d-distillation-T20": 0.0,
            "unet3d-none-control": 0.05,
        },
    )
    # distillation learned no tumour core: clean Dice 0 on 10 of the 12 subjects
    clean = np.full(len(SUBJECTS), 0.85)
    clean[:10] = 0.0
    write_evaluation(folder / "evals" / "unet3d-distillation-T20", clean, clean * 0.5)
    for name in ("compare3d", "compare2d"):
        (folder / name).mkdir()
        (folder / name / "tables.md").write_text("| table |\n")
    prepared = SimpleNamespace(root=tmp_path / "prepared", train_ids=["a"] * 30, test_ids=SUBJECTS)
    report = write_report(folder, "smoke", STUDY, prepared, "sqlite:///x.db", seed=0).read_text()
    assert "**One training seed.**" in report.splitlines()[2]
    assert (
        "**unet3d-distillation-T20 failed to learn tumour core**: clean Dice TC is 0 on 10 of "
        "12 test subjects" in report
    )
    assert "unet3d-adversarial-eps0.05 failed" not in report
    # the defense findings' clause is said once, each defense is one table row
    assert report.count("each defense beats no defense at FGSM eps 0.05 in every region") == 1
    assert "| (d) unet3d-adversarial-eps0.05 | **reproduced** |" in report
    # the paper's Table 1 in our region order, its RMSE's units said
    assert "| attack | WT | TC | ET | PSNR | SSIM | RMSE |" in report
    assert "| FGSM | 0.549 | 0.561 | 0.37 |" in report
    assert "the two RMSE columns cannot be compared" in report


def test_finding_b_and_table_1_test_one_family(tmp_path):
    """Targeted i-FGSM raises WT for one subject (the 5th smallest change) and lowers it for the
    other 11: the exact two-sided p is 2 x 10 / 2^12 = 0.00488, 0.0586 over Table 1's 12
    comparisons (four attacks x three regions) and 0.0439 over the 9 of (b)'s three attacks.
    (b) uses Table 1's family, so it agrees with Table 1's missing asterisk."""
    from keras_advseg.evaluation.statistics import attack_table
    from keras_advseg.workflows.report import findings, study_loader

    folder = tmp_path / "seeds" / "0"
    write_seed(
        folder,
        0,
        {
            "unet3d-adversarial-eps0.05": 0.2,
            "unet3d-distillation-T20": 0.1,
            "unet3d-none-control": 0.05,
        },
    )
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.8, 0.9, len(SUBJECTS))
    change = -0.01 * np.arange(1, 13)
    change[4] = 0.05  # rank 5, raised
    targeted_wt = dict(zip(SUBJECTS, clean + change))

    def edit(rows):
        for row in rows:
            if row["attack"] == "targeted-ifgsm":
                row["dice_wt"] = float(targeted_wt[row["subject"]])
        pgd = [dict(r, attack="pgd-dice") for r in rows if r["attack"] == "ifgsm"]
        return rows + pgd

    write_evaluation(
        folder / "evals" / "unet3d-none",
        clean,
        rng.uniform(0.3, 0.5, len(SUBJECTS)),
        curve=True,
        jitter=rng,
        edit=edit,
    )
    load = study_loader(folder)
    baseline = load("unet3d-none")
    x = [baseline.series("none", 0.0, "dice_wt")[s] for s in SUBJECTS]
    y = [targeted_wt[s] for s in SUBJECTS]
    raw = stats.wilcoxon(x, y).pvalue
    assert raw == pytest.approx(20 / 4096)
    rows, m = attack_table(baseline, 0.05)
    assert m == 12
    targeted = next(r for r in rows if r["attack"] == "targeted i-FGSM")
    assert targeted["p_wt_corrected"] == f"{12 * raw:.4g}" and "*" not in targeted["dice_wt"]
    assert all("*" in r["dice_tc"] for r in rows[1:])  # every other cell is significant
    (b,) = [f for f in findings(load, STUDY) if f[0].startswith("(b)")]
    evidence = b[2]
    assert "significant after Bonferroni over Table 1's 12" in evidence
    assert "the p-values of its asterisks): False" in evidence
    assert f"largest corrected p {12 * raw:.2g}, targeted i-FGSM WT" in evidence
    assert b[1] is False
