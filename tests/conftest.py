"""Shared fixtures: real co-registered MRI from ../shared/data and synthetic volumes made on the fly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDTRANS_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests that run under several worker processes must not oversubscribe the two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def shared_file(relative: str) -> Path:
    """A file of ../shared/data; skipped on a user's machine without it, a failure in CI (which always has it)."""
    path = SHARED_DATA / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real test data {path} is missing in CI")
        pytest.skip(f"real test data {path} not available (set MEDTRANS_SHARED_DATA)")
    return path


def spm_template_domains(root: Path) -> tuple[Path, Path]:
    """Domain folders ``root/a`` (SPM avg152 T1) and ``root/b`` (avg152 T2), one 91x109x91 subject ``s1.nii`` each."""
    folders = []
    for domain, name in (("a", "avg152T1.nii"), ("b", "avg152T2.nii")):
        (root / domain).mkdir()
        shutil.copy(shared_file(f"spm-templates/canonical/{name}"), root / domain / "s1.nii")
        folders.append(root / domain)
    return folders[0], folders[1]


def checkerboard_pattern(shape: tuple[int, ...]) -> torch.Tensor:
    """``(B, C, *spatial)`` of ±1 alternating along every spatial axis (the 2-voxel period), +1 at the origin."""
    parity = torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape[2:]], indexing="ij")).sum(0) % 2
    return (1.0 - 2.0 * parity).expand(shape)


def to_unit_range(volume: np.ndarray) -> np.ndarray:
    """1-99th percentile of the foreground (> 0) mapped to [-1, 1], background -1."""
    fg = volume > 0
    lo, hi = np.percentile(volume[fg], [1, 99])
    out = np.clip((volume - lo) / (hi - lo), 0, 1) * 2 - 1
    out[~fg] = -1
    return out.astype(np.float32)


@pytest.fixture(scope="session")
def lesjak_t1_t2() -> tuple[torch.Tensor, torch.Tensor]:
    """Co-registered T1 and T2 of lesjak-ms-mni patient07 (LAS, 1 mm), a central 48³ block in [-1, 1], ``(1, 1, 48³)``."""
    vols = []
    for name in ("T1", "T2"):
        data = np.asarray(nib.load(shared_file(f"lesjak-ms-mni/patient07/{name}.nii.gz")).dataobj, dtype=np.float32)
        data = to_unit_range(data)
        c = [s // 2 for s in data.shape]
        vols.append(torch.from_numpy(data[c[0] - 24 : c[0] + 24, c[1] - 24 : c[1] + 24, c[2] - 24 : c[2] + 24].copy()))
    return vols[0][None, None], vols[1][None, None]


@pytest.fixture(scope="session")
def lesjak_t1_slice(lesjak_t1_t2: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The central axial slice of the T1 block, ``(1, 1, 48, 48)``."""
    return lesjak_t1_t2[0][..., 24].contiguous()


@pytest.fixture
def seeded() -> None:
    """Deterministic torch RNG for a test."""
    torch.manual_seed(0)


def refusal_line(capsys, argv: list, names: str | tuple[str, ...]) -> str:
    """Run ``medtrans ARGV`` and assert the refusal contract: exit status 1, no traceback, exactly one stderr line
    ``medtrans <command>: error: ...`` that contains each of ``names``; return that line."""
    from medtrans.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1, (argv, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"medtrans {argv[0]}: error:"), err
    for name in (names,) if isinstance(names, str) else names:
        assert name in lines[0], (name, lines[0])
    return lines[0]
