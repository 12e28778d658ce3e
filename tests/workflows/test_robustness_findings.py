"""Findings (g) and (h) on hand-made results: what they test, and that they can fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from keras_advseg.config import STUDIES
from keras_advseg.evaluation.results import EvalResults
from keras_advseg.workflows.report import (
    CERTIFIED,
    CORRUPTED,
    certified_findings,
    corruption_findings,
    study_loader,
)

QUICK = STUDIES["quick"]
SUBJECTS = [f"s{i}" for i in range(12)]


def result(name, key, means, seed=0):
    rng = np.random.default_rng(seed)
    values = {
        key: {
            s: {
                f"dice_{r}": float(np.clip(means + rng.normal(0, 0.01), 0, 1))
                for r in ("wt", "tc", "et")
            }
            for s in SUBJECTS
        }
    }
    return EvalResults(name, Path(name), values, None)


def test_finding_h_compares_certified_dice_of_the_gaussian_model_with_no_defense():
    gaussian = next(s for s in QUICK.models3d if s.defense == "gaussian")
    assert gaussian.name == "unet3d-gaussian-sigma0.5"
    baseline = result("unet3d-none", (CERTIFIED, 0.5), 0.3)
    better = {gaussian.name: result(gaussian.name, (CERTIFIED, 0.5), 0.6, seed=1)}
    ((claim, passed, evidence),) = certified_findings(better.__getitem__, QUICK, baseline)
    assert claim == "(h) unet3d-gaussian-sigma0.5 at sigma 0.5" and passed is True
    assert evidence.startswith("WT 0.5") and "vs 0.2" in evidence
    worse = {gaussian.name: result(gaussian.name, (CERTIFIED, 0.5), 0.1, seed=1)}
    ((_, passed, _),) = certified_findings(worse.__getitem__, QUICK, baseline)
    assert passed is False
    missing = {gaussian.name: result(gaussian.name, ("none", 0.0), 0.5)}
    ((_, passed, evidence),) = certified_findings(missing.__getitem__, QUICK, baseline)
    assert passed is None and "not measured" in evidence


def test_finding_g_holds_unless_a_defense_loses_dice_under_corruptions():
    baseline = result("unet3d-none", (CORRUPTED, 0.0), 0.5)
    names = [s.name for s in QUICK.defenses3d if s.defense in ("adversarial", "fast")]
    assert names == ["unet3d-adversarial-eps0.05", "unet3d-fast-eps0.05"]
    same = {n: result(n, (CORRUPTED, 0.0), 0.5, seed=2) for n in names}
    checked = corruption_findings(same.__getitem__, QUICK, baseline)
    assert [c[0] for c in checked] == [f"(g) {n}" for n in names]
    assert all(passed for _, passed, _ in checked)
    losing = dict(same, **{names[0]: result(names[0], (CORRUPTED, 0.0), 0.2, seed=3)})
    verdicts = {c: p for c, p, _ in corruption_findings(losing.__getitem__, QUICK, baseline)}
    assert verdicts == {f"(g) {names[0]}": False, f"(g) {names[1]}": True}


def test_the_loader_reads_corruption_and_certification_tables_and_refuses_bad_ones(tmp_path):
    from keras_advseg.io import FileFormatError

    (tmp_path / "evals" / "m").mkdir(parents=True)
    (tmp_path / "evals" / "m" / "per_subject.csv").write_text(
        "subject,attack,eps,steps,dice_wt,dice_tc,dice_et,psnr,ssim,rmse\n"
        "a,none,0,0,0.9,0.8,0.7,,,\n"
    )
    (tmp_path / "corruptions" / "m").mkdir(parents=True)
    (tmp_path / "corruptions" / "m" / "corruptions.csv").write_text(
        "subject,corruption,severity,dice_wt,dice_tc,dice_et\n"
        "a,none,0,0.9,0.8,0.7\na,motion,3,0.5,0.4,0.3\na,blur,3,0.7,0.6,0.5\n"
    )
    (tmp_path / "certify" / "m").mkdir(parents=True)
    header = (
        "subject,sigma,radius,radius_abs,linf,certified_dice_wt,certified_dice_tc,"
        "certified_dice_et,smoothed_dice_wt,smoothed_dice_tc,smoothed_dice_et,abstain_rate,"
        "abstain_rate_brain\n"
    )
    (tmp_path / "certify" / "m" / "certified.csv").write_text(
        header + "a,0.25,0.17,1.2,0.001,0.4,0.3,0.2,0.8,0.7,0.6,0.01,0.05\n"
    )
    loaded = study_loader(tmp_path)("m")
    assert loaded.series(CORRUPTED, 0.0, "dice_wt") == {"a": pytest.approx(0.6)}
    assert loaded.series(CERTIFIED, 0.25, "dice_et") == {"a": 0.2}
    (tmp_path / "certify" / "m" / "certified.csv").write_text(
        header + "a,0.25,0.17,1.2,0.001,4,0.3,0.2,0.8,0.7,0.6,0.01,0.05\n"
    )
    with pytest.raises(FileFormatError, match="certified_dice_wt 4.0 outside"):
        study_loader(tmp_path)("m")


def series_result(name, key, values: dict[str, dict[str, float]]):
    """Results with ``values[region][subject]`` under ``key``."""
    subjects = sorted(next(iter(values.values())))
    rows = {s: {f"dice_{r}": float(values[r][s]) for r in ("wt", "tc", "et")} for s in subjects}
    return EvalResults(name, Path(name), {key: rows}, None)


def test_finding_g_is_a_non_inferiority_test_that_a_true_drop_of_005_rarely_passes():
    """12 subjects, each defense 0.05 Dice below the undefended network in every region with
    per-subject noise 0.1: the old reading ("no significant drop") passes most of these
    draws; the non-inferiority test at the 0.02 margin must pass almost none."""
    from keras_advseg.workflows.report import NONINFERIORITY_MARGIN

    assert NONINFERIORITY_MARGIN == 0.02
    names = [s.name for s in QUICK.defenses3d if s.defense in ("adversarial", "fast")]
    m = len(names) * 3
    rng = np.random.default_rng(5)
    passed = old_reading = draws = 0
    for _ in range(60):
        base = {r: dict(zip(SUBJECTS, rng.uniform(0.4, 0.8, 12))) for r in ("wt", "tc", "et")}
        baseline = series_result("unet3d-none", (CORRUPTED, 0.0), base)
        models = {}
        for n in names:
            drop = {r: {s: base[r][s] - 0.05 + rng.normal(0, 0.1) for s in SUBJECTS} for r in base}
            models[n] = series_result(n, (CORRUPTED, 0.0), drop)
            # the old reading, computed with scipy: no region lower at a corrected p <= 0.05
            lower = False
            for r in base:
                x = [drop[r][s] for s in SUBJECTS]
                y = [base[r][s] for s in SUBJECTS]
                p = min(1, m * stats.wilcoxon(x, y).pvalue)
                lower = lower or (np.mean(x) < np.mean(y) and p <= 0.05)
            old_reading += not lower
            draws += 1
        for _, verdict, _ in corruption_findings(models.__getitem__, QUICK, baseline):
            passed += verdict
    assert old_reading / draws > 0.5  # the simulation is one the old reading gets wrong
    assert passed / draws <= 0.05


def test_finding_g_reports_each_shift_with_its_interval_and_the_one_sided_p():
    names = [s.name for s in QUICK.defenses3d if s.defense in ("adversarial", "fast")]
    rng = np.random.default_rng(6)
    base = {r: dict(zip(SUBJECTS, rng.uniform(0.5, 0.7, 12))) for r in ("wt", "tc", "et")}
    baseline = series_result("unet3d-none", (CORRUPTED, 0.0), base)
    shifts = {names[0]: 0.0, names[1]: -0.03}  # the second loses more than the margin
    models = {
        n: series_result(
            n,
            (CORRUPTED, 0.0),
            {r: {s: base[r][s] + shift + rng.normal(0, 0.005) for s in SUBJECTS} for r in base},
        )
        for n, shift in shifts.items()
    }
    checked = corruption_findings(models.__getitem__, QUICK, baseline)
    assert [passed for _, passed, _ in checked] == [True, False]
    claim, _, evidence = checked[0]
    mine = models[names[0]].series(CORRUPTED, 0.0, "dice_wt")
    theirs = base["wt"]
    d = np.array([mine[s] - theirs[s] for s in SUBJECTS])
    p = min(1, 6 * stats.wilcoxon(d + 0.02, alternative="greater").pvalue)
    walsh = [(d[i] + d[j]) / 2 for i in range(12) for j in range(i, 12)]
    assert evidence.startswith(f"WT {np.mean(list(mine.values())):.3f} vs ")
    assert f"shift {np.median(walsh):+.3f} [" in evidence.split(";")[0]
    assert f"(non-inferiority p = {p:.2g})" in evidence.split(";")[0]
    from keras_advseg.workflows.report import FAMILIES

    assert "margin of 0.02 Dice" in FAMILIES["(g)"] and "d + 0.02 > 0" in FAMILIES["(g)"]
    assert "over the family's 6 defense x region comparisons" in FAMILIES["(g)"]


def test_finding_h_takes_its_direction_from_the_paired_shift_its_test_tests():
    """19 of 20 subjects certify less with Gaussian training, one far more: the mean is higher,
    the signed-rank test significant, but what it finds is a lower location, not a gain."""
    gaussian = next(s for s in QUICK.models3d if s.defense == "gaussian")
    subjects = [f"s{i:02d}" for i in range(20)]
    rng = np.random.default_rng(7)
    theirs = {r: {s: 0.4 + 0.01 * i for i, s in enumerate(subjects)} for r in ("wt", "tc", "et")}
    mine = {
        r: {
            s: theirs[r][s] + (0.5 if i == 0 else -0.02 - rng.uniform(0, 0.01))
            for i, s in enumerate(subjects)
        }
        for r in theirs
    }
    d = np.array([mine["wt"][s] - theirs["wt"][s] for s in subjects])
    walsh = [(d[i] + d[j]) / 2 for i in range(20) for j in range(i, 20)]
    assert d.mean() > 0 and np.median(walsh) < 0  # the two directions disagree
    assert 3 * stats.wilcoxon(d).pvalue <= 0.05  # and the test is significant
    baseline = series_result("unet3d-none", (CERTIFIED, 0.5), theirs)
    models = {gaussian.name: series_result(gaussian.name, (CERTIFIED, 0.5), mine)}
    ((_, passed, evidence),) = certified_findings(models.__getitem__, QUICK, baseline)
    assert passed is False
    assert f"shift {np.median(walsh):+.3f} [" in evidence


def test_finding_h_at_8_subjects_can_reach_significance_and_says_when_it_cannot():
    """Certified on 8 subjects, the family of 3 regions reaches p = 3 x 2/2^8 = 0.023; on 5
    subjects no outcome can reach 0.05, and the evidence says so."""
    gaussian = next(s for s in QUICK.models3d if s.defense == "gaussian")
    for n, reaches in ((8, True), (5, False)):
        subjects = [f"s{i}" for i in range(n)]
        theirs = {r: {s: 0.3 for s in subjects} for r in ("wt", "tc", "et")}
        mine = {r: {s: 0.5 + 0.01 * i for i, s in enumerate(subjects)} for r in theirs}
        baseline = series_result("unet3d-none", (CERTIFIED, 0.5), theirs)
        models = {gaussian.name: series_result(gaussian.name, (CERTIFIED, 0.5), mine)}
        ((_, passed, evidence),) = certified_findings(models.__getitem__, QUICK, baseline)
        p = min(1, 3 * stats.wilcoxon([mine["wt"][s] - 0.3 for s in subjects]).pvalue)
        assert f"(p = {p:.2g})" in evidence
        assert passed is reaches
        note = f"n = {n} cannot reach p <= 0.05 after Bonferroni over 3"
        assert (note in evidence) is not reaches
