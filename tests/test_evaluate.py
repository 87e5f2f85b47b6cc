import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from medtrans.commands.cli import main

from medtrans.errors import InputError
from medtrans.evaluate import (
    EvaluationProtocol,
    evaluate_pair,
    evaluate_paths,
    summarize,
)
from medtrans.io import Volume
from medtrans.metrics import (
    checkerboard,
    high_frequency_fraction,
    mae,
    nyquist_fraction,
    psnr,
    ssim,
    texture,
)


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


# -- synthetic CT in HU, the SynthRAD way (--protocol synthrad) -------------------------------------------------------
def ct_phantom(shape=(40, 44, 36)):
    """A CT-like volume in HU on 2 mm voxels: air (-1000) around an ellipsoidal body of soft tissue (40 HU) holding a
    bone ball (1000 HU) and an air pocket (-1000, enclosed: an airway), and a couch slab (100 HU) apart from it.
    Returns the CT, the body (air pocket included), the bone and the 2 mm affine."""
    grid = np.indices(shape).astype(float)
    centre = [(s - 1) / 2 for s in shape]
    r = lambda *axes: sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes))  # noqa: E731
    body = r(14, 16, 12) <= 1
    bone = r(5, 5, 5) <= 1
    pocket = (((grid[0] - centre[0] - 8) / 2.5) ** 2 + ((grid[1] - centre[1]) / 2.5) ** 2
              + ((grid[2] - centre[2]) / 2.5) ** 2) <= 1
    ct = np.full(shape, -1000.0)
    ct[body] = 40.0
    ct[bone] = 1000.0
    ct[pocket] = -1000.0
    couch = np.zeros(shape, bool)
    couch[:, 1:3, 4:-4] = True  # two voxels below the body, air between
    assert not (couch & body).any() and not ndimage_touch(couch, body)
    ct[couch] = 100.0
    return ct.astype(np.float32), body, bone, np.diag([2.0, 2.0, 2.0, 1.0])


def ndimage_touch(a, b):
    from scipy import ndimage

    return (ndimage.binary_dilation(a) & b).any()


