"""Attack properties on tiny models, and effects on a small model trained on the phantom."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from support import linf, span

from keras_advseg.attacks import fgsm, ifgsm, pgd, targeted_ifgsm
from keras_advseg.attacks.core import compiled, per_sample_scale
from keras_advseg.models import unet3d

TOL = 1e-6  # float32 rounding of x + eps * sign


def test_relative_budget_is_a_fraction_of_the_intensity_range(batch):
    x, _ = batch
    scale = per_sample_scale(tf.constant(x), 0.05, relative=True).numpy().reshape(-1)
    np.testing.assert_allclose(scale, 0.05 * span(x), rtol=1e-6)
    # a shift of the intensities (another normalisation) leaves the budget unchanged
    shifted = per_sample_scale(tf.constant(x + 7.0), 0.05, relative=True).numpy().reshape(-1)
    np.testing.assert_allclose(shifted, scale, rtol=1e-5)
    assert per_sample_scale(tf.constant(x), 0.05, relative=False).numpy().reshape(
        -1
    ).tolist() == pytest.approx([0.05, 0.05])


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "targeted", "pgd"])
def test_linf_bound_relative_and_absolute(tiny, batch, attack):
    x, y = batch
    fn = {"fgsm": fgsm, "ifgsm": ifgsm, "targeted": targeted_ifgsm, "pgd": pgd}[attack]
    unit = span(x)
    rel = fn(tiny, x, y, eps=0.05)
    assert np.all(linf(rel, x) <= 0.05 * unit * (1 + TOL))
    assert np.all(linf(rel, x) > 0.01 * unit)
    absolute = fn(tiny, x, y, eps=0.1, relative=False)
    assert np.all(linf(absolute, x) <= 0.1 + TOL)


@pytest.mark.parametrize("attack", [fgsm, ifgsm, pgd])
def test_clip_and_eps_zero(tiny, batch, attack):
    x, y = batch
    clipped = attack(tiny, x, y, eps=0.2, clip=(-1.0, 1.0)).numpy()
    assert clipped.min() >= -1.0 and clipped.max() <= 1.0
    np.testing.assert_array_equal(attack(tiny, x, y, eps=0.0), x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -0.1}, r"eps must be >= 0. Received: eps=-0.1"),
        ({"eps": 0.1, "steps": 0}, r"steps must be >= 1. Received: steps=0"),
        ({"eps": 0.1, "clip": (1.0, 0.0)}, r"lo <= hi. Received: clip=\(1.0, 0.0\)"),
        ({"eps": 0.1, "loss": "l2"}, r"loss must be one of"),
        ({"eps": 0.1, "temperature": 0}, r"temperature must be positive"),
    ],
)
def test_validation(tiny, batch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ifgsm(tiny, *batch, **kwargs)


def test_no_retracing_across_parameter_values(batch):
    model = unet3d((16, 16, 16, 4), base_filters=2, depth=2)
    x, y = batch
    ifgsm(model, x, y, eps=0.05, steps=2)
    fgsm(model, x, y, eps=0.05)
    fns = compiled(model)
    count = fns.tracing_count()
    for eps, steps in ((0.02, 3), (0.07, 5)):
        ifgsm(model, x, y, eps=eps, steps=steps)
        fgsm(model, x, y, eps=eps)
    assert fns.tracing_count() == count


def test_attacks_share_one_trace_of_the_model_and_do_not_keep_it_alive(batch):
    import gc
    import weakref

    from keras_advseg.attacks import apgd, segpgd
    from keras_advseg.attacks.core import logits_function

    model = unet3d((16, 16, 16, 4), base_filters=2, depth=2)
    x, y = batch
    # the shared forward pass gives the model's own logits
    np.testing.assert_allclose(
        logits_function(model)(x).numpy(), model(x, training=False).numpy(), atol=1e-5
    )
    # attacks with other losses, temperatures and compiled caches trace the model once
    pgd(model, x, y, eps=0.05, steps=1, seed=0)
    pgd(model, x, y, eps=0.05, steps=1, loss="ce", temperature=3.0, seed=0)
    segpgd(model, x, y, eps=0.05, steps=1)
    apgd(model, x, y, eps=0.05, steps=2, loss="js")
    logits_function(model)(x, training=False)  # called as the model is: the same trace
    assert logits_function(model).experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match="training=False"):
        logits_function(model)(x, training=True)
    # the caches hold no reference to the model: it is freed once the caller drops it
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_compiled_steps_of_several_settings_do_not_read_as_retracing(batch):
    import logging

    model = unet3d((16, 16, 16, 4), base_filters=2, depth=2)
    x, y = batch
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        # seven settings: seven Compiled objects sharing one code object, each traced once
        for temperature in range(1, 8):
            compiled(model, temperature=float(temperature)).forward(x, y)
        own = [r for r in records if "retracing" in r.getMessage()]

        def double(v):
            return v * 2

        retraced = tf.function(double)
        for n in range(7):  # a function of someone else's, really retraced: still warned of
            retraced(tf.zeros((n + 1,)))
        theirs = [r for r in records if "retracing" in r.getMessage()]
    finally:
        logger.removeHandler(handler)
    assert own == []
    assert theirs and all("double" in r.getMessage() for r in theirs)
