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