def within_mm(body, radius_mm, spacing_mm):
    """Voxels whose centre lies within ``radius_mm`` of a body voxel's centre (a ball dilation, independent of the
    distance transform the mask is made with)."""
    from scipy import ndimage

    reach = int(radius_mm // spacing_mm)
    offsets = np.indices([2 * reach + 1] * 3) - reach
    ball = (offsets**2).sum(axis=0) * spacing_mm**2 <= radius_mm**2
    return ndimage.binary_dilation(body, ball)


def test_body_mask_from_the_ct_is_the_body_dilated():
    from medtrans.defaults import BODY_DILATION_MM
    from medtrans.synthrad import body_mask

    ct, body, _, affine = ct_phantom()
    mask = body_mask(ct, (2.0, 2.0, 2.0))
    expected = within_mm(body, BODY_DILATION_MM, 2.0)  # the air pocket filled, the couch left out
    assert np.array_equal(mask, expected)
    assert np.array_equal(body_mask(ct, (2.0, 2.0, 2.0), dilation_mm=0), body)
    # anisotropic voxels dilate in mm: 5 mm is 2 voxels across 2 mm voxels, 1 across 4 mm slices
    thick = body_mask(ct, (2.0, 2.0, 4.0), dilation_mm=4.0)
    column = thick[20, 22]
    assert column.sum() == body[20, 22].sum() + 2
    with pytest.raises(ValueError, match="no voxel lies above -500"):
        body_mask(np.full((8, 8, 8), -1000.0))
    with pytest.raises(ValueError, match="no air around the body"):
        body_mask(np.full((8, 8, 8), 40.0))


def test_synthrad_metrics_have_known_answers():
    from medtrans.synthrad import SynthradProtocol, evaluate_synthrad_pair

    ct, body, bone, affine = ct_phantom()
    target = _volume(ct, affine, "ct.nii.gz")
    same = evaluate_synthrad_pair(_volume(ct, affine), target)
    assert same["mae"] == 0 and same["psnr"] == math.inf and same["ms_ssim"] == pytest.approx(1.0, abs=1e-12)
    shifted = evaluate_synthrad_pair(_volume(ct + 50, affine), target)  # 50 HU too dense everywhere
    assert shifted["mae"] == 50.0
    assert shifted["psnr"] == pytest.approx(20 * math.log10(4024 / 50), abs=1e-9)  # 38.12 dB
    assert 0.9 < shifted["ms_ssim"] < 1.0
    body_only = evaluate_synthrad_pair(_volume(ct + 50, affine), target, _volume(body.astype(np.float32), affine))
    assert body_only["mae"] == 50.0 and body_only["psnr"] == pytest.approx(shifted["psnr"], abs=1e-9)
    # the HU range is PSNR's data range
    wide = evaluate_synthrad_pair(_volume(ct + 50, affine), target, protocol=SynthradProtocol(-1024, 3071))
    assert wide["psnr"] == pytest.approx(20 * math.log10(4095 / 50), abs=1e-9)
    # errors outside the mask do not count, for any metric (outside it both are set to the range's low end)
    outside = ct + 50 + np.where(within_mm(body, 5.0, 2.0), 0, 300).astype(np.float32)
    assert evaluate_synthrad_pair(_volume(outside, affine), target) == pytest.approx(shifted, abs=1e-12)
    # noise: MS-SSIM falls as it grows
    rng = np.random.default_rng(0)
    noisy = [evaluate_synthrad_pair(_volume(ct + rng.normal(0, s, ct.shape).astype(np.float32), affine), target)
             for s in (20, 100)]
    assert 1 > noisy[0]["ms_ssim"] > noisy[1]["ms_ssim"] and noisy[0]["psnr"] > noisy[1]["psnr"]


def test_synthrad_clips_both_volumes_to_the_hu_range_for_psnr_and_ms_ssim_not_mae():
    """As SynthRAD's evaluation code: PSNR and MS-SSIM see both volumes clipped to [-1024, 3000] HU, MAE the HU."""
    from medtrans.synthrad import body_mask, evaluate_synthrad_pair

    ct, body, bone, affine = ct_phantom()
    dense = np.where(bone, 3500.0, ct).astype(np.float32)  # metal-dense bone in the target...
    denser = np.where(bone, 4200.0, ct).astype(np.float32)  # ...denser in the prediction: both clip to 3000
    scores = evaluate_synthrad_pair(_volume(denser, affine), _volume(dense, affine))
    assert scores["psnr"] == math.inf and scores["ms_ssim"] == pytest.approx(1.0, abs=1e-12)
    mask = body_mask(ct, (2.0, 2.0, 2.0))
    assert scores["mae"] == pytest.approx(700.0 * bone.sum() / mask.sum(), rel=1e-12)
    # bone 4000 HU too dense (2000 once clipped to 3000), the air outside at -3000 (24 HU below -1024 once clipped)
    mixed = np.where(bone, 5000.0, np.where(body, ct, -3000.0)).astype(np.float32)
    scores = evaluate_synthrad_pair(_volume(mixed, affine), _volume(ct, affine))
    air = mask & ~body
    assert scores["mae"] == pytest.approx((4000.0 * bone.sum() + 2000.0 * air.sum()) / mask.sum(), rel=1e-12)
    mse = (2000.0**2 * bone.sum() + 24.0**2 * air.sum()) / mask.sum()
    assert scores["psnr"] == pytest.approx(10 * math.log10(4024**2 / mse), abs=1e-9)


def test_ms_ssim_known_values_and_monai_maps():
    import torch
    from monai.metrics.regression import compute_ssim_and_cs

    from medtrans.metrics import MS_SSIM_WEIGHTS, ms_ssim, ssim_maps

    rng = np.random.default_rng(5)
    a = rng.random((30, 32, 34)).astype(np.float32)
    b = (a + 0.1 * rng.random(a.shape)).astype(np.float32)
    # the maps equal MONAI's compute_ssim_and_cs wherever its window fits (it has no value elsewhere)
    ours = ssim_maps(a, b, 1.0)
    theirs = compute_ssim_and_cs(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], 3, [11] * 3,
                                 [1.5] * 3, 1.0)
    for mine, monai in zip(ours, theirs):
        assert mine.shape == a.shape
        assert np.abs(mine[5:-5, 5:-5, 5:-5] - monai[0, 0].numpy()).max() < 1e-4
    assert ms_ssim(a, a, 1.0) == pytest.approx(1.0, abs=1e-12)
    # two flat images: contrast-structure is 1 at every scale, so MS-SSIM is the coarsest luminance to its weight
    lum = 1 - 0.1**2 / (0.5**2 + 0.6**2 + 0.01**2)
    assert ms_ssim(np.full((20, 20, 20), 0.5), np.full((20, 20, 20), 0.6), 1.0) == pytest.approx(
        lum ** MS_SSIM_WEIGHTS[-1], rel=1e-5)
    # a single slice (X, Y, 1) scores as the 2D image
    image = rng.random((40, 40)).astype(np.float32)
    noisy = image + 0.05 * rng.standard_normal(image.shape).astype(np.float32)
    assert ms_ssim(noisy[..., None], image[..., None], 1.0) == pytest.approx(ms_ssim(noisy, image, 1.0), abs=1e-5)
    with pytest.raises(ValueError, match="mask is empty"):
        ms_ssim(a, b, 1.0, np.zeros(a.shape, bool))


