"""keras-advseg: adversarial robustness of medical-image segmentation networks."""

__version__ = "0.1.0"
