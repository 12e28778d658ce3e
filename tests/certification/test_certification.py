"""Randomized smoothing against its definition: constant and unstable models, the binomial test,
Holm against Bonferroni, determinism, noise fixed in the model's input units, the region
certificates (against scipy and Holm by hand, never below the class-wise certificate at the same
family), and soundness against an attack on the smoothed model."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from scipy import stats

from keras_advseg.certification import (
    ABSTAIN,
    SIGMA_UNIT,
    SmoothedModel,
    binomial_p_values,
    certified_dice,
    certify,
    lift,
    region_certificates,
    region_certified_dice,
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
    # sigma and the radius are in the model's input units, whatever the volume's range
    assert certificate.sigma == 0.25
    assert certificate.radius == pytest.approx(0.25 * stats.norm.ppf(0.75))
    assert certificate.radius_raw is None  # no standardisation given
    assert certificate.linf == pytest.approx(certificate.radius / np.sqrt(np.prod(SHAPE)))
    # oedema: certainly in the whole tumour, certainly outside the core and the enhancing part
    assert (certificate.regions["wt"] == 1).all()
    assert (certificate.regions["tc"] == 0).all() and (certificate.regions["et"] == 0).all()
    assert all(certificate.region_abstain_rate(r) == 0 for r in ("wt", "tc", "et"))
    std = (100.0, 250.0, 40.0, 80.0)  # each sequence's raw-intensity standard deviation
    stored = certify(model, volume(), sigma=0.25, n=100, seed=1, input_std=std)
    assert stored.radius_raw == pytest.approx([stored.radius * s for s in std])
    smoothed = SmoothedModel(model, sigma=0.25, input_std=std)
    settings = smoothed.settings()
    assert settings["sigma"] == 0.25 and settings["sigma_unit"] == SIGMA_UNIT
    assert settings["radius_raw"] == pytest.approx([smoothed.radius * s for s in std])
    with pytest.raises(InputError, match="input_std must be positive numbers"):
        SmoothedModel(model, sigma=0.25, input_std=(1.0, 0.0, 1.0, 1.0))
    with pytest.raises(InputError, match="region must be one of"):
        certificate.region_abstain_rate("core")


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
    # background or necrotic core: the whole tumour and the core are coin tosses too, but the
    # voxel is certainly not enhancing tumour (neither class is), which the classes cannot say
    assert (certificate.regions["wt"] == ABSTAIN).all()
    assert (certificate.regions["tc"] == ABSTAIN).all()
    assert (certificate.regions["et"] == 0).all()


def test_the_noise_is_fixed_in_input_units_the_same_at_x_and_at_x_plus_delta():
    # class 1 iff the first channel plus its noise is positive: the counts follow from the noise
    model = logits_model(
        lambda x: keras.ops.concatenate(
            [keras.ops.zeros_like(x[..., :1]), x[..., :1], keras.ops.zeros_like(x[..., :2]) - 1e4],
            -1,
        )
    )
    smoothed = SmoothedModel(model, sigma=0.5, n=100, n0=10, batch_size=8)
    x = volume(3)
    delta = np.zeros_like(x)
    delta[np.unravel_index(np.argmax(x), x.shape)] = 0.9 * smoothed.radius  # inside the ball
    moved = x + delta
    assert np.linalg.norm(delta) < smoothed.radius
    assert np.ptp(moved) > np.ptp(x) * 1.01  # the range moved: a range-relative sigma would too
    for stage, samples in (("select", 10), ("estimate", 100)):
        noise = smoothed.noise(SHAPE, seed=5, stage=stage)
        assert noise.shape == (samples, *SHAPE)
        assert noise.std() == pytest.approx(0.5, rel=0.05)  # sigma itself, not sigma x range
        for point in (x, moved):
            expected = ((point[..., 0] + noise[..., 0]) > 0).sum(axis=0)
            counts = smoothed.counts(point, seed=5, stage=stage)
            np.testing.assert_array_equal(counts[..., 1], expected)
            np.testing.assert_array_equal(counts.sum(axis=-1), samples)
    # the certificates of x and x + delta are made with that same noise
    for point in (x, moved):
        certificate = smoothed.certify(point, seed=5)
        guess = ((point[..., 0] + smoothed.noise(SHAPE, 5, "select")[..., 0]) > 0).sum(0) > 5
        ones = ((point[..., 0] + smoothed.noise(SHAPE, 5, "estimate")[..., 0]) > 0).sum(0)
        hits = np.where(guess, ones, 100 - ones)
        np.testing.assert_array_equal(certificate.p_values, binomial_p_values(hits, 100, 0.75))
        assert certificate.sigma == 0.5 and certificate.radius == smoothed.radius
    with pytest.raises(InputError, match="stage must be one of"):
        smoothed.noise(SHAPE, seed=5, stage="guess")


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
    # each noisy copy has its own seed: another batch (or the one chosen from memory) gives
    # the same certificate
    for batch_size in (3, None):
        c = certify(fitted_unet, image, sigma=0.1, n=60, n0=5, seed=3, batch_size=batch_size)
        np.testing.assert_array_equal(c.labels, a.labels)
        np.testing.assert_array_equal(c.p_values, a.p_values)
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
    sigma = 1.0  # one tissue standard deviation
    certificate = certify(fitted_unet, image, sigma=sigma, n=100, n0=10, seed=0, batch_size=10)
    certified = certificate.certified
    assert certified.mean() > 0.5  # most voxels (the background) are certified
    index = np.where(certificate.smoothed == 4, 3, certificate.smoothed)
    attacked = smoothed_pgd_l2(
        fitted_unet, image, index, eps=0.9 * certificate.radius, sigma=sigma, steps=10, samples=8
    )
    # the budget is in the model's input units, as the radius: no intensity range
    assert np.linalg.norm(attacked - image) <= 0.9 * certificate.radius * (1 + 1e-5)
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


def test_an_attack_on_the_smoothed_regions_within_the_radius_leaves_certified_regions_alone(
    fitted_unet, prepared_dir
):
    from keras_advseg.data.prepare import load_prepared

    prepared = load_prepared(prepared_dir)
    image, labels = prepared.load(prepared.test_ids[0])
    sigma = 1.0
    certificate = certify(fitted_unet, image, sigma=sigma, n=100, n0=10, seed=0, batch_size=10)
    decided = {r: certificate.regions[r] != ABSTAIN for r in certificate.regions}
    total = sum(int(d.sum()) for d in decided.values())
    assert total > 0.5 * 3 * labels.size  # most voxel-region pairs (the background) certified
    sides = {r: certificate.region_smoothed[r].astype("float32") for r in certificate.regions}

    def flipped(volume, of):  # certified pairs whose smoothed side differs after the attack
        return sum(
            int((decided[r] & (volume.region_smoothed[r] != (of[r] == 1))).sum()) for r in of
        )

    attacked = smoothed_pgd_l2(
        fitted_unet, image, sides, eps=0.9 * certificate.radius, sigma=sigma, steps=10, samples=8
    )
    assert np.linalg.norm(attacked - image) <= 0.9 * certificate.radius * (1 + 1e-5)
    after = certify(fitted_unet, attacked, sigma=sigma, n=100, n0=10, seed=1, batch_size=10)
    changed = flipped(after, certificate.regions)
    assert changed / total <= 0.01  # the region certificates hold (up to their error)
    far = smoothed_pgd_l2(
        fitted_unet, image, sides, eps=10 * certificate.radius, sigma=sigma, steps=10, samples=8
    )
    moved = certify(fitted_unet, far, sigma=sigma, n=100, n0=10, seed=1, batch_size=10)
    outside = sum(
        int((moved.region_smoothed[r] != certificate.region_smoothed[r]).sum()) for r in sides
    )
    assert outside > 10 * max(changed, 1)  # the attack is real: far more smoothed sides move
    # never less than the class-wise certificate in the same family (3 d tests), any reading of
    # the same family's abstentions: every region the class-wise certificate decides, the
    # region certificate decides the same way
    same_family = rejected(np.stack([certificate.p_values] * 3), certificate.alpha)[0]
    assert not (same_family & ~certificate.certified).any()  # stricter than d tests
    lifted = lift(np.where(same_family, certificate.labels, ABSTAIN).astype(np.uint8))
    worst_region = region_certified_dice(labels, certificate.regions, reading="worst")
    worst_class = region_certified_dice(labels, lifted, reading="worst")
    for r in certificate.regions:
        assert (certificate.region_p_values[r] <= certificate.p_values * (1 + 1e-12)).all()
        known = lifted[r] != ABSTAIN
        np.testing.assert_array_equal(certificate.regions[r][known], lifted[r][known])
        assert worst_region[r] >= worst_class[r]


def reference_smoothed_pgd_l2(model, x, target, *, eps, sigma, steps, samples, seed):
    """The attack on the smoothed labels written out in plain TensorFlow: the fused softmax
    cross-entropy of ``target`` averaged over the noisy copies, a step of ``2.5 eps / steps``
    along the gradient divided by its l2 norm, the l2 projection onto the eps-ball."""
    import tensorflow as tf

    x0 = tf.constant(x[None])
    onehot = tf.repeat(tf.one_hot(target[None], 4), samples, 0)
    x_k = x0
    for k in range(steps):
        noise = tf.random.stateless_normal((samples, *x.shape), seed=tf.stack([seed, k]))
        with tf.GradientTape() as tape:
            tape.watch(x_k)
            logits = model(x_k + sigma * noise, training=False)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))
        g = tape.gradient(loss, x_k)
        x_k = x_k + (2.5 * eps / steps) * g / tf.maximum(tf.norm(g), 1e-12)
        delta = x_k - x0
        x_k = x0 + delta * tf.minimum(1.0, eps / tf.maximum(tf.norm(delta), 1e-12))
    return x_k.numpy()[0]


def test_the_smoothed_attack_is_the_attacks_l2_step_on_their_cross_entropy():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Conv3D(6, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv3D(4, 3, padding="same")(hidden))
    x = volume()
    target = np.random.default_rng(1).integers(0, 4, size=SHAPE[:3])
    settings = dict(eps=1.5, sigma=0.5, steps=5, samples=4, seed=3)
    attacked = smoothed_pgd_l2(model, x, target, **settings)
    expected = reference_smoothed_pgd_l2(model, x, target, **settings)
    # the same numbers up to float32 rounding (the shared CE is a log-softmax, not the fused op)
    np.testing.assert_allclose(attacked, expected, rtol=0, atol=1e-5)
    assert np.linalg.norm(attacked - x) == pytest.approx(1.5, rel=1e-5)  # on the ball's surface
    np.testing.assert_array_equal(smoothed_pgd_l2(model, x, target, **settings), attacked)
    moved = smoothed_pgd_l2(model, x, target, **{**settings, "seed": 4})
    assert not np.array_equal(moved, attacked)  # the seed draws the noise


REGION_CLASSES = {"wt": {1, 2, 3}, "tc": {1, 3}, "et": {3}}  # class indices (3 is label 4)


def holm_by_hand(p, alpha):
    """Holm's step-down procedure, written out: reject the smallest p-values in turn while the
    i-th (from 0) is at most alpha / (m - i)."""
    flat = list(np.ravel(p))
    order = sorted(range(len(flat)), key=lambda i: flat[i])
    result = np.zeros(len(flat), bool)
    for rank, i in enumerate(order):
        if flat[i] > alpha / (len(flat) - rank):
            break
        result[i] = True
    return result.reshape(np.shape(p))


def simulated_counts(seed, voxels=(6, 6, 5), n=100, n0=10):
    """Selection and estimation class counts of voxels whose class probabilities are drawn at
    random: some sure of one class, some split between two tumour classes, some uncertain."""
    rng = np.random.default_rng(seed)
    m = int(np.prod(voxels))
    concentration = rng.choice([0.05, 0.3, 2.0], size=m)
    probabilities = np.stack([rng.dirichlet([a] * 4) for a in concentration])
    split = rng.random(m) < 0.3  # half necrotic core, half enhancing: certainly tumour core
    probabilities[split] = [0.02, 0.49, 0.0, 0.49]
    select = np.stack([rng.multinomial(n0, p) for p in probabilities]).reshape(*voxels, 4)
    counts = np.stack([rng.multinomial(n, p) for p in probabilities]).reshape(*voxels, 4)
    return select, counts


def test_region_certificates_are_scipys_binomial_tests_under_one_holm_correction():
    select, counts = simulated_counts(0)
    guess = np.argmax(select, axis=-1)
    regions, smoothed, p_values = region_certificates(counts, guess, n=100, tau=0.75, alpha=0.01)
    expected_p = {}
    for r, classes in REGION_CLASSES.items():
        expected_p[r] = np.zeros(guess.shape)
        for v in np.ndindex(guess.shape):
            inside = sum(int(counts[v][c]) for c in classes)
            side = int(guess[v]) in classes
            hits = inside if side else 100 - inside
            expected_p[r][v] = stats.binomtest(hits, 100, 0.75, alternative="greater").pvalue
        np.testing.assert_allclose(p_values[r], expected_p[r], rtol=1e-9)
        np.testing.assert_array_equal(smoothed[r], 2 * counts[..., sorted(classes)].sum(-1) > 100)
    passed = holm_by_hand(np.stack([expected_p[r] for r in REGION_CLASSES]), 0.01)
    for i, (r, classes) in enumerate(REGION_CLASSES.items()):
        side = np.isin(guess, sorted(classes)).astype(np.uint8)
        np.testing.assert_array_equal(regions[r], np.where(passed[i], side, ABSTAIN))
    assert 0 < passed.sum() < passed.size  # the correction certified some and not all


def test_region_certificates_never_certify_less_than_the_class_wise_one_at_the_same_family():
    """The class-wise certificate decides a region for every voxel it certifies (the label is in
    it or not). Tested in the same family (each class test counted once per region, 3 d tests),
    the region certificate decides all of those the same way, since the region's side follows the
    guessed class and counts at least that class's votes; so its Dice is never lower when an
    abstention counts as wrong on both sides. Against the class-wise certificate at its own
    family of d tests, or when an abstention outside the truth costs nothing (SegCertify's
    reading), it can be lower: the last part shows how."""
    rng = np.random.default_rng(1)
    for seed in range(5):
        select, counts = simulated_counts(seed, voxels=(10, 10, 8))
        guess = np.argmax(select, axis=-1)
        hits = np.take_along_axis(counts, guess[..., None], axis=-1)[..., 0]
        p_class = binomial_p_values(hits, 100, 0.75)
        regions, _, p_region = region_certificates(counts, guess, n=100, tau=0.75, alpha=0.01)
        same_family = holm_by_hand(np.stack([p_class] * 3), 0.01)[0]
        labels = np.where(same_family, np.where(guess == 3, 4, guess), ABSTAIN).astype(np.uint8)
        lifted = lift(labels)
        truth = rng.choice(np.array([0, 1, 2, 4], np.uint8), size=guess.shape)
        worst_region = region_certified_dice(truth, regions, reading="worst")
        worst_class = region_certified_dice(truth, lifted, reading="worst")
        for r in REGION_CLASSES:
            assert (p_region[r] <= p_class).all()
            decided = lifted[r] != ABSTAIN
            np.testing.assert_array_equal(regions[r][decided], lifted[r][decided])
            assert worst_region[r] >= worst_class[r]
        # the split voxels: the classes abstain on them, the tumour core certifies them
        assert ((regions["tc"] == 1) & (labels == ABSTAIN)).any()
    # SegCertify's reading: a voxel outside the truth, split between core and oedema, is
    # certified in the whole tumour (a real error of the smoothed model) where the classes abstain
    counts = np.zeros((2, 1, 1, 4), int)
    counts[0, 0, 0] = [0, 100, 0, 0]  # certainly necrotic core
    counts[1, 0, 0] = [0, 50, 50, 0]  # certainly tumour, necrotic core or oedema
    guess = np.array([1, 1]).reshape(2, 1, 1)
    regions, _, _ = region_certificates(counts, guess, n=100, tau=0.75, alpha=0.01)
    truth = np.array([1, 0], np.uint8).reshape(2, 1, 1)
    classes = np.array([1, ABSTAIN], np.uint8).reshape(2, 1, 1)
    assert regions["wt"].ravel().tolist() == [1, 1]
    assert region_certified_dice(truth, regions)["wt"] == pytest.approx(2 / 3)
    assert certified_dice(truth, classes)["wt"] == 1.0
    assert region_certified_dice(truth, regions, reading="worst")["wt"] == pytest.approx(2 / 3)
    assert region_certified_dice(truth, lift(classes), reading="worst")["wt"] == pytest.approx(
        2 / 3
    )


def test_region_dice_counts_abstentions_as_segcertify_does_and_the_worst_reading_by_hand():
    rng = np.random.default_rng(2)
    truth = rng.choice(np.array([0, 1, 2, 4], np.uint8), size=(9, 8, 7))
    certified = rng.choice(np.array([0, 1, 2, 4, ABSTAIN], np.uint8), size=truth.shape)
    # the class-wise certificate lifted to regions scores what certified_dice scores
    assert region_certified_dice(truth, lift(certified)) == pytest.approx(
        certified_dice(truth, certified)
    )
    # the worst reading by hand: 1 inside the truth, 0 outside; an abstention is the other one
    wt_truth = np.isin(truth, [1, 2, 4])
    lifted = lift(certified)["wt"]
    worst = np.where(lifted == ABSTAIN, ~wt_truth, lifted == 1)
    expected = 2 * np.sum(worst & wt_truth) / (np.sum(worst) + np.sum(wt_truth))
    assert region_certified_dice(truth, lift(certified), "worst")["wt"] == pytest.approx(expected)
    with pytest.raises(InputError, match="reading must be one of"):
        region_certified_dice(truth, lift(certified), reading="strict")
    with pytest.raises(InputError, match=r"regions\['wt'\] must have the labels' shape"):
        region_certified_dice(truth[:2], lift(certified))


def test_certify_config_checks_its_settings_and_holds_the_command_defaults():
    import dataclasses

    from keras_advseg.certification import CertifyConfig

    config = CertifyConfig()
    assert config.sigmas == (0.25, 0.5, 1.0) and config.correction == "holm"
    assert (config.n, config.n0, config.tau, config.alpha, config.batch_size) == (
        100,
        10,
        0.75,
        0.001,
        None,
    )
    assert config.chosen(["a", "b", "c"]) == ["a", "b", "c"]
    assert CertifyConfig(subjects=2).chosen(["a", "b", "c"]) == ["a", "b"]
    assert CertifyConfig(sigmas=[0.5]).sigmas == (0.5,)
    refused = [
        ({"sigmas": ()}, "sigmas must name at least one noise level"),
        ({"sigmas": (0.5, -1.0)}, "sigma must be a positive number. Received: sigma=-1.0"),
        ({"n": 0}, "n must be an integer from 1 to 1000000. Received: n=0"),
        ({"tau": 1.0}, "tau must be in [0.5, 1). Received: tau=1.0"),
        ({"correction": "sidak"}, "correction must be one of ('holm', 'bonferroni')"),
        ({"subjects": -1}, "subjects must be an integer >= 0. Received: subjects=-1"),
    ]
    for settings, message in refused:
        with pytest.raises(InputError, match=re.escape(message)):
            CertifyConfig(**settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n = 5


def test_certify_subjects_is_certify_per_subject_and_sigma_each_with_its_own_seed():
    from keras_advseg.certification import CertifyConfig, certify_subjects
    from keras_advseg.certification.subjects import ROW_FIELDS

    model = logits_model(lambda x: 3.0 * x)  # the class is the largest channel: noise moves it
    rng = np.random.default_rng(5)
    volumes = [
        (f"s{i}", volume(i), rng.choice([0, 1, 2, 4], size=SHAPE[:3]).astype("uint8"))
        for i in range(2)
    ]
    config = CertifyConfig(sigmas=(0.25, 0.5), n=60, n0=5, seed=7)
    calls = []
    result = certify_subjects(model, iter(volumes), config, on_volume=lambda: calls.append(1))
    assert len(calls) == 4 and len(result.rows) == 4
    assert [(r["subject"], r["sigma"]) for r in result.rows] == [
        ("s0", 0.25),
        ("s0", 0.5),
        ("s1", 0.25),
        ("s1", 0.5),
    ]
    assert all(set(r) == set(ROW_FIELDS) for r in result.rows)
    for i, (_, image, labels) in enumerate(volumes):
        for k, sigma in enumerate(config.sigmas):
            expected = certify(
                model, image, sigma=sigma, n=60, n0=5, seed=7 * 1_000_003 + i * 1009 + k
            )
            got = result.rows[2 * i + k]
            assert got["certified_dice_wt"] == certified_dice(labels, expected.labels)["wt"]
            assert got["abstain_rate"] == expected.abstain_rate()
    means = result.by_sigma()
    assert list(means) == ["0.25", "0.5"]
    assert means["0.5"]["abstain_rate"] == pytest.approx(
        np.mean([r["abstain_rate"] for r in result.rows if r["sigma"] == 0.5])
    )
    assert means["0.25"]["radius_raw_t1"] is None  # no raw-intensity statistics given
    assert result.example["subject"] == "s0" and set(result.example["certificates"]) == {0.25, 0.5}
    assert result.settings()["input_std"] is None and result.settings()["seed"] == 7


def test_the_batch_is_chosen_from_memory_and_a_batch_that_does_not_fit_is_refused(monkeypatch):
    """The forward pass's memory, read from the traced graph, against the activations counted
    by hand; the batch chosen from ``ADVSEG_MEMORY_GB``; the refusal names the largest batch."""
    import tensorflow as tf

    from keras_advseg.certification.memory import (
        MAX_CHOSEN_BATCH,
        MEMORY_SHARE,
        choose_batch,
        forward_memory,
        peak_live_bytes,
    )

    # a chain: each tensor is freed after the next uses it, so the peak is two neighbours
    @tf.function
    def chain(x):
        y = tf.tile(x, [1, 4])  # 4x the input
        z = tf.tile(y, [1, 2])  # 8x, y still alive
        return tf.reduce_sum(z)

    graph = chain.get_concrete_function(tf.TensorSpec((10, 25), tf.float32)).graph
    x_bytes = 10 * 25 * 4
    assert 12 * x_bytes <= peak_live_bytes(graph) <= 13 * x_bytes

    # two convolutions of 8 filters: per copy, at least both 8-channel outputs of 8^3 (the
    # second is computed while the first is alive) and at most every tensor of the pass
    inputs = keras.Input(SHAPE)
    hidden = keras.layers.Conv3D(8, 3, padding="same")(inputs)
    outputs = keras.layers.Conv3D(4, 3, padding="same")(keras.layers.ReLU()(hidden))
    model = keras.Model(inputs, outputs)
    memory = forward_memory(model, SHAPE)
    feature_map = 8**3 * 8 * 4
    assert 2 * feature_map <= memory.per_copy <= 5 * feature_map
    assert memory.fixed <= sum(w.numpy().nbytes for w in model.weights) + memory.per_copy

    # room for exactly 7 copies in the share of the memory a batch may plan for
    gib = (memory.fixed + 7.5 * memory.per_copy) / MEMORY_SHARE / 2**30
    monkeypatch.setenv("ADVSEG_MEMORY_GB", repr(gib))
    assert choose_batch(model, SHAPE, samples=100) == 7
    monkeypatch.setenv("ADVSEG_MEMORY_GB", "1000")
    assert choose_batch(model, SHAPE, samples=100) == MAX_CHOSEN_BATCH  # room to spare
    monkeypatch.setenv("ADVSEG_MEMORY_GB", repr(gib))
    assert choose_batch(model, SHAPE, samples=5) == 5  # never more than the samples
    assert choose_batch(model, SHAPE, samples=100, requested=6) == 6
    with pytest.raises(InputError, match=r"batch_size=8 needs .* use batch_size <= 7 \(or"):
        choose_batch(model, SHAPE, samples=100, requested=8)
    # certify takes the chosen batch; a smoothed model asked for too many is refused
    assert SmoothedModel(model, sigma=0.5, n=100, n0=10).batch_for(volume()) == 7
    with pytest.raises(InputError, match="use batch_size <= 7"):
        SmoothedModel(model, sigma=0.5, n=100, n0=10, batch_size=50).certify(volume(), seed=0)
    monkeypatch.setenv("ADVSEG_MEMORY_GB", repr(memory.per_copy / 2**30))
    with pytest.raises(InputError, match="not even one copy fits"):
        choose_batch(model, SHAPE, samples=100)
    monkeypatch.setenv("ADVSEG_MEMORY_GB", "lots")
    with pytest.raises(InputError, match="ADVSEG_MEMORY_GB must be a positive number"):
        choose_batch(model, SHAPE, samples=100)