def test_synthrad_from_the_command_line(tmp_path, capsys):
    ct, body, _, affine = ct_phantom()
    for folder in ("pred", "ct"):
        (tmp_path / folder).mkdir()
    for sid, offset in (("s1", 50.0), ("s2", 100.0)):
        nib.save(nib.Nifti1Image(ct, affine), tmp_path / "ct" / f"{sid}.nii.gz")
        nib.save(nib.Nifti1Image(ct + np.float32(offset), affine), tmp_path / "pred" / f"{sid}.nii.gz")
    csv = tmp_path / "scores.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ct"), "--protocol", "synthrad",
                 "--csv", str(csv)]) == 0
    printed = capsys.readouterr().out
    assert ("protocol (synthrad): MAE in HU; PSNR with data range 4024 and MS-SSIM (5 scales, Gaussian window 11, "
            "sigma 1.5; -1024 HU outside the mask) of both clipped to [-1024, 3000] HU; inside the body mask" in printed)
    assert ("inside the body mask made from the target (> -500 HU, largest component, holes filled, dilated 5 mm)"
            in printed)
    table = pd.read_csv(csv)
    assert list(table.columns) == ["subject", "mae", "psnr", "ms_ssim"]
    assert table["mae"].tolist() == [50.0, 100.0]
    assert table["psnr"].tolist() == pytest.approx([20 * math.log10(4024 / d) for d in (50, 100)], abs=1e-9)
    summary = pd.read_csv(tmp_path / "scores_summary.csv", index_col="metric")
    assert list(summary.index) == ["mae", "psnr", "ms_ssim"] and summary.loc["mae", "mean"] == 75.0
    assert main(["evaluate", str(tmp_path / "pred" / "s1.nii.gz"), str(tmp_path / "ct" / "s1.nii.gz"), "--protocol",
                 "synthrad", "--hu-range", "-1024", "3071"]) == 0
    assert "of both clipped to [-1024, 3071] HU" in capsys.readouterr().out


@pytest.mark.parametrize("options,names", [
    (["--protocol", "synthrad", "--normalization", "each"], ("--normalization", "--protocol synthrad")),
    (["--protocol", "synthrad", "--percentiles", "1", "99"], "--percentiles"),
    (["--protocol", "synthrad", "--sigma-mm", "0.5"], "--sigma-mm"),
    (["--protocol", "synthrad", "--histogram-match"], "--histogram-match"),
    (["--protocol", "synthrad", "--data-range", "4024"], "--data-range"),
    (["--protocol", "nec", "--normalization", "target"], ("--normalization", "--protocol nec")),
    (["--hu-range", "-1024", "3000"], ("--hu-range", "--protocol synthrad only")),
    (["--protocol", "nec", "--hu-range", "-1024", "3000"], "--hu-range"),
    (["--protocol", "synthrad", "--hu-range", "3000", "-1024"], "--hu-range"),
    (["--protocol", "synthrad", "--hu-range", "-1024", "-600"], ("--hu-range", "body threshold")),
    (["--protocol", "hounsfield"], "--protocol"),
])
def test_synthrad_option_conflicts_are_refused_in_one_line(options, names, tmp_path, capsys):
    from tests.conftest import refusal_line

    ct, _, _, affine = ct_phantom()
    nib.save(nib.Nifti1Image(ct, affine), tmp_path / "ct.nii.gz")
    refusal_line(capsys, ["evaluate", tmp_path / "ct.nii.gz", tmp_path / "ct.nii.gz", *options], names)


def test_synthrad_refuses_volumes_that_are_not_ct_in_hu(tmp_path, capsys):
    from tests.conftest import refusal_line

    ct, body, _, affine = ct_phantom()
    nib.save(nib.Nifti1Image(ct, affine), tmp_path / "ct.nii.gz")
    normalised = np.clip((ct + 1024) / 4024 * 2 - 1, -1, 1).astype(np.float32)  # left in the network's range
    nib.save(nib.Nifti1Image(normalised, affine), tmp_path / "net.nii.gz")
    line = refusal_line(capsys, ["evaluate", tmp_path / "net.nii.gz", tmp_path / "ct.nii.gz", "--protocol",
                                 "synthrad"], ("net.nii.gz", "not a CT in HU", "mapped back to HU"))
    assert "spans only -0.988" in line
    refusal_line(capsys, ["evaluate", tmp_path / "ct.nii.gz", tmp_path / "net.nii.gz", "--protocol", "synthrad"],
                 ("net.nii.gz", "give the CT as TARGET"))
    cropped = np.where(body, ct, 40.0).astype(np.float32)  # no air around the body: no mask to make
    nib.save(nib.Nifti1Image(cropped, affine), tmp_path / "cropped.nii.gz")
    refusal_line(capsys, ["evaluate", tmp_path / "cropped.nii.gz", tmp_path / "cropped.nii.gz", "--protocol",
                          "synthrad"], ("cropped.nii.gz", "no air around the body", "--mask"))
    nib.save(nib.Nifti1Image(body.astype(np.float32), affine), tmp_path / "body.nii.gz")
    assert main(["evaluate", str(tmp_path / "cropped.nii.gz"), str(tmp_path / "cropped.nii.gz"), "--protocol",
                 "synthrad", "--mask", str(tmp_path / "body.nii.gz")]) == 0
