"""BraTS region Dice, a Keras Dice metric, and input image-quality metrics.

Regions (BraTS convention): whole tumour WT = labels {1, 2, 4}, tumour core
TC = {1, 4}, enhancing tumour ET = {4}.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_advseg.vocabulary import REGION_CLASS_INDICES, REGION_LABELS


def brats_dice(true_labels, pred_labels, *, empty: float = 1.0) -> dict[str, np.ndarray]:
    """Dice of WT, TC and ET per subject, on BraTS label maps.

    Args:
        true_labels: Reference label maps ``(X, Y, Z)`` or ``(B, X, Y, Z)``
            with values 0/1/2/4.
        pred_labels: Predicted label maps, same shape.
        empty: Dice when both reference and prediction of a region are empty
            (1.0: a correct "no tumour"; pass ``float("nan")`` to leave such
            cases out of averages). An empty reference with a non-empty
            prediction scores 0.

    Returns:
        ``{"wt", "tc", "et"}`` -> float64 arrays ``(B,)`` (a scalar array for
        a single volume).

    Raises:
        ValueError: shapes differ.
    """
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    if true_labels.shape != pred_labels.shape:
        raise ValueError(
            f"label maps must have the same shape. Received: {true_labels.shape} and "
            f"{pred_labels.shape}"
        )
    single = true_labels.ndim == 3
    if single:
        true_labels, pred_labels = true_labels[None], pred_labels[None]
    axes = tuple(range(1, true_labels.ndim))
    scores = {}
    for region, labels in REGION_LABELS.items():
        t, p = np.isin(true_labels, labels), np.isin(pred_labels, labels)
        overlap = np.sum(t & p, axis=axes, dtype=np.float64)
        total = np.sum(t, axis=axes, dtype=np.float64) + np.sum(p, axis=axes, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(total > 0, 2 * overlap / np.maximum(total, 1), empty)
        scores[region] = dice[0] if single else dice
    return scores


def logits_to_probabilities(logits, temperature: float = 1.0):
    """Softmax over the last axis of ``logits / temperature`` (eq. 4)."""
    return ops.softmax(ops.cast(logits, "float32") / temperature, axis=-1)


def probabilities_to_labels(probabilities):
    """Arg-max class -> BraTS label map (index 3 becomes label 4), uint8."""
    index = ops.argmax(probabilities, axis=-1)
    return ops.cast(ops.where(index == 3, 4, index), "uint8")


def traced_inference(model):
    """``model`` as one traced inference graph: the same logits as ``model(x, training=False)``,
    several times faster per call than eager execution (validation, evaluation)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(images, training=False):
        return model(images, training=False)

    return forward


def predict_labels(model, images, temperature: float = 1.0) -> np.ndarray:
    """Runs ``model`` (logits) and returns BraTS label maps as a NumPy array."""
    logits = model(images, training=False)
    return ops.convert_to_numpy(
        probabilities_to_labels(logits_to_probabilities(logits, temperature))
    )


@keras.saving.register_keras_serializable(package="keras_advseg")
class BraTSDice(keras.metrics.Metric):
    """Mean hard Dice of one BraTS region over samples, from logits and one-hot targets.

    Args:
        region: ``"wt"``, ``"tc"`` or ``"et"``.
        empty: Dice of a sample whose region is empty in both reference and prediction.
    """

    def __init__(self, region: str = "wt", empty: float = 1.0, name: str | None = None, **kwargs):
        if region not in REGION_LABELS:
            raise ValueError(
                f"region must be one of {sorted(REGION_LABELS)}. Received: region={region!r}"
            )
        super().__init__(name=name or f"dice_{region}", **kwargs)
        self.region = region
        self.empty = float(empty)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        indices = list(REGION_CLASS_INDICES[self.region])
        y_true = ops.cast(y_true, "float32")
        predicted = ops.one_hot(ops.argmax(y_pred, axis=-1), ops.shape(y_pred)[-1])
        batch = ops.shape(y_true)[0]
        t = ops.reshape(ops.sum(ops.take(y_true, indices, axis=-1), axis=-1), (batch, -1))
        p = ops.reshape(ops.sum(ops.take(predicted, indices, axis=-1), axis=-1), (batch, -1))
        overlap = ops.sum(t * p, axis=1)
        total = ops.sum(t, axis=1) + ops.sum(p, axis=1)
        dice = ops.where(total > 0, 2 * overlap / ops.maximum(total, 1.0), self.empty)
        self.total.assign_add(ops.sum(dice))
        self.count.assign_add(ops.cast(batch, "float32"))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "region": self.region, "empty": self.empty}


