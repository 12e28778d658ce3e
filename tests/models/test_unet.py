"""UNet structure, the slice-wise wrapper, saving and SavedModel export."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_advseg.models import SliceWise, unet, unet3d


@pytest.mark.parametrize(
    "dims, shape, depth",
    [
        (3, (16, 16, 16, 4), 3),
        (3, (16, 32, 16, 4), 5),
        (3, (8, 8, 8, 2), 2),
        (2, (32, 32, 4), 5),
        (2, (16, 24, 4), 4),
    ],
)
def test_output_shape_is_logits_at_input_resolution(dims, shape, depth):
    model = unet(shape, n_classes=3, base_filters=2, depth=depth, spatial_dims=dims)
    x = np.random.default_rng(0).normal(size=(2,) + shape).astype("float32")
    y = model(x)
    assert y.shape == (2,) + shape[:-1] + (3,)
    assert not np.allclose(keras.ops.sum(y, axis=-1), 1.0)  # logits, not probabilities


def test_paper_structure_block_counts_and_layers():
    model = unet3d((32, 32, 32, 4), dropout=0.3, negative_slope=0.01)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.GroupNormalization)]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    heads = [layer for layer in convs if layer.name.startswith("seg")]
    assert len(norms) == 27  # conv blocks
    assert len(convs) == 30 and len(heads) == 3
    assert all(h.kernel_size == (1, 1, 1) and h.filters == 4 for h in heads)
    assert all(n.groups == n.input.shape[-1] for n in norms)  # instance normalisation
    assert {c.filters for c in convs if not c.name.startswith("seg")} == {16, 32, 64, 128, 256}
    assert all(not c.use_bias for c in convs if not c.name.startswith("seg"))
    encoder = [n for n in norms if n.name.startswith("enc")]
    assert len(encoder) == 15
    slopes = [
        layer.negative_slope for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)
    ]
    assert len(slopes) == 27 and all(s == pytest.approx(0.01) for s in slopes)
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout3D)]
    assert len(drops) == 5 and {d.rate for d in drops} == {0.3}
    pads = {
        layer.name: layer.padding
        for layer in model.layers
        if isinstance(layer, keras.layers.ZeroPadding3D)
    }
    assert pads["enc1_3_pad"] == ((0, 1),) * 3 and pads["enc0_0_pad"] == ((1, 1),) * 3


def test_stride_two_padding_halves_even_sizes():
    model = unet3d((16, 16, 16, 4), base_filters=2, depth=3)
    assert model.get_layer("enc1_3_conv").output.shape[1:4] == (8, 8, 8)
    assert model.get_layer("enc2_6_conv").output.shape[1:4] == (4, 4, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (20, 16, 16, 4)}, r"divisible by 2 \*\* \(depth - 1\) = 16 for depth=5"),
        ({"input_shape": (16, 16, 4), "spatial_dims": 3}, "must have 3 spatial sizes"),
        ({"input_shape": (16, 16, 16, 4), "spatial_dims": 4}, "spatial_dims must be 2 or 3"),
        ({"input_shape": (16, 16, 16, 4), "depth": 1}, "depth must be >= 2"),
        ({"input_shape": (16, 16, 16, 4), "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        (
            {"input_shape": (16, 16, 16, 4), "depth": 3, "n_segmentation_levels": 3},
            "n_segmentation_levels must be",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        unet(**kwargs)


@pytest.mark.parametrize("dims", [3, 2])
def test_scale_logits_multiplies_the_logits_exactly(dims):
    from keras_advseg.models import scale_logits, segmentation_heads

    shape = (16, 16, 16, 4) if dims == 3 else (16, 16, 4)
    network = unet(shape, base_filters=2, depth=3, spatial_dims=dims)
    model = SliceWise(network) if dims == 2 else network
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 16, 4)).astype("float32")
    before = np.asarray(model(x))
    assert [h.name for h in segmentation_heads(model)] == [
        "seg1",
        "seg0",
    ]  # depth 3: two decoder heads
    scale_logits(model, 20.0)
    np.testing.assert_allclose(np.asarray(model(x)), 20.0 * before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="factor must be positive"):
        scale_logits(model, 0.0)
    inputs = keras.Input((4, 4, 4, 1))
    with pytest.raises(ValueError, match="no segmentation heads"):
        segmentation_heads(keras.Model(inputs, keras.layers.Conv3D(2, 1, name="out")(inputs)))
