"""Randomized smoothing against its definition: constant and unstable models, the binomial test,
Holm against Bonferroni, determinism, and soundness against an attack on the smoothed model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy import stats

from keras_advseg.certification import (
    ABSTAIN,
    binomial_p_values,
    certified_dice,
    certify,
    rejected,
    smoothed_pgd_l2,
)
from keras_advseg.errors import InputError

SHAPE = (8, 8, 8, 4)


def logits_model(fn):
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, keras.layers.Lambda(fn)(inputs))


def volume(seed=0):
    return np.random.default_rng(seed).normal(size=SHAPE).astype("float32")


def test_a_constant_model_certifies_every_voxel_at_the_full_radius():
    model = logits_model(lambda x: keras.ops.zeros_like(x) + keras.ops.array([0.0, 0.0, 5.0, 0.0]))
    certificate = certify(model, volume(), sigma=0.25, n=100, n0=10, tau=0.75, seed=1)
    assert (certificate.labels == 2).all() and certificate.abstain_rate() == 0
    assert certificate.radius == pytest.approx(0.25 * stats.norm.ppf(0.75))
    span = float(volume().max() - volume().min())
    assert certificate.radius_abs == pytest.approx(certificate.radius * span, rel=1e-6)
    assert certificate.linf == pytest.approx(certificate.radius / np.sqrt(np.prod(SHAPE)))


def test_a_model_that_flips_under_tiny_noise_abstains():
    # class 0 or 1 by the sign of the first channel, on an input of zeros: a coin toss per voxel
    model = logits_model(
        lambda x: keras.ops.concatenate(
            [1e4 * x[..., :1], -1e4 * x[..., :1], keras.ops.zeros_like(x[..., :2]) - 1e4], -1
        )
    )
    x = np.zeros(SHAPE, "float32")
    x[0, 0, 0, 1] = 1.0  # an intensity range of 1
    certificate = certify(model, x, sigma=1e-3, n=100, n0=10, seed=0)
    assert certificate.abstain_rate() == 1.0
    assert (certificate.labels == ABSTAIN).all()


def test_the_binomial_test_is_scipys_and_holm_certifies_at_least_what_bonferroni_does():
    for k, n, tau in ((80, 100, 0.75), (100, 100, 0.75), (60, 100, 0.5), (7, 10, 0.6)):
        expected = stats.binomtest(k, n, tau, alternative="greater").pvalue
        assert binomial_p_values(k, n, tau) == pytest.approx(expected, rel=1e-9)
    p = np.random.default_rng(0).uniform(0, 0.01, size=(6, 7, 8)) ** 2
    holm, bonferroni = rejected(p, 1e-3, "holm"), rejected(p, 1e-3, "bonferroni")
    assert (holm >= bonferroni).all() and holm.sum() > bonferroni.sum()
    # Holm by hand: the sorted p-values against alpha / (m - i), up to the first failure
    flat = np.sort(p.ravel())
    m = flat.size
    k = next((i for i in range(m) if flat[i] > 1e-3 / (m - i)), m)
    assert holm.sum() == k
    with pytest.raises(InputError, match="correction must be one of"):
        rejected(p, 0.01, "sidak")


def test_settings_are_checked_and_a_seed_fixes_the_certificate(fitted_unet, prepared_dir):
    from keras_advseg.data.prepare import load_prepared

    image, _ = load_prepared(prepared_dir).load(load_prepared(prepared_dir).test_ids[0])
    a = certify(fitted_unet, image, sigma=0.1, n=60, n0=5, seed=3, batch_size=7)
    b = certify(fitted_unet, image, sigma=0.1, n=60, n0=5, seed=3, batch_size=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.p_values, b.p_values)
    holm = certify(fitted_unet, image, sigma=0.1, n=60, n0=5, seed=3, correction="holm")
    bonf = certify(fitted_unet, image, sigma=0.1, n=60, n0=5, seed=3, correction="bonferroni")
    assert holm.certified.sum() >= bonf.certified.sum()
    for bad, match in (
        (dict(sigma=0), "sigma must be a positive number"),
        (dict(tau=1.0), "tau must be in"),
        (dict(alpha=0), "alpha must be in"),
        (dict(n=0), "n must be an integer"),
        (dict(n=20), "n=20 cannot certify any voxel: .* use n >= 53"),
    ):
        with pytest.raises(InputError, match=match):
            certify(fitted_unet, image, **{"sigma": 0.1, **bad})
    with pytest.raises(InputError, match="x must be one volume"):
        certify(fitted_unet, np.stack([image, image]), sigma=0.1)


def test_an_attack_on_the_smoothed_model_within_the_radius_leaves_certified_voxels_alone(
    fitted_unet, prepared_dir
):
    from keras_advseg.data.prepare import load_prepared

    prepared = load_prepared(prepared_dir)
    image, labels = prepared.load(prepared.test_ids[0])
    sigma = 0.12
    certificate = certify(fitted_unet, image, sigma=sigma, n=100, n0=10, seed=0, batch_size=10)
    certified = certificate.certified
    assert certified.mean() > 0.5  # most voxels (the background) are certified
    index = np.where(certificate.smoothed == 4, 3, certificate.smoothed)
    attacked = smoothed_pgd_l2(
        fitted_unet, image, index, eps=0.9 * certificate.radius, sigma=sigma, steps=10, samples=8
    )
    span = image.max() - image.min()
    assert np.linalg.norm(attacked - image) <= 0.9 * certificate.radius * span * (1 + 1e-5)
    after = certify(fitted_unet, attacked, sigma=sigma, n=100, n0=10, seed=1, batch_size=10)
    changed = (after.smoothed != certificate.labels) & certified
    assert changed.sum() / certified.sum() <= 0.01  # the certificate holds (up to its error)
    # the attack is real: outside the radius it changes far more of the smoothed labels
    far = smoothed_pgd_l2(
        fitted_unet, image, index, eps=10 * certificate.radius, sigma=sigma, steps=10, samples=8
    )
    moved = certify(fitted_unet, far, sigma=sigma, n=100, n0=10, seed=1, batch_size=10)
    assert (moved.smoothed != certificate.smoothed).sum() > 10 * max(changed.sum(), 1)
    dice = certified_dice(labels, certificate.labels)
    assert set(dice) == {"wt", "tc", "et"} and all(0 <= v <= 1 for v in dice.values())
