"""The worst case over an ensemble takes, per sample, the attack with the lowest Dice."""

from __future__ import annotations

import numpy as np
import pytest
from support import linf, span

from keras_advseg.attacks import worst_case
from keras_advseg.attacks.core import mean_region_dice
from keras_advseg.attacks.registry import run_attack


@pytest.fixture(scope="module")
def test_batch(prepared_dir):
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared

    prepared = load_prepared(prepared_dir)
    images, labels = zip(*(prepared.load(i) for i in prepared.ids("test")))
    return np.stack(images), one_hot_labels(np.stack(labels)).numpy()


def test_worst_case_is_the_per_sample_minimum(fitted_unet, test_batch):
    x, y = test_batch
    members = ("apgd-masked-ce", "segpgd", "pgd-dice")
    best, found_by = worst_case(fitted_unet, x, y, eps=0.05, steps=3, attacks=members)
    separate = {
        name: mean_region_dice(
            y, fitted_unet(run_attack(name, fitted_unet, x, y, eps=0.05, steps=3))
        ).numpy()
        for name in members
    }
    got = mean_region_dice(y, fitted_unet(best)).numpy()
    np.testing.assert_allclose(got, np.min(np.stack(list(separate.values())), axis=0), atol=1e-6)
    for sample, name in enumerate(found_by):
        assert separate[name][sample] == pytest.approx(got[sample], abs=1e-6)
    assert np.all(linf(best, x) <= 0.05 * span(x) * (1 + 1e-6))


def test_reduced_eps_schedule_ends_in_the_ball(fitted_unet, test_batch):
    x, y = test_batch
    best, _ = worst_case(
        fitted_unet, x, y, eps=0.02, steps=6, attacks=("apgd-js",), reduced_eps=True
    )
    assert np.all(linf(best, x) <= 0.02 * span(x) * (1 + 1e-6))
    with pytest.raises(ValueError, match="attacks must be among"):
        worst_case(fitted_unet, x, y, eps=0.02, attacks=("deepfool",))


def test_evaluate_records_which_attack_found_the_worst_case(models, prepared_dir):
    from keras_advseg.config import DEFAULT_ENSEMBLE, EvalConfig
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.evaluation import evaluate
    from keras_advseg.export import load_model

    prepared = load_prepared(prepared_dir)
    # "worst" listed first: it is still run last, and weighs the other attacks' inputs too
    config = EvalConfig(
        attacks=("worst", "apgd-js", "fgsm"), eps=(0.05,), steps=2, ensemble=("segpgd",)
    )
    result = evaluate(load_model(models / "a.keras"), prepared, prepared.ids("test")[:1], config)
    assert [r["attack"] for r in result.rows] == ["none", "fgsm", "apgd-js", "worst"]

    def mean(row):
        return (row["dice_wt"] + row["dice_tc"] + row["dice_et"]) / 3

    worst = result.rows[-1]
    assert worst["found_by"] in ("none", "segpgd", "apgd-js", "fgsm")
    assert mean(worst) <= min(mean(r) for r in result.rows[1:3]) + 1e-9
    if worst["found_by"] in ("apgd-js", "fgsm"):  # then it is exactly that attack's row
        twin = next(r for r in result.rows if r["attack"] == worst["found_by"])
        assert (twin["dice_wt"], twin["psnr"]) == (worst["dice_wt"], worst["psnr"])
    assert "found_by" in result.rows_csv().splitlines()[0]
    assert set(DEFAULT_ENSEMBLE) <= set(EvalConfig().ensemble)


