import numpy as np
import pytest
import torch

from medtrans.data.intensity import (
    AffineIntensity,
    background_value,
    fit_intensity,
    foreground_mask,
    histogram_match,
    histogram_match_batch,
    validate_spec,
)


def _brain_like(rng: np.random.Generator) -> np.ndarray:
    vol = np.zeros((20, 22, 18), np.float32)
    vol[4:16, 5:17, 3:15] = rng.uniform(100, 900, (12, 12, 12))
    vol[3, 5:17, 3:15] = -0.5  # interpolation rim below the zero background, as in lesjak-ms-mni
    return vol


def test_percentile_mapping_round_trips_inside_the_clip_range():
    vol = _brain_like(np.random.default_rng(0))
    mapping = fit_intensity({"type": "percentile", "lower": 1, "upper": 99}, vol)
    fg = vol[foreground_mask(vol)]
    low, high = np.percentile(fg, [1, 99])
    assert mapping.range == pytest.approx((low, high), rel=1e-5)
    y = mapping.forward(vol)
    assert y.min() == -1 and y.max() == 1
    inside = (vol >= low) & (vol <= high)
    assert np.allclose(mapping.inverse(y)[inside], vol[inside], rtol=1e-5, atol=1e-3)


def test_foreground_is_the_non_background_not_the_above_minimum():
    vol = _brain_like(np.random.default_rng(1))
    assert background_value(vol) == 0
    fg = foreground_mask(vol)
    assert fg.sum() == 12 * 12 * 12 + 12 * 12  # brain + rim, not the zero background
    mask = np.zeros_like(vol)
    mask[5:10, 5:10, 5:10] = 1
    assert foreground_mask(vol, mask).sum() == 125


def test_window_and_zscore():
    ct = np.linspace(-1200, 2500, 1000, dtype=np.float32).reshape(10, 10, 10)
    window = fit_intensity({"type": "window", "low": -1000, "high": 2000}, ct)
    assert window.forward(np.array([-1000.0, 500.0, 2000.0, 3000.0])).tolist() == [-1.0, 0.0, 1.0, 1.0]
    z = fit_intensity({"type": "zscore"}, ct + 1300)
    y = z.forward(ct + 1300)
    assert not z.clip and abs(float(y.mean())) < 0.01 and float(y.std()) == pytest.approx(1.0, abs=0.01)
    assert np.allclose(z.inverse(y), ct + 1300, atol=1e-2)


def test_zscore_to_sigmas_is_a_clipped_range_that_outliers_barely_move():
    rng = np.random.default_rng(3)
    brain = np.pad(rng.normal(500.0, 50.0, (12, 12, 12)).astype(np.float32), 2)
    mapping = fit_intensity({"type": "zscore", "sigmas": 3}, brain)
    values = brain[foreground_mask(brain)]
    mean, std = float(values.mean()), float(values.std())
    assert mapping.clip and mapping.range == pytest.approx((mean - 3 * std, mean + 3 * std), rel=1e-5)
    assert mapping.forward(np.array([mean, mean + 3 * std, mean + 10 * std])) == pytest.approx([0, 1, 1], abs=1e-5)
    # a bright "tumour" in 5% of the brain: the 99th percentile jumps to it, the ± 3σ range moves far less, so the
    # normal brain keeps nearly the level it has without the tumour
    tumour = brain.copy()
    tumour[2:14, 2:14, 2:3] = 2000.0
    normal = (brain > 0) & (tumour == brain)
    shift = {}
    for spec in ({"type": "percentile"}, {"type": "zscore", "sigmas": 3}):
        before = fit_intensity(spec, brain).forward(brain)[normal]
        after = fit_intensity(spec, tumour).forward(tumour)[normal]
        shift[spec["type"]] = abs(float(np.median(after) - np.median(before)))
    assert shift["zscore"] < 0.5 * shift["percentile"]


def test_affine_from_range_and_bad_specs():
    m = AffineIntensity.from_range(10.0, 30.0)
    assert m.forward(np.array([10.0, 20.0, 30.0])).tolist() == [-1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="must be one of"):
        validate_spec({"type": "minmax"})
    with pytest.raises(ValueError, match="needs"):
        validate_spec({"type": "window", "low": 0})
    with pytest.raises(ValueError, match="lower < upper"):
        validate_spec({"type": "percentile", "lower": 99, "upper": 1})
    with pytest.raises(ValueError, match="sigmas must be positive"):
        validate_spec({"type": "zscore", "sigmas": 0})
    with pytest.raises(ValueError, match="percentiles are equal"):
        fit_intensity({"type": "percentile"}, np.pad(np.ones((4, 4, 4)), 1))


def test_histogram_match_copies_the_reference_quantiles():
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, (16, 16, 16)).astype(np.float32)
    reference = np.pad(rng.exponential(100.0, (14, 14, 14)).astype(np.float32) + 1, 1)
    matched = histogram_match(values, reference)
    ref_fg = reference[reference > 0]
    for q in (5, 25, 50, 75, 95):
        assert np.percentile(matched, q) == pytest.approx(np.percentile(ref_fg, q), rel=0.02)
    order = np.argsort(values.ravel())
    assert np.all(np.diff(matched.ravel()[order]) >= 0)  # monotone: structure is preserved


@pytest.mark.parametrize("spatial", [(12, 14), (8, 10, 6)])
def test_histogram_match_batch_gives_the_reference_distribution_and_keeps_the_order(spatial):
    """Each sample's foreground takes the reference's foreground values in its own order (same foreground sizes: exactly
    the reference's values); its background takes the reference's; a flat region stays flat."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, *spatial, generator=g) * 2 - 1
    reference = torch.rand(2, 1, *spatial, generator=g) ** 3 * 1.8 - 0.8
    for t in (image, reference):
        t[..., :2] = -1.0  # a background band at the minimum
    image[1, ..., 4:6] = 0.3  # a flat region inside the second sample
    matched = histogram_match_batch(image, reference)
    assert matched.shape == image.shape and matched.dtype == image.dtype
    for b in range(2):
        x, r, m = image[b].flatten(), reference[b].flatten(), matched[b].flatten()
        inside = x > -1
        assert torch.all(m[~inside] == r.min())
        order = x[inside].argsort()
        assert torch.all(m[inside][order].diff() >= 0)  # monotone: the contrast is the image's
    x, r, m = image[0].flatten(), reference[0].flatten(), matched[0].flatten()
    assert torch.allclose(m[x > -1].sort().values, r[r > -1].sort().values, atol=1e-5)
    assert matched[1][image[1] == 0.3].unique().numel() == 1


def test_histogram_match_batch_other_foreground_sizes_and_empty_ones():
    """A smaller foreground spans the reference's quantiles from its minimum to its maximum; an empty one (or an
    empty reference) is all background."""
    image = torch.full((1, 1, 10, 10), -1.0)
    image[..., 2:4, 2:7] = torch.linspace(-0.5, 0.5, 10).view(2, 5)
    reference = torch.full((1, 1, 10, 10), -1.0)
    reference[..., 1:9, 1:9] = torch.linspace(0.0, 0.9, 64).view(8, 8)
    m = histogram_match_batch(image, reference)[image > -1]
    assert m.min().item() == pytest.approx(0.0) and m.max().item() == pytest.approx(0.9)
    assert torch.all(histogram_match_batch(torch.full_like(image, -1.0), reference) == -1.0)
    assert torch.all(histogram_match_batch(image, torch.full_like(reference, 0.2)) == 0.2)
    with pytest.raises(ValueError, match="batch and channels differ"):
        histogram_match_batch(image, reference.expand(2, 1, 10, 10))
