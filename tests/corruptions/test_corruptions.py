"""The corruptions against their definitions: identity at 0, growth with severity, determinism,
k-space artifacts checked in k-space, operator errors checked voxel by voxel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import fft
from support import smooth_head

from keras_advseg.corruptions import (
    CORRUPTIONS,
    corrupt,
    parse_corruptions,
    parse_severities,
    severity_table,
)
from keras_advseg.corruptions.core import rigid, rigid_map
from keras_advseg.corruptions.intensity import bias_field, bias_field_map, polynomial_terms
from keras_advseg.corruptions.kspace import (
    ghosting,
    motion,
    moved_spectra,
    segment_lines,
    segments,
    spike,
)
from keras_advseg.data.subject import MODALITIES
from keras_advseg.errors import InputError

SHAPE = (24, 28, 20)


def head(seed: int) -> np.ndarray:
    """A smooth ellipsoidal 'brain' of four sequences, 0 outside."""
    return smooth_head(SHAPE, (10, 12, 8.5), seed)


def distance(a, b) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_every_corruption_keeps_shape_dtype_and_finiteness_and_grows_with_severity():
    images = [head(seed) for seed in range(3)]
    for entry in CORRUPTIONS:
        mean_distances = []
        for severity in range(6):
            found = []
            for seed, image in enumerate(images):
                out = corrupt(image, entry.name, severity, spacing=(2, 2, 2), seed=seed)
                assert out.shape == image.shape and out.dtype == np.float32, entry.name
                assert np.isfinite(out).all(), entry.name
                assert (out[image.max(axis=-1) == 0] == 0).all(), entry.name  # background kept
                found.append(distance(out, image))
            mean_distances.append(np.mean(found))
        assert mean_distances[0] == 0, entry.name  # severity 0 is the identity
        assert all(b > a for a, b in zip(mean_distances, mean_distances[1:])), (
            entry.name,
            mean_distances,
        )


def test_a_seed_fixes_the_output_and_another_seed_changes_a_random_corruption():
    image = head(0)
    for name in ("motion", "rician-noise", "bias-field", "misregistration"):
        a = corrupt(image, name, 3, spacing=(2, 2, 2), seed=5)
        np.testing.assert_array_equal(a, corrupt(image, name, 3, spacing=(2, 2, 2), seed=5))
        assert not np.array_equal(a, corrupt(image, name, 3, spacing=(2, 2, 2), seed=6)), name


def test_modalities_restrict_a_corruption_to_the_chosen_sequences():
    image = head(1)
    out = corrupt(image, "rician-noise", 4, spacing=(2, 2, 2), seed=0, modalities=["flair"])
    np.testing.assert_array_equal(out[..., :3], image[..., :3])
    assert not np.array_equal(out[..., 3], image[..., 3])
    # each sequence has its own draw: FLAIR's noise does not depend on what else is corrupted
    both = corrupt(image, "rician-noise", 4, spacing=(2, 2, 2), seed=0, modalities=["t1", "flair"])
    np.testing.assert_array_equal(both[..., 3], out[..., 3])


def test_ghosting_changes_only_every_nth_plane_of_k_space_and_keeps_the_centre():
    volume = 50 + head(2)[..., 0].astype(np.float64)  # positive everywhere: nothing is clipped
    out = ghosting(
        volume, spacing=(1, 1, 1), rng=np.random.default_rng(0), ghosts=4, intensity=0.5, axes=(1,)
    )
    before, after = fft.fftn(volume), fft.fftn(out)
    changed = np.abs(after - before).max(axis=(0, 2)) > 1e-6 * np.abs(before).max()
    frequencies = np.rint(fft.fftfreq(SHAPE[1]) * SHAPE[1]).astype(int)
    expected = (frequencies % 4 == 0) & (frequencies != 0)
    np.testing.assert_array_equal(changed, expected)
    # the attenuated planes are exactly (1 - intensity) of what they were
    planes = np.flatnonzero(expected)
    np.testing.assert_allclose(after[:, planes], 0.5 * before[:, planes], atol=1e-6)


def test_a_spike_adds_one_k_space_peak_and_its_mirror():
    volume = 1000 + head(3)[..., 1].astype(np.float64)  # the stripes never reach 0: no clipping
    out = spike(volume, spacing=(1, 1, 1), rng=np.random.default_rng(4), intensity=0.6)
    before, after = fft.fftn(volume), fft.fftn(out)
    difference = after - before
    peaks = np.argwhere(np.abs(difference) > 1e-6 * np.abs(before).max())
    assert 1 <= len(peaks) <= 2
    position = peaks[0]
    mirror = (-position) % np.array(SHAPE)
    assert {tuple(p) for p in peaks} <= {tuple(position), tuple(mirror)}
    assert np.abs(difference).sum() == pytest.approx(0.6 * np.abs(before).max(), rel=1e-6)


def test_motion_without_movement_is_the_identity():
    volume = head(4)[..., 2].astype(np.float64)

    def moved(degrees, translation_mm):
        rng = np.random.default_rng(0)
        return motion(
            volume,
            spacing=(1, 1, 2),
            rng=rng,
            degrees=degrees,
            translation_mm=translation_mm,
            movements=6,
        )

    # motion computes in single precision, as the float32 scan it returns
    np.testing.assert_allclose(moved(0, 0), volume, atol=1e-6 * np.abs(volume).max())
    assert distance(moved(3, 6), volume) > 1
    # the non-uniform FFT runs on the box of non-zero voxels: a volume of zeros has none
    zeros = np.zeros_like(volume)
    rng = np.random.default_rng(0)
    still = motion(zeros, spacing=(1, 1, 2), rng=rng, degrees=3, translation_mm=6, movements=6)
    assert not still.any()


def test_a_moved_copys_spectrum_is_the_spectrum_of_the_moved_volume():
    """Motion's k-space segments against their definition, the spectrum of the volume moved
    rigidly: exactly for a whole-voxel translation (a circular shift) and a quarter turn
    (a permutation of voxels), and for a small rotation with a translation against a Gaussian
    blob moved analytically (no interpolation on either side)."""

    def lines(volume, start, stop):  # the k-space lines start:stop along z, lowest first
        return np.take(fft.fftn(volume), segment_lines(volume.shape[2], start, stop), axis=2)

    def relative(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    volume = head(4)[..., 0].astype(np.float64)
    # 1 mm along z at 2 mm voxels is half a voxel: (2, -3, 4) mm is (2, -3, 2) voxels
    (shifted,) = moved_spectra(volume, (1, 1, 2), [((0, 0, 0), (2, -3, 4), 5, 12)])
    expected = lines(np.roll(volume, (2, -3, 2), axis=(0, 1, 2)), 5, 12)
    assert relative(shifted, expected) < 1e-6

    cube = smooth_head((21, 21, 15), (7, 7, 5), 1)[..., 0].astype(np.float64)
    (turned,) = moved_spectra(cube, (1, 1, 1), [((0, 0, 90), (0, 0, 0), 3, 9)])
    quarter = rigid(cube, (1, 1, 1), (0, 0, 90), (0, 0, 0))
    np.testing.assert_allclose(quarter, np.rot90(cube, 1, (0, 1)), atol=1e-9)  # a permutation
    assert relative(turned, lines(quarter, 3, 9)) < 1e-4
    # the non-uniform FFT runs on the box of non-zero voxels: an even-sized box off the centre
    field = np.zeros((26, 26, 20))
    field[6:16, 8:18, 4:12] = np.random.default_rng(3).uniform(0.5, 1.5, (10, 10, 8))
    (turned,) = moved_spectra(field, (1, 1, 1), [((0, 0, 90), (0, 0, 0), 3, 9)])
    quarter = rigid(field, (1, 1, 1), (0, 0, 90), (0, 0, 0))
    np.testing.assert_allclose(quarter, np.rot90(field, 1, (0, 1)), atol=1e-9)
    assert relative(turned, lines(quarter, 3, 9)) < 1e-4

    shape, widths = (32, 36, 28), np.array([4.0, 5.0, 3.0])[:, None, None, None]
    grid = np.indices(shape).astype(np.float64)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2 + np.array([1.3, -0.7, 0.4])[
        :, None, None, None
    ]

    def blob(points):
        return np.exp(-((((points - centre) / widths) ** 2).sum(0)) / 2)

    degrees, translation = (3.0, -2.0, 4.0), (1.5, -2.0, 1.0)
    matrix, offset = rigid_map(shape, (1, 1, 2), degrees, translation)
    moved = blob(np.einsum("ij,jxyz->ixyz", matrix, grid) + offset[:, None, None, None])
    (spectrum,) = moved_spectra(blob(grid), (1, 1, 2), [(degrees, translation, 0, shape[2])])
    assert relative(spectrum, lines(moved, 0, shape[2])) < 0.01
    # linear interpolation in image space is further from the definition
    linear = lines(rigid(blob(grid), (1, 1, 2), degrees, translation), 0, shape[2])
    exact = lines(moved, 0, shape[2])
    assert relative(linear, exact) > 2 * relative(spectrum, exact)


def test_the_segment_holding_the_centre_line_shows_the_volume_in_place():
    rng = np.random.default_rng(0)
    for size in (16, 20, 32, 155):
        for _ in range(200):  # times drawn as motion draws them
            n = int(rng.integers(2, 11))
            step = 1.0 / (n + 1)
            times = np.arange(1, n + 1) * step + rng.uniform(-1, 1, n) * step * 0.3
            bounds, sources = segments(times, size)
            (centre,) = [j for j in range(n + 1) if bounds[j] <= size // 2 < bounds[j + 1]]
            assert sources[centre] is None
            assert sorted(m for m in sources if m is not None) == list(range(n))
    # in the corrupted scan: with translations alone (exact phase ramps), k-space's centre plane
    # is the clean scan's (a z-scored volume keeps the real part: its spectrum's Hermitian part)
    volume = head(4)[..., 1].astype(np.float64)
    volume -= volume.mean()
    clean = fft.fftn(volume)[:, :, 0]
    for seed in range(12):
        rng = np.random.default_rng(seed)
        moved = motion(volume, spacing=(1, 1, 1), rng=rng, degrees=0, translation_mm=3, movements=5)
        assert distance(moved, volume) > 0.01
        np.testing.assert_allclose(fft.fftn(moved)[:, :, 0], clean, atol=1e-4 * np.abs(clean).max())


def test_a_bias_field_is_the_exponential_of_its_polynomial():
    # order 1 written out: the terms are 1, z, y, x
    assert polynomial_terms(1) == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)]
    a = [0.1, -0.4, 0.3, 0.2]
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    np.testing.assert_allclose(
        bias_field_map(SHAPE, a, order=1), np.exp(a[0] + a[1] * z + a[2] * y + a[3] * x)
    )
    # the corruption: the volume times exp(a cubic polynomial), with |a| below the level
    volume = 1 + head(5)[..., 0].astype(np.float64)
    out = bias_field(volume, spacing=(1, 1, 1), rng=np.random.default_rng(2), coefficient=0.9)
    log_ratio = np.log(out / volume).ravel()
    basis = np.stack([(x**i * y**j * z**k).ravel() for i, j, k in polynomial_terms(3)], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, log_ratio, rcond=None)
    np.testing.assert_allclose(basis @ coefficients, log_ratio, atol=1e-8)
    assert np.abs(coefficients).max() <= 0.9 + 1e-9


def test_operator_errors_swap_drop_and_shift_whole_sequences_at_level_five():
    image = head(6)
    swapped = corrupt(image, "swapped-sequences", 5, seed=1)
    changed = [c for c in range(4) if not np.array_equal(swapped[..., c], image[..., c])]
    assert len(changed) == 2
    a, b = changed
    np.testing.assert_array_equal(swapped[..., a], image[..., b])
    np.testing.assert_array_equal(swapped[..., b], image[..., a])
    missing = corrupt(image, "missing-sequence", 5, seed=1)
    gone = [c for c in range(4) if not missing[..., c].any()]
    assert len(gone) == 1
    kept = [c for c in range(4) if c not in gone]
    np.testing.assert_array_equal(missing[..., kept], image[..., kept])
    # level 2: the top 40 % of the axial slices of one sequence, nothing else
    partial = corrupt(image, "missing-sequence", 2, seed=1)
    top = SHAPE[2] - int(np.ceil(0.4 * SHAPE[2]))
    np.testing.assert_array_equal(partial[:, :, :top], image[:, :, :top])
    assert not partial[:, :, top:, gone[0]].any()
    shifted = corrupt(image, "misregistration", 5, spacing=(2, 2, 2), seed=1)
    assert sum(not np.array_equal(shifted[..., c], image[..., c]) for c in range(4)) == 1


def test_names_severities_and_the_documented_table():
    assert parse_corruptions("all") == CORRUPTIONS.names()
    assert parse_corruptions("operator") == (
        "missing-sequence",
        "swapped-sequences",
        "misregistration",
    )
    assert parse_corruptions("blur, motion,blur") == ("blur", "motion")
    assert parse_severities("1-5") == (1, 2, 3, 4, 5)
    assert parse_severities("5,1") == (1, 5)
    for bad in ("0", "6", "1-9", "x", ""):
        with pytest.raises(InputError, match="severities must be 1-5"):
            parse_severities(bad)
    with pytest.raises(InputError, match="corruption must be one of"):
        parse_corruptions("motoin")
    table = {row["name"]: row for row in severity_table()}
    assert table["motion"]["degrees (degrees)"] == [1, 2, 3, 4, 5]
    assert table["blur"]["sigma_mm (mm)"] == [0.8, 1.6, 2.4, 3.2, 4.0]
    with pytest.raises(InputError, match="severity must be an integer 0-5"):
        corrupt(head(0), "blur", 6)
    with pytest.raises(InputError, match="spacing must be three positive sizes"):
        corrupt(head(0), "blur", 1, spacing=(1, 0, 1))
    with pytest.raises(InputError, match="modalities must name sequences"):
        corrupt(head(0), "blur", 1, modalities=["pd"])


def test_each_subject_gets_its_own_draw_and_every_row_records_it(phantom_dir, prepared_dir):
    """Over the phantom's subjects the draws differ (one draw per subject), the same subject
    moves the same way at every severity, and what is recorded is what was applied."""
    from keras_advseg.data import discover_subjects
    from keras_advseg.data.corrupted import CorruptedScans, spacing_of
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.inference import Preprocessing

    subjects = discover_subjects(phantom_dir)
    assert len(subjects) >= 6
    scans = CorruptedScans(Preprocessing.from_prepared(load_prepared(prepared_dir)), seed=0)
    dropped = {scans.get(s, "missing-sequence", 5).params["sequence"] for s in subjects}
    assert len(dropped) > 1, dropped  # not FLAIR for everyone
    pairs = {tuple(scans.get(s, "swapped-sequences", 5).params["sequences"]) for s in subjects}
    assert len(pairs) > 1, pairs
    moved = {scans.get(s, "misregistration", 3).params["sequence"] for s in subjects}
    assert len(moved) > 1, moved

    first, second = subjects[0], subjects[1]
    image, _ = first.load()
    spacing = spacing_of(first)
    fields = {}
    for subject in (first, second):
        out, params = corrupt(
            image, "bias-field", 3, spacing=spacing, subject=subject.subject_id, return_params=True
        )
        fields[subject.subject_id] = (out, params)
        # the recorded coefficients are the field that was applied (an independent evaluation
        # of the polynomial, inside the brain)
        for c, name in enumerate(MODALITIES):
            expected = image[..., c] * bias_field_map(image.shape[:3], params[name]["coefficients"])
            inside = image[..., c] > 0
            np.testing.assert_allclose(out[..., c][inside], expected[inside], rtol=1e-4)
    a, b = (fields[s.subject_id][1]["flair"]["coefficients"] for s in (first, second))
    assert not np.allclose(a, b)  # two subjects' bias fields differ
    assert not np.array_equal(fields[first.subject_id][0], fields[second.subject_id][0])

    # the same subject: the same unit draw at every severity, scaled by the level
    _, low = corrupt(image, "motion", 1, spacing=spacing, subject="s", return_params=True)
    _, high = corrupt(image, "motion", 5, spacing=spacing, subject="s", return_params=True)
    assert low["level"] == {"degrees": 1, "translation_mm": 2, "movements": 2}
    np.testing.assert_allclose(
        np.array(high["t1"]["degrees"])[:2], 5 * np.array(low["t1"]["degrees"]), atol=1e-5
    )
    _, spikes = corrupt(image, "spike", 2, spacing=spacing, subject="s", return_params=True)
    _, spikes5 = corrupt(image, "spike", 5, spacing=spacing, subject="s", return_params=True)
    assert spikes["t2"]["position"] == spikes5["t2"]["position"]
    # without a subject: the draw of the seed alone, as before
    np.testing.assert_array_equal(
        corrupt(image, "spike", 2, spacing=spacing, seed=3),
        corrupt(image, "spike", 2, spacing=spacing, seed=3, subject=None),
    )


def test_recorded_parameters_are_the_applied_ones():
    image = head(7)
    out, params = corrupt(image, "missing-sequence", 3, subject="x", return_params=True)
    c = MODALITIES.index(params["sequence"])
    assert not out[:, :, params["first_slice"] :, c].any()
    np.testing.assert_array_equal(
        out[:, :, : params["first_slice"]], image[:, :, : params["first_slice"]]
    )
    out, params = corrupt(image, "swapped-sequences", 5, subject="x", return_params=True)
    a, b = (MODALITIES.index(n) for n in params["sequences"])
    np.testing.assert_array_equal(out[..., a], image[..., b])
    volume = 1000 + head(3)[..., 1]
    out, params = corrupt(
        np.repeat(volume[..., None], 4, -1), "spike", 3, subject="x", return_params=True
    )
    difference = np.abs(fft.fftn(out[..., 0]) - fft.fftn(volume))
    peak = np.unravel_index(np.argmax(difference), difference.shape)
    mirror = tuple((-np.array(params["t1"]["position"])) % np.array(SHAPE))
    assert peak in (tuple(params["t1"]["position"]), mirror)
    assert corrupt(image, "motion", 0, return_params=True)[1] == {}
