"""The paper's UNet (Isensee et al. 2017 BraTS network), 3-D and 2-D from one builder.

Structure, for ``depth=5`` and ``base_filters=16`` (filters 16, 32, 64, 128, 256):

* conv block = convolution (3^d, no bias) -> instance normalisation
  (``GroupNormalization(groups=-1)``) -> LeakyReLU(``negative_slope``);
* encoder level ``l``: a conv block (stride 2 except at level 0), then a context
  module (conv block, ``SpatialDropout(dropout)``, conv block) added back
  residually: 3 blocks per level, 15 encoder blocks;
* decoder level ``l`` (from ``depth-2`` down to 0): upsampling x2 and a 3^d conv
  block, concatenation with the encoder's output at ``l``, a localisation
  module (3^d conv block, then 1^d conv block): 3 blocks per level, 12 decoder
  blocks;
* three 1^d segmentation convolutions with ``n_classes`` kernels on the three
  finest decoder levels, combined bottom-up by upsampling and addition (the
  paper's "residual links").

That is 27 conv blocks plus 3 segmentation convolutions = 30 convolutions. The
paper says "28 convolutional blocks"; its Fig. 1 does not resolve the
difference (one reading counts the two 1^d localisation convolutions of the
finest levels differently). We build the structure described in its text,
which is the Isensee 2017 network.

The model returns LOGITS ``(..., n_classes)``: the softmax (with temperature,
eq. 4) is applied by losses, metrics and inference, so distillation and
logit-level attacks can use the logits.

Padding is explicit. The paper's "1 column left, 2 right" cannot keep the size
of a 3x3x3 convolution: with ``n`` inputs it gives ``n + 3 - 3 + 1 = n + 1``
outputs at stride 1 and ``floor(n / 2) + 1`` at stride 2. We pad like
TensorFlow's ``'same'``, which the Isensee Keras model used:

* stride 1: 1 zero before and 1 after each spatial axis -> ``n`` outputs;
* stride 2 on even ``n``: 0 before and 1 after -> ``(n + 1 - 3) // 2 + 1 = n / 2``.
"""

from __future__ import annotations

import keras
from keras import layers

_DIM_LAYERS = {
    2: (layers.Conv2D, layers.ZeroPadding2D, layers.UpSampling2D, layers.SpatialDropout2D),
    3: (layers.Conv3D, layers.ZeroPadding3D, layers.UpSampling3D, layers.SpatialDropout3D),
}