def test_worst_case_weighs_only_the_attacks_it_is_told_to(models, prepared_dir):
    """The study compares models by a worst case over the same attacks: the undefended
    network's extra i-FGSM/PGD runs must not lower its worst case when told so."""
    from keras_advseg.config import EvalConfig
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.errors import InputError
    from keras_advseg.evaluation import evaluate
    from keras_advseg.export import load_model

    prepared = load_prepared(prepared_dir)
    model, ids = load_model(models / "a.keras"), prepared.ids("test")[:2]
    common = dict(eps=(0.05,), steps=4, ensemble=("segpgd",), worst_steps=1, seed=3)

    def worst_rows(**options):
        result = evaluate(model, prepared, ids, EvalConfig(**common, **options))
        return {r["subject"]: r for r in result.rows if r["attack"] == "worst"}, result

    alone, _ = worst_rows(attacks=("worst", "fgsm"))
    weighed, result = worst_rows(attacks=("worst", "pgd-dice", "fgsm"), worst_weighs=("fgsm",))
    for subject, row in weighed.items():  # exactly the worst case without PGD
        assert row["found_by"] != "pgd-dice"
        assert [row[f"dice_{r}"] for r in ("wt", "tc", "et")] == [
            alone[subject][f"dice_{r}"] for r in ("wt", "tc", "et")
        ]
    everything, result = worst_rows(attacks=("worst", "pgd-dice", "fgsm"))
    for subject, row in everything.items():  # by default it weighs PGD too
        pgd_row = next(
            r for r in result.rows if r["attack"] == "pgd-dice" and r["subject"] == subject
        )
        mean = sum(row[f"dice_{r}"] for r in ("wt", "tc", "et"))
        assert mean <= sum(pgd_row[f"dice_{r}"] for r in ("wt", "tc", "et")) + 1e-9
    with pytest.raises(InputError, match="worst_weighs"):
        EvalConfig(attacks=("worst",), worst_weighs=("worst",))


def test_min_eps_brackets_the_threshold(fitted_unet, test_batch):
    from keras_advseg.attacks import min_eps

    x, y = test_batch
    threshold = 0.3
    upper, lower = min_eps(
        fitted_unet, x, y, dice_below=threshold, eps_max=0.2, steps=3, iterations=3
    )
    assert np.all(lower < upper)
    for i in range(len(x)):
        if not np.isfinite(upper[i]):
            continue
        at = {}
        for name, eps in (("upper", upper[i]), ("lower", lower[i])):
            adv = (
                run_attack(
                    "apgd-masked-ce",
                    fitted_unet,
                    x[i : i + 1],
                    y[i : i + 1],
                    eps=float(eps),
                    steps=3,
                    stop_dice=threshold,
                )
                if eps > 0
                else x[i : i + 1]
            )
            at[name] = mean_region_dice(y[i : i + 1], fitted_unet(adv)).numpy()[0]
        assert at["upper"] < threshold <= at["lower"]
    assert np.isfinite(upper).any()


def test_early_stopping_takes_fewer_gradients_for_the_same_dice(fitted_unet, test_batch):
    x, y = test_batch
    members = ("pgd-dice", "apgd-masked-ce", "segpgd")
    runs = {}
    for stop in (None, 0.0):
        info = {}
        best, _ = worst_case(
            fitted_unet, x, y, eps=0.2, steps=4, attacks=members, stop_dice=stop, info=info
        )
        runs[stop] = (mean_region_dice(y, fitted_unet(best)).numpy(), info)
    (dice_all, all_info), (dice_stop, stop_info) = runs[None], runs[0.0]
    # a sample that reaches Dice 0 stops there (0 cannot be lowered further); one that never
    # does runs every step as without stopping: the same Dice either way, for any weights
    np.testing.assert_array_equal(dice_stop, dice_all)
    assert np.any(dice_all == 0)  # at eps 0.2 at least one subject breaks, so a stop saves work
    # no stopping: every step (APGD adds one gradient per restart from its best point)
    assert all_info["per_attack"]["pgd-dice"] == all_info["per_attack"]["segpgd"] == 4 * len(x)
    assert all_info["per_attack"]["apgd-masked-ce"] >= 4 * len(x)
    assert stop_info["gradients"] < all_info["gradients"]
    assert stop_info["gradients"] == sum(stop_info["per_attack"].values())
