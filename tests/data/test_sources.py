from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtrans.data.sources import list_domain, pair_domains
from medtrans.errors import InputError
from tests.conftest import shared_file, synthetic_nii, synthetic_pair


def _nifti(path: Path, shape=(6, 7, 8), affine=None) -> Path:
    nib.save(nib.Nifti1Image(np.random.rand(*shape).astype(np.float32), np.eye(4) if affine is None else affine), path)
    return path


def test_folder_glob_and_csv(tmp_path):
    for name in ("s2.nii.gz", "s1.nii"):
        _nifti(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [r.subject_id for r in list_domain(tmp_path)] == ["s1", "s2"]
    assert [r.subject_id for r in list_domain(str(tmp_path / "s2*"))] == ["s2"]
    csv = tmp_path / "domain.csv"
    csv.write_text("subject_id,image,mask\nA,s1.nii,s2.nii.gz\nB,s2.nii.gz,\n")
    records = list_domain(csv)
    assert records[0].image == tmp_path / "s1.nii" and records[0].mask == tmp_path / "s2.nii.gz"
    assert records[1].mask is None


def test_glob_takes_subject_ids_from_folders_and_matches_masks(tmp_path, synthetic_brains):
    """The layout of a real dataset (one folder per subject, t1/t2/brainmask inside), built from synthetic subjects."""
    for i, subject in enumerate(("TCGA-DU-7294", "TCGA-FG-6692")):
        (tmp_path / subject).mkdir()
        t1, t2 = synthetic_pair(synthetic_brains, f"test{i:02d}")
        synthetic_nii(t1, tmp_path / subject / "t1.nii.gz")
        synthetic_nii(t2, tmp_path / subject / "t2.nii.gz")
        synthetic_nii(synthetic_brains / "test" / "mask" / f"test{i:02d}.nii.gz", tmp_path / subject / "brainmask.nii.gz")
    records = list_domain(f"{tmp_path}/*/t1.nii.gz", masks=f"{tmp_path}/*/brainmask.nii.gz")
    assert [r.subject_id for r in records] == ["TCGA-DU-7294", "TCGA-FG-6692"]
    assert all(r.mask.parent == r.image.parent for r in records)
    pairs = pair_domains(records, list_domain(f"{tmp_path}/*/t2.nii.gz"))
    assert [a.subject_id for a, _ in pairs] == ["TCGA-DU-7294", "TCGA-FG-6692"]


def test_real_glob_takes_subject_ids_from_folders_and_matches_masks():
    shared_file("tcga-lgg-brainles/TCGA-DU-7294/t1.nii.gz")
    root = shared_file("tcga-lgg-brainles")
    records = list_domain(f"{root}/*/t1.nii.gz", masks=f"{root}/*/brainmask.nii.gz")
    assert [r.subject_id for r in records] == ["TCGA-DU-7294", "TCGA-FG-6692"]
    assert all(r.mask.parent == r.image.parent for r in records)
    pairs = pair_domains(records, list_domain(f"{root}/*/t2.nii.gz"))
    assert [a.subject_id for a, _ in pairs] == ["TCGA-DU-7294", "TCGA-FG-6692"]


def test_bad_sources_name_the_file(tmp_path):
    with pytest.raises(InputError, match="holds no NIfTI"):
        list_domain(tmp_path)
    with pytest.raises(InputError, match="CSV file does not exist"):
        list_domain(tmp_path / "missing.csv")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("id,path\n1,x.nii\n")
    with pytest.raises(InputError, match="lacks column"):
        list_domain(bad_csv)
    ghost = tmp_path / "ghost.csv"
    ghost.write_text("subject_id,image\nA,nowhere.nii.gz\n")
    with pytest.raises(InputError, match="nowhere.nii.gz: listed for subject A but does not exist"):
        list_domain(ghost)
    _nifti(tmp_path / "s1.nii.gz")
    (tmp_path / "masks").mkdir()
    _nifti(tmp_path / "masks" / "other.nii.gz")
    with pytest.raises(InputError, match="has no mask"):
        list_domain(tmp_path, masks=tmp_path / "masks")


def test_pairing_checks_subjects_and_grids(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _nifti(a / "s1.nii.gz"), _nifti(b / "s1.nii.gz")
    _nifti(a / "s2.nii.gz")
    with pytest.raises(InputError, match=r"only in A \['s2'\]"):
        pair_domains(list_domain(a), list_domain(b))
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    _nifti(b / "s2.nii.gz", affine=shifted)
    with pytest.raises(InputError, match="s2.nii.gz: grid"):
        pair_domains(list_domain(a), list_domain(b))
