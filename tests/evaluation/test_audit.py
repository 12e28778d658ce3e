"""The gradient-masking audit flags models that mask their gradients by construction and passes
an ordinary one."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advseg.attacks.core import mean_region_dice
from keras_advseg.attacks.ensemble import worst_case
from keras_advseg.config import AUDIT_ITEMS, AuditConfig
from keras_advseg.evaluation.audit import audit, logit_scale_temperature, overall
from keras_advseg.workflows.card import CARD_PLANS

# what `advseg card --plan quick` audits: two attacks of 5 steps (doubled twice), three curve
# budgets, two restarts, 20 queries; the test's network has one test subject
QUICK = CARD_PLANS["quick"].audit_config(seed=0)
# the masked models' audits check items 1, 3 and 5 and the verdict: the same attacks, steps
# and budget as QUICK (the transfer must equal the unmasked network's worst case), the curve at
# its large budget only, one restart, one query
MASKED = dataclasses.replace(QUICK, curve=QUICK.curve[-1:], restarts=1, queries=1)


@pytest.fixture(scope="module")
def samples(prepared_dir):
    from keras_advseg.data.pipeline import one_hot_labels
    from keras_advseg.data.prepare import load_prepared

    prepared = load_prepared(prepared_dir)
    image, labels = prepared.load(prepared.ids("test")[0])
    return [(image[None], one_hot_labels(labels[None]).numpy())]


class ZeroGradient(keras.layers.Layer):
    """The identity whose backward pass is zero: every gradient attack is blind."""

    def call(self, x):
        @keras.ops.custom_gradient
        def identity(v):
            def grad(*args, upstream=None):
                return keras.ops.zeros_like(args[0] if upstream is None else upstream)

            return v, grad

        return identity(x)


class RandomGradient(keras.layers.Layer):
    """The identity whose backward pass is noise: gradient attacks wander at random."""

    def call(self, x):
        @keras.ops.custom_gradient
        def identity(v):
            def grad(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                return tf.random.normal(tf.shape(upstream), seed=7)

            return v, grad

        return identity(x)


class Quantise(keras.layers.Layer):
    """Rounds the input to a grid far finer than the budget (the network's predictions barely
    change) with the true gradient of rounding: zero almost everywhere."""

    def call(self, x):
        step = 1e-3
        quantised = keras.ops.round(x / step) * step
        return ZeroGradient()(x) + keras.ops.stop_gradient(quantised - x)


class StepOutput(keras.layers.Layer):
    """Scores that are a step function of the network's logits: the same labels, a flat loss."""

    def call(self, logits):
        labels = keras.ops.one_hot(keras.ops.argmax(logits, axis=-1), logits.shape[-1])
        # the product keeps a (zero) gradient path, so attacks get zeros rather than None
        return keras.ops.stop_gradient(10.0 * labels) + 0.0 * logits


def masked(model, kind):
    """``model`` with its gradients masked by construction; its predictions unchanged
    (``quantised``: changed only on voxels within 1e-3 of a decision boundary)."""
    inputs = keras.Input(model.input_shape[1:])
    if kind == "zero-gradient":
        outputs = model(ZeroGradient()(inputs))
    elif kind == "random-gradient":
        outputs = model(RandomGradient()(inputs))
    elif kind == "quantised-input":
        outputs = model(Quantise()(inputs))
    elif kind == "step-output":
        outputs = StepOutput()(model(inputs))
    else:
        raise ValueError(kind)
    return keras.Model(inputs, outputs)


def mean_dice(model, samples, x=None):
    ((x0, y),) = samples
    return float(mean_region_dice(y, model(x0 if x is None else x)).numpy()[0])


