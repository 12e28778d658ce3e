"""BraTS 2023 lesion-wise Dice and HD95, on cases computed by hand.

Cubes are used because their marching-cubes surfaces can be counted: an n-voxel cube's
surface (at 1 mm) is 6 (n-1)^2 face elements of area 1, 12 (n-1) edge elements of area
sqrt(2)/2 and 8 corner elements of area sqrt(3)/8, on the grid of voxel corners.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_advseg.errors import InputError
from keras_advseg.lesionwise import (
    LESION_COUNTS,
    LESION_METRICS,
    MISSED_HD95,
    lesion_wise,
    surface_hd95,
    surfel_areas,
)


def cube(labels, corner, size, value=4):
    """Paints a ``size``^3 cube of ``value`` with its lowest corner at ``corner``."""
    x, y, z = corner
    labels[x : x + size, y : y + size, z : z + size] = value
    return labels


def volume(shape=(24, 24, 24)):
    return np.zeros(shape, np.uint8)


def test_one_lesion_found_exactly_and_whole_components_scored():
    reference = cube(volume(), (2, 2, 2), 4)  # 64 voxels > 50 mm^3, in WT, TC and ET
    scores = lesion_wise(reference, reference.copy())
    for region in ("wt", "tc", "et"):
        assert scores[f"lesion_dice_{region}"] == 1.0
        assert scores[f"lesion_hd95_{region}"] == 0.0
        assert (scores[f"lesion_tp_{region}"], scores[f"lesion_fn_{region}"]) == (1, 0)
        assert scores[f"lesion_fp_{region}"] == 0
    assert list(scores) == list(LESION_METRICS + LESION_COUNTS)
    # a predicted component that touches the lesion counts whole: the 4^3 cube plus a
    # 36-voxel bar attached to it is one 100-voxel component, Dice 2 * 64 / (64 + 100)
    predicted = reference.copy()
    predicted[6:15, 2:4, 2:4] = 4
    assert lesion_wise(reference, predicted)["lesion_dice_et"] == pytest.approx(128 / 164)


def test_a_missed_lesion_and_a_found_one_average_to_one_half():
    reference = cube(cube(volume(), (2, 2, 2), 4), (14, 2, 2), 4)  # 8 voxels apart: 2 lesions
    predicted = cube(volume(), (2, 2, 2), 4)
    scores = lesion_wise(reference, predicted)
    assert scores["lesion_dice_et"] == pytest.approx((1.0 + 0.0) / 2)
    assert scores["lesion_hd95_et"] == pytest.approx((0.0 + MISSED_HD95) / 2) == 187.0
    assert (scores["lesion_tp_et"], scores["lesion_fn_et"], scores["lesion_fp_et"]) == (1, 1, 0)


def test_a_shifted_lesion_and_a_spurious_component():
    # the cube predicted one voxel further along axis 0: overlap 3 x 4 x 4 = 48 voxels, Dice
    # 96 / 128; a third of each surface's area lies one voxel from the other surface (the
    # face left behind: 9 + 12 sqrt(2)/2 + 4 sqrt(3)/8, and the inner face: 9, of 81.2),
    # the rest on it, so 95 % of the area is reached at 1 voxel in both directions
    reference = cube(volume(), (2, 2, 2), 4)
    shifted = cube(volume(), (3, 2, 2), 4)
    scores = lesion_wise(reference, shifted)
    assert scores["lesion_dice_et"] == pytest.approx(0.75)
    assert scores["lesion_hd95_et"] == pytest.approx(1.0)
    # HD95 is in mm: 2 mm voxels along the shift double it, 2 mm across it leave it
    assert lesion_wise(reference, shifted, (2, 1, 1))["lesion_hd95_et"] == pytest.approx(2.0)
    assert lesion_wise(reference, shifted, (1, 2, 1))["lesion_hd95_et"] == pytest.approx(1.0)
    # one voxel far from the lesion's dilation: a false positive, Dice 0 and HD95 374 added
    shifted[20, 20, 20] = 4
    scores = lesion_wise(reference, shifted)
    assert scores["lesion_dice_et"] == pytest.approx((0.75 + 0.0) / 2)
    assert scores["lesion_hd95_et"] == pytest.approx((1.0 + MISSED_HD95) / 2)
    assert (scores["lesion_tp_et"], scores["lesion_fn_et"], scores["lesion_fp_et"]) == (1, 0, 1)


def test_lesions_at_most_the_minimum_volume_are_not_scored():
    found = cube(volume(), (2, 2, 2), 4)
    reference = cube(found.copy(), (14, 14, 14), 3)  # 27 voxels = 27 mm^3 <= 50: ignored
    scores = lesion_wise(reference, found)
    assert (scores["lesion_dice_et"], scores["lesion_hd95_et"]) == (1.0, 0.0)
    assert (scores["lesion_tp_et"], scores["lesion_fn_et"]) == (1, 0)
    # a prediction on the small lesion is not a false positive either
    predicted = found.copy()
    predicted[15, 15, 15] = 4
    scores = lesion_wise(reference, predicted)
    assert (scores["lesion_dice_et"], scores["lesion_fp_et"]) == (1.0, 0)
    # the threshold is a volume: at 2 mm along one axis the small lesion is 54 mm^3 > 50,
    # and it is missed
    scores = lesion_wise(reference, found, (2, 1, 1))
    assert scores["lesion_dice_et"] == pytest.approx(0.5)
    assert scores["lesion_hd95_et"] == pytest.approx(MISSED_HD95 / 2)
    # "at most": 50 voxels (5 x 5 x 2) are left out, 51 are not
    reference = found.copy()
    reference[14:19, 14:19, 14:16] = 4
    assert lesion_wise(reference, found)["lesion_fn_et"] == 0
    reference[14, 14, 16] = 4
    assert lesion_wise(reference, found)["lesion_fn_et"] == 1
    assert lesion_wise(reference, found, min_volume=51)["lesion_fn_et"] == 0


@pytest.mark.parametrize(
    "offset, merged",
    [
        ((10, 0, 0), True),  # 6 voxels apart: each dilates by 3 and the two touch
        ((11, 0, 0), False),  # 7 voxels apart: one voxel stays between them
        # corner to corner: 3 steps of the 18-connected element reach offsets of at most 3
        # per axis and 6 in all, so the two dilations close a gap of up to (4, 4, 4) between
        # 26-neighbours (the nearest corners 5 apart per axis) ...
        ((8, 8, 8), True),
        # ... but not (5, 5, 5) (corners 6 apart), which the full 3^3 element would close
        ((9, 9, 9), False),
    ],
)
def test_reference_pieces_that_merge_after_dilation_are_one_lesion(offset, merged):
    reference = cube(volume((30, 30, 30)), (1, 1, 1), 4)
    reference = cube(reference, tuple(1 + o for o in offset), 4)
    predicted = cube(volume((30, 30, 30)), (1, 1, 1), 4)  # finds one of the two pieces
    scores = lesion_wise(reference, predicted)
    if merged:  # one lesion of 128 voxels, half of it found: Dice 2 * 64 / (128 + 64)
        assert scores["lesion_dice_et"] == pytest.approx(2 / 3)
        assert (scores["lesion_tp_et"], scores["lesion_fn_et"]) == (1, 0)
    else:  # two lesions, one found exactly and one missed
        assert scores["lesion_dice_et"] == pytest.approx(0.5)
        assert (scores["lesion_tp_et"], scores["lesion_fn_et"]) == (1, 1)
    # without dilation, the pieces are always two lesions
    assert lesion_wise(reference, predicted, dilation=0)["lesion_fn_et"] == 1


def test_predicted_components_are_26_connected():
    reference = volume()
    predicted = volume()
    predicted[5, 5, 5] = predicted[6, 6, 6] = 4  # touching at a corner only: one component
    scores = lesion_wise(reference, predicted)
    assert scores["lesion_fp_et"] == 1
    assert (scores["lesion_dice_et"], scores["lesion_hd95_et"]) == (0.0, MISSED_HD95)


def test_empty_reference_and_prediction():
    scores = lesion_wise(volume(), volume())
    assert all(scores[f"lesion_dice_{r}"] == 1.0 for r in ("wt", "tc", "et"))
    assert all(scores[f"lesion_hd95_{r}"] == 0.0 for r in ("wt", "tc", "et"))
    assert all(scores[name] == 0 for name in LESION_COUNTS)
    # only lesions too small to score, and nothing predicted elsewhere: the same
    assert lesion_wise(cube(volume(), (2, 2, 2), 2), volume())["lesion_dice_wt"] == 1.0


def test_nested_regions_use_the_brats_label_sets():
    # an 8^3 tumour: 6^3 core (labels 1 and 4) around a 4^3 enhancing centre (label 4)
    reference = cube(cube(cube(volume(), (2, 2, 2), 8, 2), (3, 3, 3), 6, 1), (4, 4, 4), 4, 4)
    # the centre predicted as oedema: WT exact; TC is the 6^3 cube less the 4^3 centre,
    # 152 voxels, Dice 2 * 152 / (216 + 152); ET is missed
    predicted = np.where(reference == 4, 2, reference).astype(np.uint8)
    scores = lesion_wise(reference, predicted)
    assert (scores["lesion_dice_wt"], scores["lesion_hd95_wt"]) == (1.0, 0.0)
    assert scores["lesion_dice_tc"] == pytest.approx(304 / 368)
    # the outer surfaces agree; the hole's surface (81.2 of 275.4, 29 % of the predicted
    # area) is 1 voxel inside the reference's: HD95 1
    assert scores["lesion_hd95_tc"] == pytest.approx(1.0)
    assert (scores["lesion_dice_et"], scores["lesion_hd95_et"]) == (0.0, MISSED_HD95)
    assert (scores["lesion_tp_et"], scores["lesion_fn_et"]) == (0, 1)
    # the centre predicted as necrosis: still tumour core, ET still missed
    predicted = np.where(reference == 4, 1, reference).astype(np.uint8)
    scores = lesion_wise(reference, predicted)
    assert (scores["lesion_dice_tc"], scores["lesion_dice_et"]) == (1.0, 0.0)


def test_surface_hd95_is_the_larger_directed_distance_over_area():
    inner = np.zeros((12, 12, 12), bool)
    inner[3:7, 3:7, 3:7] = True
    outer = np.zeros_like(inner)
    outer[2:8, 2:8, 2:8] = True
    # inner -> outer: every surface element is 1 voxel away. outer -> inner: the faces
    # (150 of area 1) are 1 away, the edges (60 of sqrt(2)/2, 42.4 of 194.2 in all) sqrt(2)
    # away and the corners sqrt(3); 95 % of the area is reached among the edges
    assert surface_hd95(inner, outer) == pytest.approx(math.sqrt(2))
    assert surface_hd95(outer, inner) == pytest.approx(math.sqrt(2))
    assert surface_hd95(inner, inner) == 0.0
    assert surface_hd95(inner, np.zeros_like(inner)) == math.inf
    assert surface_hd95(np.zeros_like(inner), np.zeros_like(inner)) == 0.0


def test_surfel_areas_by_hand():
    areas = surfel_areas()
    # bits: offset (i, j, k) of the 2 x 2 x 2 neighbourhood is 2 ** (7 - 4i - 2j - k)
    assert areas[128] == pytest.approx(math.sqrt(3) / 8)  # one voxel: a corner triangle
    assert areas[128 | 64] == pytest.approx(math.sqrt(2) / 2)  # two along axis 2
    assert areas[128 | 64 | 32 | 16] == pytest.approx(1.0)  # the face i = 0: a unit square
    assert areas[8 | 4 | 2 | 1] == pytest.approx(1.0)  # its complement, the face i = 1
    assert areas[0] == areas[255] == 0.0
    stretched = surfel_areas((2, 1, 1))
    # the triangle's area vector (1/8, 1/8, 1/8) becomes (1/8, 2/8, 2/8): length 3/8
    assert stretched[128] == pytest.approx(3 / 8)
    assert stretched[128 | 64 | 32 | 16] == pytest.approx(1.0)  # across axis 0: unchanged
    assert stretched[128 | 64 | 8 | 4] == pytest.approx(2.0)  # the face j = 0 spans axis 0
    # the rectangle across the edge: 1 along axis 2, from (1, 0) to (0, 1/2) mm in (0, 1)
    assert stretched[128 | 64] == pytest.approx(math.sqrt(1 + 1 / 4))


@pytest.mark.parametrize(
    "labels, predicted, options, message",
    [
        (np.zeros((4, 4)), np.zeros((4, 4)), {}, "3-D label maps"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), {}, "same shape"),
        (np.full((4, 4, 4), 3), np.zeros((4, 4, 4)), {}, r"labels must hold .* \[3\]"),
        (np.zeros((4, 4, 4)), np.full((4, 4, 4), 5), {}, r"predicted must hold .* \[5\]"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"spacing": (1, 0, 1)}, "spacing"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"spacing": (1, 1)}, "spacing"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"dilation": -1}, "dilation"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"dilation": 1.5}, "dilation"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"dilation": "3"}, "dilation"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"min_volume": -1}, "min_volume"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"min_volume": "a"}, "min_volume"),
    ],
)
def test_bad_input_raises_one_line_input_errors(labels, predicted, options, message):
    with pytest.raises(InputError, match=message) as raised:
        lesion_wise(labels, predicted, **options)
    assert "\n" not in str(raised.value)


def write_subject(root, subject, seg, affine):
    """A BraTS 2021 subject folder: four constant modalities and ``seg``, on ``affine``."""
    from support import OLD_SUFFIXES, save_nifti

    for suffix in OLD_SUFFIXES:
        save_nifti(
            root / subject / f"{subject}_{suffix}.nii.gz", np.ones(seg.shape, np.float32), affine
        )
    save_nifti(root / subject / f"{subject}_seg.nii.gz", seg, affine)


def test_score_writes_lesion_wise_columns_at_the_references_spacing(tmp_path):
    import csv
    import json

    from click.testing import CliRunner
    from support import save_nifti

    from keras_advseg.cli import main

    affine = np.diag([2.0, 1.0, 1.0, 1.0])  # 2 mm along axis 0
    reference = cube(volume((12, 10, 8)), (2, 2, 2), 4)  # 64 voxels, 128 mm^3
    shifted = cube(volume((12, 10, 8)), (3, 2, 2), 4)
    shifted[11, 9, 7] = 4  # beyond the lesion's dilation: a false positive
    for subject, predicted in (("BraTS2021_00000", reference), ("BraTS2021_00001", shifted)):
        write_subject(tmp_path / "data", subject, reference, affine)
        save_nifti(tmp_path / "pred" / f"{subject}.nii.gz", predicted, affine)
    result = CliRunner().invoke(
        main,
        [
            "score",
            str(tmp_path / "pred"),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "lesion-wise" in result.output
    with open(tmp_path / "s" / "scores.csv") as handle:
        rows = {row["subject"]: row for row in csv.DictReader(handle)}
    exact, shifted_row = rows["BraTS2021_00000"], rows["BraTS2021_00001"]
    for region in ("wt", "tc", "et"):
        assert float(exact[f"lesion_dice_{region}"]) == 1.0
        assert float(exact[f"lesion_hd95_{region}"]) == 0.0
        # the shifted lesion (Dice 0.75, HD95 one 2 mm voxel) and the false positive
        assert float(shifted_row[f"lesion_dice_{region}"]) == pytest.approx((0.75 + 0) / 2)
        assert float(shifted_row[f"lesion_hd95_{region}"]) == pytest.approx((2.0 + 374) / 2)
        assert [int(shifted_row[f"lesion_{c}_{region}"]) for c in ("tp", "fn", "fp")] == [1, 0, 1]
        # the region-wise scores are still there beside them
        assert float(shifted_row[f"dice_{region}"]) == pytest.approx(2 * 48 / (64 + 65))
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["lesion_dice_et"]["mean"] == pytest.approx((1.0 + 0.375) / 2)
    assert summary["lesion_dice_et"]["sd"] == pytest.approx(0.625 / math.sqrt(2))
    assert summary["lesion_hd95_wt"]["mean"] == pytest.approx((0.0 + 188.0) / 2)
    assert summary["lesion_fp_tc"]["mean"] == pytest.approx(0.5)


def test_evaluate_puts_lesion_wise_scores_on_the_clean_row_only(
    models, prepared_dir, tmp_path, new_store
):
    import json

    from mlflow.tracking import MlflowClient
    from support import read_rows, run_evaluate

    from keras_advseg.data.corrupted import prepared_spacing
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.export import load_model
    from keras_advseg.metrics import predict_labels

    uri = new_store(tmp_path)
    result = run_evaluate(
        models / "a.keras", prepared_dir, tmp_path / "e", uri, "--attacks", "fgsm"
    )
    prepared = load_prepared(prepared_dir)
    model = load_model(models / "a.keras")
    # the phantom's raw scans are at hand: the prepared grid's voxel size (4 mm scans
    # cropped and taken to 16^3), not 1 mm
    spacing = prepared_spacing(prepared)
    assert spacing != (1.0, 1.0, 1.0)
    rows = read_rows(tmp_path / "e" / "per_subject.csv")
    clean = {r["subject"]: r for r in rows if r["attack"] == "none"}
    assert set(clean) == set(prepared.test_ids)
    for subject, row in clean.items():
        image, labels = prepared.load(subject)
        expected = lesion_wise(labels, predict_labels(model, image[None])[0], spacing)
        for metric in LESION_METRICS:
            assert float(row[metric]) == pytest.approx(expected[metric])
    assert all(r[m] == "" for r in rows if r["attack"] != "none" for m in LESION_METRICS)
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    mean = np.mean([float(r["lesion_hd95_et"]) for r in clean.values()])
    assert summary["clean"]["lesion_hd95_et"]["mean"] == pytest.approx(mean)
    assert "lesion_dice_wt" not in summary["attacks"]["fgsm"]["0.05"]
    assert summary["lesion_wise"] == {
        "space": "model",
        "spacing_mm": pytest.approx(list(spacing)),
        "spacing_known": True,
        "dilation": 3,
        "min_volume_mm3": 50.0,
        "missed_hd95_mm": 374.0,
    }
    assert "clean lesion-wise Dice (BraTS 2023)" in result.output
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("eval-tests").experiment_id])
    assert run.data.metrics["lesion_dice_wt_clean"] == pytest.approx(
        summary["clean"]["lesion_dice_wt"]["mean"]
    )


def test_evaluation_tables_with_and_without_lesion_columns_read_back(tmp_path):
    from keras_advseg.evaluation.results import Evaluation, load_results, summarize

    base = {"dice_wt": 0.5, "dice_tc": 0.4, "dice_et": 0.3, "psnr": "", "ssim": "", "rmse": ""}
    clean = {"subject": "s1", "attack": "none", "eps": 0.0, "steps": 0, **base}
    attacked = {**clean, "attack": "fgsm", "eps": 0.05, "psnr": 30.0, "ssim": 0.9, "rmse": 0.1}
    lesions = {m: 0.25 if "dice" in m else 187.0 for m in LESION_METRICS}
    new = tmp_path / "new"
    new.mkdir()
    (new / "per_subject.csv").write_text(Evaluation([{**clean, **lesions}, attacked]).rows_csv())
    read = load_results(new)
    assert read.values[("none", 0.0)]["s1"]["lesion_hd95_tc"] == 187.0
    assert read.values[("fgsm", 0.05)]["s1"]["lesion_hd95_tc"] is None  # an empty cell
    assert summarize(Evaluation([{**clean, **lesions}, attacked])).clean["lesion_dice_et"] == {
        "mean": 0.25,
        "sd": 0.0,
        "n": 1,
    }
    old = tmp_path / "old"  # written before the lesion-wise columns
    old.mkdir()
    (old / "per_subject.csv").write_text(Evaluation([clean, attacked]).rows_csv())
    assert "lesion" not in (old / "per_subject.csv").read_text()
    read = load_results(old)
    assert read.values[("none", 0.0)]["s1"]["dice_wt"] == 0.5
    assert "lesion_dice_wt" not in read.values[("none", 0.0)]["s1"]
    assert "lesion_dice_wt" not in summarize(Evaluation([clean, attacked])).clean
