"""Workflows: everything that touches MLflow and output folders, one module per command.

``train`` (``advseg train``), ``evaluate`` (``advseg evaluate``), ``compare``
(``advseg compare``), ``reproduce`` and ``report`` (``advseg reproduce``). The
CLI calls these; they call the training and evaluation layers.
"""
