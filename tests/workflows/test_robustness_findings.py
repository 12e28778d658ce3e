"""Findings (g) and (h) on hand-made results: what they test, and that they can fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keras_advseg.config import STUDIES
from keras_advseg.evaluation.results import EvalResults
from keras_advseg.workflows.report import (
    CERTIFIED,
    CORRUPTED,
    artifact_findings,
    certified_findings,
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
    assert gaussian.name == "unet3d-gaussian-sigma0.25"
    baseline = result("unet3d-none", (CERTIFIED, 0.25), 0.3)
    better = {gaussian.name: result(gaussian.name, (CERTIFIED, 0.25), 0.6, seed=1)}
    ((claim, passed, evidence),) = certified_findings(better.__getitem__, QUICK, baseline)
    assert claim == "(h) unet3d-gaussian-sigma0.25 at sigma 0.25" and passed is True
    assert evidence.startswith("WT 0.5") and "vs 0.2" in evidence
    worse = {gaussian.name: result(gaussian.name, (CERTIFIED, 0.25), 0.1, seed=1)}
    ((_, passed, _),) = certified_findings(worse.__getitem__, QUICK, baseline)
    assert passed is False
    missing = {gaussian.name: result(gaussian.name, ("none", 0.0), 0.5)}
    ((_, passed, evidence),) = certified_findings(missing.__getitem__, QUICK, baseline)
    assert passed is None and "not measured" in evidence


def test_finding_g_holds_unless_a_defense_loses_dice_under_artifacts():
    baseline = result("unet3d-none", (CORRUPTED, 0.0), 0.5)
    names = [s.name for s in QUICK.defenses3d if s.defense in ("adversarial", "fast")]
    assert names == ["unet3d-adversarial-eps0.05", "unet3d-fast-eps0.05"]
    same = {n: result(n, (CORRUPTED, 0.0), 0.5, seed=2) for n in names}
    checked = artifact_findings(same.__getitem__, QUICK, baseline)
    assert [c[0] for c in checked] == [f"(g) {n}" for n in names]
    assert all(passed for _, passed, _ in checked)
    losing = dict(same, **{names[0]: result(names[0], (CORRUPTED, 0.0), 0.2, seed=3)})
    verdicts = {c: p for c, p, _ in artifact_findings(losing.__getitem__, QUICK, baseline)}
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