def unet(
    input_shape: tuple[int | None, ...],
    n_classes: int = 4,
    base_filters: int = 16,
    depth: int = 5,
    dropout: float = 0.3,
    negative_slope: float = 0.01,
    spatial_dims: int = 3,
    n_segmentation_levels: int | None = None,
    name: str | None = None,
) -> keras.Model:
    """Builds the Isensee 2017 UNet (the paper's network) for 2-D or 3-D input.

    Args:
        input_shape: ``(X, Y, Z, C)`` for 3-D or ``(X, Y, C)`` for 2-D; spatial
            sizes must be divisible by ``2 ** (depth - 1)`` (None allowed).
        n_classes: Output channels (BraTS: 4).
        base_filters: Filters at the first level; doubled at every level.
        depth: Number of resolution levels (paper: 5).
        dropout: Spatial dropout rate in the context modules (paper: 0.3).
        negative_slope: LeakyReLU slope (Isensee 2017: 0.01).
        spatial_dims: 2 or 3.
        n_segmentation_levels: Decoder levels with a segmentation head (paper: 3;
            default ``min(3, depth - 1)``).
        name: Model name (default ``unet{spatial_dims}d``).

    Returns:
        A functional ``keras.Model`` mapping images to logits ``(..., n_classes)``.

    Raises:
        ValueError: an argument is out of range or the input size is not
            divisible by ``2 ** (depth - 1)``.
    """
    if spatial_dims not in _DIM_LAYERS:
        raise ValueError(f"spatial_dims must be 2 or 3. Received: spatial_dims={spatial_dims}")
    if len(input_shape) != spatial_dims + 1:
        raise ValueError(
            f"input_shape must have {spatial_dims} spatial sizes and a channel axis for "
            "spatial_dims="
            f"{spatial_dims}. Received: input_shape={tuple(input_shape)}"
        )
    if depth < 2:
        raise ValueError(f"depth must be >= 2. Received: depth={depth}")
    if n_segmentation_levels is None:
        n_segmentation_levels = min(3, depth - 1)
    if not 1 <= n_segmentation_levels <= depth - 1:
        raise ValueError(
            "n_segmentation_levels must be in [1, depth - 1]. Received: "
            f"n_segmentation_levels={n_segmentation_levels}"
        )
    if n_classes < 1 or base_filters < 1:
        raise ValueError(
            f"n_classes and base_filters must be >= 1. Received: n_classes={n_classes}, "
            f"base_filters={base_filters}"
        )
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    factor = 2 ** (depth - 1)
    for size in input_shape[:-1]:
        if size is not None and size % factor:
            raise ValueError(
                f"spatial sizes must be divisible by 2 ** (depth - 1) = {factor} for "
                f"depth={depth}. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    conv, pad, upsample, spatial_dropout = _DIM_LAYERS[spatial_dims]
    counter = iter(range(10_000))

    def conv_block(x, filters, kernel=3, strides=1, tag="block"):
        index = next(counter)
        if kernel == 3:
            padding = 1 if strides == 1 else ((0, 1),) * spatial_dims
            x = pad(padding, name=f"{tag}{index}_pad")(x)
        x = conv(
            filters,
            kernel,
            strides=strides,
            padding="valid",
            use_bias=False,
            name=f"{tag}{index}_conv",
        )(x)
        x = layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"{tag}{index}_norm")(x)
        return layers.LeakyReLU(negative_slope=negative_slope, name=f"{tag}{index}_act")(x)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    skips = []
    for level in range(depth):
        filters = base_filters * 2**level
        x = conv_block(x, filters, strides=1 if level == 0 else 2, tag=f"enc{level}_")
        context = conv_block(x, filters, tag=f"enc{level}_context")
        context = spatial_dropout(dropout, name=f"enc{level}_dropout")(context)
        context = conv_block(context, filters, tag=f"enc{level}_context")
        x = layers.Add(name=f"enc{level}_residual")([x, context])
        skips.append(x)

    segmentations = []
    for level in range(depth - 2, -1, -1):
        filters = base_filters * 2**level
        x = upsample(2, name=f"dec{level}_upsample")(x)
        x = conv_block(x, filters, tag=f"dec{level}_up")
        x = layers.Concatenate(name=f"dec{level}_concat")([skips[level], x])
        x = conv_block(x, filters, tag=f"dec{level}_local")
        x = conv_block(x, filters, kernel=1, tag=f"dec{level}_local")
        if level < n_segmentation_levels:
            segmentations.append(conv(n_classes, 1, name=f"seg{level}")(x))

    logits = segmentations[0]
    for level, segmentation in zip(range(n_segmentation_levels - 2, -1, -1), segmentations[1:]):
        logits = upsample(2, name=f"seg{level + 1}_upsample")(logits)
        logits = layers.Add(name=f"seg{level}_sum")([logits, segmentation])
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(inputs, logits, name=name or f"unet{spatial_dims}d")


def unet3d(input_shape=(128, 128, 128, 4), **kwargs) -> keras.Model:
    """The paper's 3-D UNet: :func:`unet` with ``spatial_dims=3``."""
    return unet(input_shape, spatial_dims=3, **kwargs)


def unet2d(input_shape=(128, 128, 4), **kwargs) -> keras.Model:
    """The paper's 2-D UNet for axial slices: :func:`unet` with ``spatial_dims=2``."""
    return unet(input_shape, spatial_dims=2, **kwargs)


def segmentation_heads(network: keras.Model) -> list:
    """The 1x1 convolutions ``seg0``, ``seg1``, ... whose (upsampled) sum is the UNet's logits.

    Raises:
        ValueError: ``network`` has no segmentation heads (not a :func:`unet`).
    """
    network = getattr(network, "slice_model", network)
    heads = [layer for layer in network.layers if layer.name.startswith("seg") and layer.weights]
    if not heads:
        raise ValueError(
            f"{network.name}: no segmentation heads (layers seg0, seg1, ...); expected a UNet"
        )
    return heads


def scale_logits(network: keras.Model, factor: float) -> keras.Model:
    """Multiplies the UNet's logits by ``factor`` in place, by scaling every head's kernel and bias.

    The logits are a sum of upsampled linear heads, so the result is exactly
    ``factor * network(x)``: a network trained at temperature 1 becomes the
    same function at temperature ``factor`` (``softmax(factor * z / factor)``),
    which is how a teacher trained at one temperature serves distillation at
    another (eq. 4).

    Returns:
        ``network``.

    Raises:
        ValueError: ``factor <= 0``, or no segmentation heads.
    """
    if factor <= 0:
        raise ValueError(f"factor must be positive. Received: factor={factor}")
    for layer in segmentation_heads(network):
        layer.set_weights([weight * factor for weight in layer.get_weights()])
    return network
