import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medtrans.visualize import tensor_montage, volume_montage


def test_tensor_montage_2d_and_3d():
    images = {"source": -torch.ones(2, 1, 8, 10), "output": torch.ones(2, 1, 8, 10)}
    tile = tensor_montage(images)
    assert tile.shape == (8, 2 * 12) and tile.dtype == np.uint8 and tile[0, 0] == 0 and tile[0, 12] == 255
    assert tensor_montage({"v": torch.zeros(1, 1, 6, 7, 9)}).shape == (6, 9)


def test_volume_montage_writes_five_panels(tmp_path):
    data = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32)
    for name in ("s", "o", "t", "f"):
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"{name}.nii.gz")
    out = volume_montage(*(tmp_path / f"{n}.nii.gz" for n in "sotf"), tmp_path / "m.png")
    picture = np.asarray(Image.open(out))
    assert picture.shape == (22 + 2 * 14, 2 * 5 * (12 + 4))  # a 22-pixel strip of column labels above the panels
    assert picture[:22].max() == 255 and picture[:22, :2 * 16].max() == 255  # the first column's label is written


def test_volume_montage_scale_types(tmp_path):
    target = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32) + 0.5
    volumes = {"s": target, "o": 1000 * target, "t": target, "f": np.zeros_like(target)}  # output in other units
    for name, data in volumes.items():
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"{name}.nii.gz")
    panels = {}
    for scale_type in ("target", "each"):
        png = volume_montage(*(tmp_path / f"{n}.nii.gz" for n in "sotf"), tmp_path / f"{scale_type}.png", scale_type)
        row = np.asarray(Image.open(png))[22::2, ::2]
        panels[scale_type] = [row[:, i * 16: i * 16 + 12] for i in range(5)]
    assert (panels["target"][1] == 255).all()  # the output saturates in the target's range
    np.testing.assert_array_equal(panels["each"][1], panels["each"][2])  # same image up to units: same panel
    assert panels["each"][3].max() <= 1  # |error| vanishes
    with pytest.raises(ValueError, match="scale_type"):
        volume_montage(*(tmp_path / f"{n}.nii.gz" for n in "sotf"), tmp_path / "x.png", "percentile")
