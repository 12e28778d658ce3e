"""The data layer's exception type, defined in :mod:`keras_advseg.errors` with the others."""

from keras_advseg.errors import DataError

__all__ = ["DataError"]
