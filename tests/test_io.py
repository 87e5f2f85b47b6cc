import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medtrans.errors import InputError
from medtrans.io import atomic_write, read_volume, write_volume


def _write_dicom_series(volume: sitk.Image, folder) -> None:
    """A minimal CT-like DICOM series, one file per slice (SimpleITK's series-writing recipe)."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = volume.GetDirection()
    common = [
        ("0008|0060", "MR"),
        ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.42"),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.43"),
        ("0020|0037", "\\".join(map(str, (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])))),
        ("0028|0030", "\\".join(map(str, volume.GetSpacing()[:2]))),
        ("0018|0050", str(volume.GetSpacing()[2])),
    ]
    for i in range(volume.GetDepth()):
        image = volume[:, :, i]
        for tag, value in common:
            image.SetMetaData(tag, value)
        image.SetMetaData("0020|0032", "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, i)))))
        image.SetMetaData("0020|0013", str(i))
        image.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.44.{i}")
        writer.SetFileName(str(folder / f"slice{i:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_reads_with_the_nifti_geometry(tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, (12, 10, 6)).astype(np.int16)  # (x, y, z)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    _write_dicom_series(image, tmp_path / "series")
    sitk.WriteImage(image, str(tmp_path / "same.nii.gz"))  # SimpleITK's own LPS→RAS NIfTI conversion
    from_dicom = read_volume(tmp_path / "series")
    from_nifti = read_volume(tmp_path / "same.nii.gz")
    assert np.array_equal(from_dicom.data, data.astype(np.float32))
    assert np.allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
    assert from_dicom.spacing == pytest.approx((0.8, 0.9, 2.5), abs=1e-4)


@pytest.mark.parametrize(
    "make,problem",
    [
        (lambda p: np.random.rand(6, 6, 6, 3), "expected a 3D volume, got 4D"),
        (lambda p: np.random.rand(6, 6), "expected a 3D volume, got 2D"),
        (lambda p: np.where(np.arange(216).reshape(6, 6, 6) == 7, np.nan, 1.0 + np.random.rand(6, 6, 6)), "1 NaN/Inf"),
        (lambda p: np.full((6, 6, 6), 3.0), "constant image"),
    ],
)
def test_bad_volumes_are_named(tmp_path, make, problem):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(make(path).astype(np.float32), np.eye(4)), path)
    with pytest.raises(InputError, match=f"bad.nii.gz: .*{problem}"):
        read_volume(path)


def test_unreadable_files_are_named(tmp_path):
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 20).astype(np.float32), np.eye(4)), good)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fake = tmp_path / "fake.nii.gz"
    fake.write_text("not gzip")
    for path in (truncated, text, fake, tmp_path / "missing.nii.gz", tmp_path):
        with pytest.raises(InputError, match=path.name):
            read_volume(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def explode(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "out.nii.gz", explode)
    assert os.listdir(tmp_path) == []
    with pytest.raises(InputError, match="does not exist"):
        atomic_write(tmp_path / "no" / "out.nii.gz", explode)


def test_write_volume_keeps_geometry_as_float32(tmp_path):
    affine = np.diag([-1.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = (5, 6, 7)
    nib.save(nib.Nifti1Image(np.random.randint(0, 9, (5, 6, 7)).astype(np.int16), affine), tmp_path / "in.nii.gz")
    volume = read_volume(tmp_path / "in.nii.gz")
    out = write_volume(tmp_path / "out.nii.gz", volume.data * 0.5, volume)
    image = nib.load(out)
    assert image.get_data_dtype() == np.float32 and np.allclose(image.affine, affine)
    assert np.allclose(image.get_fdata(), volume.data * 0.5)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)
