import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtrans.cli import main
from medtrans.errors import InputError
from medtrans.evaluate import EvaluationProtocol, evaluate_pair, evaluate_paths, summarize
from medtrans.io import Volume
from medtrans.metrics import checkerboard, high_frequency_fraction, mae, nyquist_fraction, psnr, ssim, texture


def _volume(data, affine=None, name="v.nii.gz"):
    return Volume(np.asarray(data, np.float32), np.eye(4) if affine is None else affine, path=name)


def test_metrics_hand_computed():
    rng = np.random.default_rng(0)
    target = rng.random((24, 24, 24))
    assert psnr(target, target, 1.0) == math.inf
    assert ssim(target, target, 1.0) == pytest.approx(1.0, abs=1e-9)
    assert mae(target, target) == 0
    noisy = target + rng.normal(0, 0.05, target.shape)
    assert psnr(noisy, target, 1.0) == pytest.approx(20 * math.log10(1 / 0.05), abs=0.05)  # 26.02 dB for σ = 0.05
    assert psnr(noisy, target, 2.0) == pytest.approx(psnr(noisy, target, 1.0) + 20 * math.log10(2), abs=1e-9)
    assert mae(noisy, target) == pytest.approx(0.05 * math.sqrt(2 / math.pi), rel=0.02)
    mask = np.zeros(target.shape, bool)
    mask[:12] = True
    worse = noisy.copy()
    worse[12:] += 0.5  # errors outside the mask do not count
    assert psnr(worse, target, 1.0, mask) == pytest.approx(psnr(noisy, target, 1.0, mask))
    assert ssim(noisy, target, 1.0) < 0.99


def test_checkerboard_measures_energy_at_the_two_voxel_period():
    rng = np.random.default_rng(0)
    grid = np.indices((32, 32, 32))
    smooth = np.sin(grid[0] / 5.0) + np.cos(grid[1] / 7.0) + 0.1 * rng.random((32, 32, 32))
    grid_pattern = (-1.0) ** grid.sum(axis=0)  # the 2-voxel period of a stride-2 transposed convolution
    assert checkerboard(smooth, smooth) == pytest.approx(1.0)
    assert 2 < checkerboard(smooth + 0.05 * grid_pattern, smooth) < checkerboard(smooth + 0.1 * grid_pattern, smooth)
    assert nyquist_fraction(grid_pattern) == pytest.approx(1.0)
    mask = np.zeros(smooth.shape, bool)
    mask[8:24, 8:24, 8:24] = True
    outside = smooth + np.where(mask, 0.0, grid_pattern)  # a pattern outside the mask does not count
    assert checkerboard(outside, smooth, mask) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no energy"):
        checkerboard(smooth, np.ones_like(smooth))


