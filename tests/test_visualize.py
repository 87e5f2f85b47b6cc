import nibabel as nib
import numpy as np
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
    assert Image.open(out).size == (2 * 5 * (12 + 4), 2 * 14)
