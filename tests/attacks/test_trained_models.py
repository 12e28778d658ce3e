"""Attack properties on tiny models, and effects on a small model trained on the phantom."""

from __future__ import annotations

import numpy as np
import pytest
from support import linf, span

from keras_advseg.attacks import all_label_target, fgsm, ifgsm, targeted_ifgsm
from keras_advseg.metrics import brats_dice, predict_labels
from keras_advseg.models import SliceWise, unet2d

TOL = 1e-6  # float32 rounding of x + eps * sign


def test_slicewise_2d_model_attacked_at_volume_level(batch):
    x, y = batch
    model = SliceWise(unet2d((16, 16, 4), base_filters=2, depth=2))
    adv = ifgsm(model, x, y, eps=0.05, steps=2)
    assert adv.shape == x.shape
    assert np.all(linf(adv, x) <= 0.05 * span(x) * (1 + TOL))
    assert np.all(linf(adv, x) > 0)


@pytest.fixture(scope="module")
def trained(fitted_unet, prepared_dir):
    from keras_advseg.data.prepare import load_prepared

    model = fitted_unet
    prepared = load_prepared(prepared_dir)
    images, labels = zip(*(prepared.load(i) for i in prepared.ids("train") + prepared.ids("test")))
    x = np.stack(images)
    from keras_advseg.data.pipeline import one_hot_labels

    return model, x, one_hot_labels(np.stack(labels)).numpy(), np.stack(labels)


def whole_tumour_dice(model, x, labels):
    return brats_dice(labels, predict_labels(model, x))["wt"].mean()


def test_attacks_on_trained_model(trained):
    model, x, y, labels = trained
    clean = whole_tumour_dice(model, x, labels)
    assert clean > 0.4, "the small model should have learnt something"
    after_fgsm = whole_tumour_dice(model, fgsm(model, x, y, eps=0.05), labels)
    after_ifgsm = whole_tumour_dice(model, ifgsm(model, x, y, eps=0.05, steps=5), labels)
    assert after_fgsm < clean - 0.05
    assert after_ifgsm <= after_fgsm + 1e-9
    target = all_label_target(y)
    target_dice = lambda z: brats_dice(np.ones_like(labels), predict_labels(model, z))["tc"].mean()
    assert target_dice(targeted_ifgsm(model, x, target, eps=0.05, steps=5)) > target_dice(x)
