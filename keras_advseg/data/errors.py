"""The one exception type the data layer raises for bad input."""

from keras_advseg.errors import AdvsegError


class DataError(AdvsegError, ValueError):
    """Bad or unreadable input data.

    The message always names the offending file or folder and says what was
    expected, so the CLI can print it as a single line.
    """
