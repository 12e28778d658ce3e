"""VAFA: tables within their bounds, a change in the DCT domain only, Dice lowered, one trace."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_advseg.attacks.core import logits_function, tracing_count
from keras_advseg.attacks.frequency import dct3, dct_matrix, from_blocks, to_blocks, vafa
from keras_advseg.data.pipeline import one_hot_labels
from keras_advseg.data.prepare import load_prepared
from keras_advseg.errors import InputError
from keras_advseg.metrics import brats_dice, predict_labels


def test_the_block_dct_is_orthonormal_and_blocks_round_trip():
    d = dct_matrix()
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-6)
    x = tf.random.normal((1, 16, 8, 24, 2), seed=0)
    np.testing.assert_allclose(from_blocks(to_blocks(x), tf.shape(x)), x)
    # inside a graph the volume keeps its static shape (a network called on it reuses its trace)
    shapes = []
    tf.function(lambda v: shapes.append(from_blocks(to_blocks(v), tf.shape(v)).shape))(x)
    assert tuple(shapes[0]) == (1, 16, 8, 24, 2)


def test_vafa_quantises_in_the_dct_domain_within_the_table_bounds_and_lowers_dice(
    fitted_unet, prepared_dir
):
    prepared = load_prepared(prepared_dir)
    clean, attacked = [], []
    for subject in prepared.ids("test"):
        image, labels = prepared.load(subject)
        x, y = image[None], one_hot_labels(labels[None])
        x_adv, q = vafa(fitted_unet, x, y, steps=8, q_min=5, q_max=10, return_tables=True)
        q = q.numpy()
        assert q.min() >= 5 and q.max() <= 10 and (q < 10).any()  # the tables moved, in bounds
        # every DCT coefficient of the attacked volume (on the 0-255 scale) is a multiple of q
        lo, span = image.min(), image.max() - image.min()
        coefficients = dct3(to_blocks((x_adv - lo) / span * 255.0), tf.constant(dct_matrix()))
        steps = coefficients.numpy() / q
        np.testing.assert_allclose(steps, np.round(steps), atol=2e-2)
        clean.append(np.mean(list(brats_dice(labels, predict_labels(fitted_unet, x)[0]).values())))
        predicted = predict_labels(fitted_unet, x_adv)[0]
        attacked.append(np.mean(list(brats_dice(labels, predicted).values())))
    assert np.mean(attacked) < np.mean(clean)
    traces = tracing_count(fitted_unet)
    vafa(fitted_unet, x, y, steps=3)
    assert tracing_count(fitted_unet) == traces  # compiled once per model and shape
    # the network inside VAFA's step is the one traced for the attacks' volumes, not a second
    # trace (and backward pass) for volumes of unknown shape
    signatures = [
        f.structured_input_signature[0][0]
        for f in logits_function(fitted_unet)._list_all_concrete_functions()
    ]
    assert signatures and all(spec.shape.is_fully_defined() for spec in signatures)
    with pytest.raises(InputError, match="multiples of 8"):
        vafa(fitted_unet, np.zeros((1, 12, 16, 16, 4), "float32"), y[:, :12])


def reference_block_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """VAFA's SSIM term by hand: per block, a separable 3-voxel Gaussian (sigma 1.5) without
    padding, the SSIM map's mean clipped at 0, then the mean over blocks."""
    from scipy import ndimage

    g = np.exp(-((np.arange(3) - 1.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()

    def blur(v):
        for axis in range(3):
            v = ndimage.correlate1d(v, g, axis=axis, mode="constant")
        return v[1:-1, 1:-1, 1:-1]  # "valid": the window inside the block

    values = []
    for x, y in zip(a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:])):
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        values.append(max(ssim.mean(), 0.0))
    return float(np.mean(values))


def test_block_ssim_is_vafas_ssim_term():
    from keras_advseg.attacks.frequency import block_ssim

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (1, 16, 16, 8, 2)).astype("float32")
    noisy = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype("float32")
    a, b = to_blocks(tf.constant(x), 8), to_blocks(tf.constant(noisy), 8)
    got = float(block_ssim(a, b)[0])
    assert got == pytest.approx(reference_block_ssim(a.numpy(), b.numpy()), rel=1e-4)
    assert float(block_ssim(a, a)[0]) == pytest.approx(1.0, abs=1e-5)
    assert got < 0.97  # noise lowers it


def test_vafa_settings_are_named_and_the_paper_setting_fits_small_volumes(
    fitted_unet, prepared_dir
):
    from keras_advseg.attacks.frequency import fitting_block, run_vafa
    from keras_advseg.config import VAFA_SETTINGS, EvalConfig

    assert VAFA_SETTINGS["paper"].label("paper", 5) == (
        "VAFA paper: 32^3 blocks, q_max 20, 20 steps, Dice - SSIM"
    )
    assert (
        VAFA_SETTINGS["light"].label("light", 5)
        == "VAFA light: 8^3 blocks, q_max 10, 5 steps, Dice"
    )
    assert fitting_block((32, 64, 96), 32) == 32 and fitting_block((16, 16, 16), 32) == 16
    assert fitting_block((24, 16, 16), 32) == 8
    with pytest.raises(InputError, match="vafa_setting"):
        EvalConfig(vafa_setting="strong")
    with pytest.raises(InputError, match="power of 2"):
        vafa(
            fitted_unet,
            np.zeros((1, 16, 16, 16, 4), "float32"),
            np.zeros((1, 16, 16, 16, 4)),
            block=12,
        )

    prepared = load_prepared(prepared_dir)
    image, labels = prepared.load(prepared.ids("test")[0])
    x, y = image[None], one_hot_labels(labels[None]).numpy()
    plain, q_plain = vafa(
        fitted_unet, x, y, steps=6, q_min=5, q_max=20, block=16, return_tables=True
    )
    kept, q_kept = vafa(
        fitted_unet, x, y, steps=6, q_min=5, q_max=20, block=16, ssim=True, return_tables=True
    )
    assert q_kept.shape[-3:] == (16, 16, 16)
    assert np.all((q_kept.numpy() >= 5) & (q_kept.numpy() <= 20))
    # the SSIM term pulls the tables towards a volume closer to the clean one
    lo, span = x.min(), x.max() - x.min()

    def similarity(v):
        from keras_advseg.attacks.frequency import block_ssim

        scale = lambda t: to_blocks(tf.constant((t - lo) / span, tf.float32), 16)  # noqa: E731
        return float(block_ssim(scale(x), scale(np.asarray(v)))[0])

    assert not np.array_equal(q_plain.numpy(), q_kept.numpy())
    assert similarity(kept) >= similarity(plain) - 1e-3
    # the registry's runner runs the named setting (at 16^3 the paper's blocks are 16^3)
    out = run_vafa(fitted_unet, x, y, steps=2, setting="paper")
    assert out.shape == x.shape
