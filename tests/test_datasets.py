import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nilearn", reason="the 'demo' extra is not installed")

from medtrans.datasets import load_icbm152, make_synthetic_brains  # noqa: E402


@pytest.fixture(scope="module")
def brains(tmp_path_factory):
    return make_synthetic_brains(tmp_path_factory.mktemp("brains"), num_a=2, num_b=2, num_test=1, voxel_mm=4.0)


def test_layout_and_geometry(brains):
    assert sorted(p.name for p in (brains / "A").iterdir()) == ["a00.nii.gz", "a01.nii.gz"]
    assert sorted(p.name for p in (brains / "B").iterdir()) == ["b00.nii.gz", "b01.nii.gz"]
    for folder in ("test/A", "test/B", "test/mask"):
        assert [p.name for p in (brains / folder).iterdir()] == ["test00.nii.gz"]
    image = nib.load(brains / "A" / "a00.nii.gz")
    assert image.shape == (49, 58, 47) and np.allclose(np.abs(np.diag(image.affine))[:3], 4.0)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")


def test_tissue_contrasts_follow_the_spin_echo_equation(brains):
    maps, _ = load_icbm152(4.0)
    t1 = nib.load(brains / "test" / "A" / "test00.nii.gz").get_fdata()
    t2 = nib.load(brains / "test" / "B" / "test00.nii.gz").get_fdata()
    csf, wm = maps["csf"] > 0.9, maps["wm"] > 0.9  # the test subject is deformed by ≤ 2 voxels: use cores
    assert np.median(t1[csf]) < 0.5 * np.median(t1[wm])  # T1w: CSF dark
    assert np.median(t2[csf]) > 2.0 * np.median(t2[wm])  # T2w: CSF bright
    assert t1.min() == 0 and (t1 == 0).mean() > 0.3  # skull-stripped background


def test_subjects_differ(brains):
    a0 = nib.load(brains / "A" / "a00.nii.gz").get_fdata()
    a1 = nib.load(brains / "A" / "a01.nii.gz").get_fdata()
    assert not np.allclose(a0, a1) and np.corrcoef(a0.ravel(), a1.ravel())[0, 1] > 0.8
