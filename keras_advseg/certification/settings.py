"""What a certification runs, checked once: randomized smoothing's settings and their defaults.

Pure Python with no TensorFlow import, so the CLI reads the defaults here (as it reads
:class:`~keras_advseg.config.EvalConfig`'s) without starting TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_advseg.errors import InputError, is_finite_number
from keras_advseg.vocabulary import CORRECTIONS


def check_settings(sigma, n, n0, tau, alpha, batch_size) -> None:
    """Checks one smoothed model's settings (:class:`~keras_advseg.certification.SmoothedModel`).

    Raises:
        InputError: naming the first setting out of range.
    """

    def count(v, high):
        return is_finite_number(v) and int(v) == v and 1 <= v <= high

    checks = (
        ("sigma", sigma, lambda v: is_finite_number(v) and v > 0, "a positive number"),
        ("n", n, lambda v: count(v, MAX_SAMPLES), f"an integer from 1 to {MAX_SAMPLES}"),
        ("n0", n0, lambda v: count(v, MAX_SAMPLES), f"an integer from 1 to {MAX_SAMPLES}"),
        ("tau", tau, lambda v: is_finite_number(v) and 0.5 <= v < 1, "in [0.5, 1)"),
        ("alpha", alpha, lambda v: is_finite_number(v) and 0 < v < 1, "in (0, 1)"),
        (
            "batch_size",
            batch_size,
            lambda v: v is None or count(v, MAX_SAMPLES),
            f"None (chosen from memory) or an integer from 1 to {MAX_SAMPLES}",
        ),
    )
    for name, value, ok, expected in checks:
        if not ok(value):
            raise InputError(f"{name} must be {expected}. Received: {name}={value!r}")


MAX_SAMPLES = 1_000_000
"""The most noise samples (``n``, ``n0``) or copies per batch a certificate may ask for:
SegCertify uses 100 to 1000; a million of the smallest volume is already hours of forward
passes."""


def check_correction(correction: str) -> None:
    """Raises InputError unless ``correction`` is one of :data:`~keras_advseg.vocabulary.CORRECTIONS`."""
    if correction not in CORRECTIONS:
        raise InputError(
            f"correction must be one of {CORRECTIONS}. Received: correction={correction!r}"
        )


SMOOTHING_FIELDS = ("n", "n0", "tau", "alpha", "correction", "batch_size")
"""The fields a :class:`CertifyConfig` shares with each of its smoothed models (same defaults)."""


@dataclass(frozen=True)
class CertifyConfig:
    """What ``advseg certify`` certifies: every subject at every sigma (the defaults are the CLI's).

    Attributes:
        sigmas: Noise standard deviations in the model's input units (standardised intensities:
            multiples of each sequence's tissue standard deviation), the same for every volume.
        n: Noisy samples counted per volume for the test (SegCertify: 100 to 1000).
        n0: Noisy samples that choose each voxel's class.
        tau: The class probability a voxel must provably exceed, in [0.5, 1).
        alpha: Family-wise error of each certificate, in (0, 1).
        correction: Multiple-testing correction over the voxels: ``holm`` or ``bonferroni``.
        batch_size: Noisy copies per forward pass; None: the most that fit in memory. The
            certificates do not depend on it.
        seed: Seed of the noise (each subject and sigma its own stream).
        subjects: Certify the first N subjects (0: all).

    Raises:
        InputError: no sigma, or a setting out of range (named, with the value received).
    """

    sigmas: tuple[float, ...] = (0.25, 0.5, 1.0)
    n: int = 100
    n0: int = 10
    tau: float = 0.75
    alpha: float = 0.001
    correction: str = "holm"
    batch_size: int | None = None
    seed: int = 0
    subjects: int = 0

    def __post_init__(self):
        object.__setattr__(self, "sigmas", tuple(self.sigmas))
        if not self.sigmas:
            raise InputError("sigmas must name at least one noise level. Received: sigmas=()")
        for sigma in self.sigmas:
            check_settings(sigma, self.n, self.n0, self.tau, self.alpha, self.batch_size)
        check_correction(self.correction)
        if not (int(self.subjects) == self.subjects and self.subjects >= 0):
            raise InputError(
                f"subjects must be an integer >= 0. Received: subjects={self.subjects!r}"
            )

    def smoothing(self) -> dict:
        """The settings of each sigma's :class:`~keras_advseg.certification.SmoothedModel`:
        ``{"n": 100, "n0": 10, "tau": 0.75, "alpha": 0.001, "correction": "holm",
        "batch_size": None}``."""
        return {name: getattr(self, name) for name in SMOOTHING_FIELDS}

    def chosen(self, ids: list[str]) -> list[str]:
        """The subjects certified: the first :attr:`subjects` of ``ids`` (all with 0)."""
        return ids[: self.subjects] if self.subjects else ids