def image_quality(clean, perturbed) -> dict[str, float]:
    """PSNR, SSIM and RMSE of a perturbed input against the clean one (paper Table 1).

    The data range is that of the clean volume (``max - min`` over all
    modalities), so an attack's budget relative to the image's range decides
    the scores. SSIM is computed in 3-D per modality (scikit-image, 7-voxel
    window) and averaged over modalities.

    Args:
        clean: ``(X, Y, Z, C)`` volume.
        perturbed: Same shape.

    Returns:
        ``{"psnr": dB, "ssim": [-1, 1], "rmse": intensity units}``; PSNR is
        ``inf`` for identical volumes.

    Raises:
        ValueError: shapes differ or the clean volume is constant.
    """
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

    clean = np.asarray(clean, np.float64)
    perturbed = np.asarray(perturbed, np.float64)
    if clean.shape != perturbed.shape:
        raise ValueError(
            f"volumes must have the same shape. Received: {clean.shape} and {perturbed.shape}"
        )
    data_range = float(clean.max() - clean.min())
    if data_range <= 0:
        raise ValueError("the clean volume is constant; PSNR and SSIM need a data range > 0")
    mse = float(mean_squared_error(clean, perturbed))
    # scikit-image's PSNR divides by zero for identical volumes; inf is the limit.
    psnr = (
        float("inf")
        if mse == 0
        else peak_signal_noise_ratio(clean, perturbed, data_range=data_range)
    )
    ssim = structural_similarity(clean, perturbed, data_range=data_range, channel_axis=-1)
    return {"psnr": float(psnr), "ssim": float(ssim), "rmse": float(np.sqrt(mse))}


def hausdorff95(reference, prediction, spacing=(1.0, 1.0, 1.0)) -> float:
    """95th percentile of the symmetric surface distance between two masks, in millimetres.

    Surface voxels are those with a 6-connected background neighbour; the distances
    from each surface to the other (Euclidean distance transform, scipy) are pooled
    and their 95th percentile is taken, as MedPy's ``hd95`` does.

    Empty masks follow the BraTS convention: both empty gives 0; exactly one empty
    gives the diagonal of the volume in mm (373.13 for BraTS's 240 x 240 x 155 grid
    at 1 mm, the value the challenge uses).

    Args:
        reference, prediction: Boolean masks of the same shape.
        spacing: Voxel size in mm along each axis.

    Raises:
        ValueError: shapes differ.
    """
    from scipy import ndimage

    reference, prediction = np.asarray(reference, bool), np.asarray(prediction, bool)
    if reference.shape != prediction.shape:
        raise ValueError(
            f"masks must have the same shape. Received: {reference.shape} and {prediction.shape}"
        )
    spacing = tuple(float(s) for s in spacing)
    if not reference.any() and not prediction.any():
        return 0.0
    if not reference.any() or not prediction.any():
        return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(reference.shape, spacing))))
    structure = ndimage.generate_binary_structure(reference.ndim, 1)

    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)

    ref_surface, pred_surface = surface(reference), surface(prediction)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    distances = np.concatenate([to_pred[ref_surface], to_ref[pred_surface]])
    return float(np.percentile(distances, 95))


def native_scores(true_labels, pred_labels, spacing) -> dict[str, float]:
    """Dice and HD95 (mm) of WT, TC and ET for one subject on its own grid (BraTS labels 0/1/2/4).

    Returns:
        ``{"dice_wt", "dice_tc", "dice_et", "hd95_wt", "hd95_tc", "hd95_et"}``.
    """
    dice = brats_dice(true_labels, pred_labels)
    scores = {f"dice_{region}": float(dice[region]) for region in REGION_LABELS}
    for region, labels in REGION_LABELS.items():
        scores[f"hd95_{region}"] = hausdorff95(
            np.isin(true_labels, labels), np.isin(pred_labels, labels), spacing
        )
    return scores
