"""Segmentation networks: the paper's 3-D/2-D UNet and the slice-wise wrapper."""

from keras_advseg.models.slicewise import SliceWise
from keras_advseg.models.unet import scale_logits, segmentation_heads, unet, unet2d, unet3d

__all__ = ["SliceWise", "scale_logits", "segmentation_heads", "unet", "unet2d", "unet3d"]