def test_an_ordinary_model_passes_at_the_quick_plan(fitted_unet, samples):
    items = audit(fitted_unet, samples, QUICK)
    assert [i.number for i in items] == sorted(AUDIT_ITEMS)
    verdicts = {i.number: i.verdict for i in items}
    assert verdicts == {
        1: "PASS",
        2: "PASS",
        3: "PASS",
        4: "PASS",
        5: "SKIP",
        6: "PASS",
        7: "PASS",
        8: "PASS",
    }
    # item 8's clean Dice per region, recomputed from the labels
    from keras_advseg.metrics import brats_dice

    x, y = samples[0]
    truth = np.argmax(y, -1)[0]
    labels = np.array([0, 1, 2, 4])[truth]
    predicted = np.array([0, 1, 2, 4])[np.argmax(np.asarray(fitted_unet(x)), -1)[0]]
    expected = brats_dice(labels, predicted)
    for region, value in items[7].numbers["dice"].items():
        assert value == pytest.approx(float(expected[region]), abs=1e-6)
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


@pytest.fixture(scope="module")
def unmasked(fitted_unet, samples):
    """``(clean, broken)``: the mean Dice of ``fitted_unet`` on the test subject, clean and
    under the quick plan's white-box worst case (computed once per trained network)."""
    x, y = samples[0]
    clean = mean_dice(fitted_unet, samples)
    broken = mean_dice(
        fitted_unet,
        samples,
        worst_case(fitted_unet, x, y, eps=QUICK.eps, steps=QUICK.steps, attacks=QUICK.attacks)[0],
    )
    return clean, broken


@pytest.mark.parametrize(
    "kind", ["zero-gradient", "random-gradient", "quantised-input", "step-output"]
)
def test_a_model_that_masks_its_gradients_by_construction_is_flagged(
    fitted_unet, samples, unmasked, kind
):
    """Whatever the weights: the masked model predicts what ``fitted_unet`` predicts, so the
    attacks that work on ``fitted_unet`` (its own test above) transfer to it, while its own
    gradients are blind. The transfer check (item 5) and the curve (item 2) must see that."""
    model = masked(fitted_unet, kind)
    clean, broken = unmasked
    assert mean_dice(model, samples) == pytest.approx(clean, abs=0.01)
    # the premise, checked on this machine's weights: a white-box attack on the unmasked
    # network takes most of its Dice (at least 0.1 and half of clean Dice)
    assert broken < min(clean - 0.1, clean / 2)

    items = audit(model, samples, MASKED, reference=fitted_unet)
    by_number = {i.number: i for i in items}
    assert overall(items) == "WARN"
    white_box = by_number[1].numbers["worst_case"]
    # the white-box attacks are blind: they keep far more Dice than the transferred one
    assert by_number[5].verdict == "WARN"
    assert by_number[5].numbers["transfer"] < white_box - by_number[3].numbers["margin"]
    if kind != "quantised-input":
        # the same forward pass: the transferred attack is the unmasked network's own worst
        # case, whatever the weights
        assert by_number[5].numbers["transfer"] == pytest.approx(broken, abs=1e-6)
    if kind in ("zero-gradient", "quantised-input", "step-output"):
        # a zero gradient has sign 0: FGSM returns the clean input
        assert by_number[1].numbers["fgsm"] == pytest.approx(by_number[1].numbers["clean"])


def test_logit_scaling_softens_to_the_scale_of_the_logits(fitted_unet, samples):
    """Item 6's temperature brings the median top-1 minus top-2 logit margin to 2 and grows
    with the logits (what the audit then finds depends on the network: bench_audit.py)."""
    x = samples[0][0]
    top = np.sort(np.asarray(fitted_unet(x), "float64"), axis=-1)
    median = float(np.median(top[..., -1] - top[..., -2]))
    inputs = keras.Input(fitted_unet.input_shape[1:])
    for scale in (1000.0, 1.0, 1e-6):
        scaled = keras.Model(inputs, keras.layers.Rescaling(scale)(fitted_unet(inputs)))
        # never below 1: a model with small logits is not sharpened
        expected = max(1.0, scale * median / 2.0)
        assert logit_scale_temperature(scaled, samples) == pytest.approx(expected, rel=1e-4)


def test_audit_config_is_checked():
    from keras_advseg.errors import InputError

    with pytest.raises(InputError, match="audit budgets"):
        AuditConfig(curve=())
    with pytest.raises(InputError, match="tolerance"):
        AuditConfig(tolerance=2.0)
    with pytest.raises(InputError, match="relative_tolerance"):
        AuditConfig(relative_tolerance=-0.1)
