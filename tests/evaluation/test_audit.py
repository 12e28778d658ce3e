"""The gradient-masking audit flags a saturated model and passes an ordinary one."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_advseg.config import AUDIT_ITEMS, AuditConfig
from keras_advseg.evaluation.audit import audit, logit_scale_temperature, overall
from keras_advseg.workflows.card import BUDGETS

# what `advseg card --budget quick` audits: two attacks of 5 steps (doubled twice), three curve
# budgets, two restarts, 20 queries; the test's network has one test subject
QUICK = BUDGETS["quick"].audit_config(seed=0)


@pytest.fixture(scope="module")
def samples(prepared_dir):
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared

    prepared = load_prepared(prepared_dir)
    image, labels = prepared.load(prepared.ids("test")[0])
    return [(image[None], one_hot_labels(labels[None]).numpy())]


def saturated(model):
    """The same predictions with logits x 1000: softmax saturates and the soft-Dice gradient
    vanishes except on voxels within about 0.02 of a decision boundary."""
    inputs = keras.Input(model.input_shape[1:])
    return keras.Model(inputs, keras.layers.Rescaling(1000.0)(model(inputs)))


def test_an_ordinary_model_passes_at_the_quick_budget(fitted_unet, samples):
    items = audit(fitted_unet, samples, QUICK)
    assert [i.number for i in items] == sorted(AUDIT_ITEMS)
    verdicts = {i.number: i.verdict for i in items}
    assert verdicts == {1: "PASS", 2: "PASS", 3: "PASS", 4: "PASS", 5: "SKIP", 6: "PASS", 7: "PASS"}
    assert overall(items) == "PASS"
    curve = items[1].numbers["dice"]
    assert curve[-1] <= QUICK.floor < items[0].numbers["clean"]
    # the white-box result the checks compare with is the strongest over the step counts
    clean, white_box = items[0].numbers["clean"], items[0].numbers["worst_case"]
    assert white_box == min(items[2].numbers["dice"]) <= items[0].numbers["fgsm"] < clean
    assert items[6].numbers["white_box"] == white_box == items[3].numbers["white_box"]
    # item 3's margin: the tolerance, or a tenth of what the attack takes off clean Dice
    margin = max(QUICK.tolerance, QUICK.relative_tolerance * (clean - white_box))
    assert items[2].numbers["margin"] == pytest.approx(margin)
    assert items[2].numbers["last_change"] <= margin
    # item 4's restarts start from different random points, so the best of two can be lower
    # than one (an earlier version ran the same deterministic APGD twice)
    from keras_advseg.attacks import apgd

    x, y = samples[0]
    starts = [apgd(fitted_unet, x, y, eps=0.03, steps=3, seed=s) for s in (0, 1)]
    assert not np.array_equal(np.asarray(starts[0]), np.asarray(starts[1]))
    assert items[3].numbers["best_of"] <= items[3].numbers["one"]


def test_a_saturated_model_is_flagged_at_the_quick_budget(fitted_unet, samples):
    model = saturated(fitted_unet)
    # same predictions, so the same clean Dice
    np.testing.assert_array_equal(
        np.argmax(model(samples[0][0]), -1), np.argmax(fitted_unet(samples[0][0]), -1)
    )
    items = audit(model, samples, QUICK, reference=fitted_unet)
    assert overall(items) == "WARN"
    # PGD on soft Dice (the curve's attack) can no longer use a larger budget: Dice rises
    curve = items[1].numbers["dice"]
    assert items[1].verdict == "WARN" and any(b > a + 0.01 for a, b in zip(curve, curve[1:]))
    # softening the logits restores that attack; here the ensemble's SegPGD (cross-entropy) was
    # not fooled, so item 6 sees nothing the white-box worst case missed
    temperature = items[5]
    softened = temperature.numbers["logit_scale_temperature"]
    assert softened == pytest.approx(1000 * logit_scale_temperature(fitted_unet, samples), rel=1e-3)
    assert min(temperature.numbers["variants"].values()) < temperature.numbers["dice_t1"] - 0.02
    assert temperature.verdict == (
        "WARN"
        if min(temperature.numbers["variants"].values())
        < temperature.numbers["white_box"] - items[2].numbers["margin"]
        else "PASS"
    )
    assert items[4].verdict in ("PASS", "WARN") and "transfer" in items[4].numbers


def test_audit_config_is_checked():
    from keras_advseg.errors import InputError

    with pytest.raises(InputError, match="audit budgets"):
        AuditConfig(curve=())
    with pytest.raises(InputError, match="tolerance"):
        AuditConfig(tolerance=2.0)
    with pytest.raises(InputError, match="relative_tolerance"):
        AuditConfig(relative_tolerance=-0.1)