def test_texture_measures_fine_texture_the_target_lacks():
    """Speckle raises ``texture`` above 1 in proportion to its strength, smoothing lowers it below 1; a global
    intensity change does not move it, and a speckled background outside the mask does not count."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    grid = np.indices((32, 32, 32))
    anatomy = np.sin(grid[0] / 4.0) * np.cos(grid[1] / 5.0) + 0.05 * rng.normal(size=(32, 32, 32))
    speckle = rng.normal(size=anatomy.shape)
    mask = np.zeros(anatomy.shape, bool)
    mask[4:28, 4:28, 4:28] = True
    assert texture(anatomy, anatomy, mask) == pytest.approx(1.0)
    assert texture(3 - 2 * anatomy, anatomy, mask) == pytest.approx(1.0)  # scale-free, sign-free
    assert 1.5 < texture(anatomy + 0.1 * speckle, anatomy, mask) < texture(anatomy + 0.2 * speckle, anatomy, mask)
    assert texture(gaussian_filter(anatomy, 1.0), anatomy, mask) < 0.5
    assert texture(anatomy + np.where(mask, 0, speckle), anatomy, mask) == pytest.approx(1.0)
    single = anatomy[..., :1]  # one slice: smoothed in-plane only
    assert high_frequency_fraction(single + 0.3 * speckle[..., :1]) > 2 * high_frequency_fraction(single)
    with pytest.raises(ValueError, match="inside its border"):
        high_frequency_fraction(anatomy, np.pad(np.ones((2, 2, 2), bool), 15))
    with pytest.raises(ValueError, match="constant"):
        high_frequency_fraction(np.ones((16, 16, 16)))


def test_data_range_is_fixed_not_taken_from_the_prediction():
    target = np.linspace(0, 1, 20**3).reshape(20, 20, 20)
    dim = target * 0.5  # a darker prediction must not get a "matched" range
    base = evaluate_pair(_volume(dim), _volume(target))
    assert base["psnr"] < 15 and base["mae"] == pytest.approx(0.25, abs=0.01)


def test_geometry_mismatch_is_refused():
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    # the message shows what differs: the two affines, or the two shapes
    with pytest.raises(InputError, match=r"t.nii.gz: affine \[\[1.*2\.?\].*differs from the prediction .*\[\[1.*0\.?\]"):
        evaluate_pair(_volume(np.ones((8, 8, 8))), _volume(np.ones((8, 8, 8)), shifted, name="t.nii.gz"))
    with pytest.raises(InputError, match=r"shape \(8, 8, 9\) differs from the prediction .*\(8, 8, 8\)"):
        evaluate_pair(_volume(np.ones((8, 8, 8))), _volume(np.ones((8, 8, 9)), name="t.nii.gz"))


def test_nec_protocol_forgives_a_monotone_intensity_change():
    rng = np.random.default_rng(1)
    target = rng.gamma(2.0, 100.0, (24, 24, 24))
    pred = np.sqrt(target)  # same structure, different intensity scale
    default = evaluate_pair(_volume(pred), _volume(target))
    nec = evaluate_pair(_volume(pred), _volume(target), protocol=EvaluationProtocol.nec())
    assert nec["psnr"] > default["psnr"] + 10
    with pytest.raises(ValueError, match="data_range"):
        EvaluationProtocol(normalization="none")


def test_folders_csv_and_summary(tmp_path, capsys):
    rng = np.random.default_rng(2)
    for folder in ("pred", "target", "mask"):
        (tmp_path / folder).mkdir()
    for sid, sigma in (("s1", 0.02), ("s2", 0.1)):
        t = rng.random((16, 16, 16)).astype(np.float32)
        nib.save(nib.Nifti1Image(t, np.eye(4)), tmp_path / "target" / f"{sid}.nii.gz")
        nib.save(nib.Nifti1Image(t + rng.normal(0, sigma, t.shape).astype(np.float32), np.eye(4)), tmp_path / "pred" / f"{sid}.nii.gz")
        nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.uint8), np.eye(4)), tmp_path / "mask" / f"{sid}.nii.gz")
    table = evaluate_paths(tmp_path / "pred", tmp_path / "target", tmp_path / "mask",
                           EvaluationProtocol(normalization="none", data_range=1.0))
    assert list(table["subject"]) == ["s1", "s2"] and table["psnr"][0] > table["psnr"][1]
    summary = summarize(table)
    assert summary.loc["psnr", "mean"] == pytest.approx(table["psnr"].mean())
    assert summary.loc["psnr", "std"] == pytest.approx(table["psnr"].std(ddof=1))
    csv = tmp_path / "scores.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "target"), "--mask", str(tmp_path / "mask"),
                 "--normalization", "none", "--data-range", "1", "--csv", str(csv)]) == 0
    printed = capsys.readouterr().out
    assert "mean ± std over 2 subjects" in printed
    assert "protocol (default): raw values; data range 1; inside the mask" in printed
    assert pd.read_csv(csv)["psnr"].tolist() == pytest.approx(table["psnr"].tolist())
    assert (tmp_path / "scores_summary.csv").exists()
    (tmp_path / "pred" / "s3.nii.gz").write_bytes((tmp_path / "pred" / "s1.nii.gz").read_bytes())
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "target")]) == 1
    assert "s3.nii.gz: has no target" in capsys.readouterr().err


def test_histogram_baselines_recover_an_inverted_contrast():
    from medtrans.evaluate import histogram_baselines

    rng = np.random.default_rng(3)
    target = rng.gamma(2.0, 100.0, (12, 12, 12))
    source = 1000.0 - target  # a perfectly inverted contrast
    mask = np.ones(target.shape, bool)
    mask[0] = False
    out = histogram_baselines(source, mask, target[mask])
    assert np.corrcoef(out["inverted + histogram-matched input"][mask], target[mask])[0, 1] > 0.99
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731 - the plain match is monotone: ranks exactly reversed
    assert np.corrcoef(ranks(out["histogram-matched input"][mask]), ranks(target[mask]))[0, 1] < -0.99
    assert all(np.all(v[~mask] == 0) for v in out.values())


def test_match_to_pooled_copies_the_pooled_distribution_inside_the_mask_only():
    from medtrans.evaluate import match_to_pooled

    rng = np.random.default_rng(4)
    volume = rng.normal(0.0, 1.0, (10, 10, 10))
    pooled = rng.gamma(2.0, 100.0, 5000)  # another scale and shape, and more values than the mask holds
    mask = np.zeros(volume.shape, bool)
    mask[2:8, 2:8, 2:8] = True
    out = match_to_pooled(volume, mask, pooled)
    q = [5, 25, 50, 75, 95]
    assert np.percentile(out[mask], q) == pytest.approx(np.percentile(pooled, q), rel=0.05)
    assert np.all(out[~mask] == 0)
    order = np.argsort(volume[mask])
    assert np.all(np.diff(out[mask][order]) >= 0)  # monotone: the anatomy's ordering is kept
