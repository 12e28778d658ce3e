"""The one exception type the data layer raises for bad input."""


class DataError(ValueError):
    """Bad or unreadable input data.

    The message always names the offending file or folder and says what was
    expected, so the CLI can print it as a single line.
    """
