"""Shared fixtures: synthetic brains made on the fly (medtrans' embedded dataset, the one ``medtrans demo`` builds) for
every test that only needs "a brain volume", and real co-registered MRI from ../shared/data for the tests that check
real-data behaviour (skipped without it on a user's machine, a failure in CI)."""

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


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """No test writes to the user's on-disk training cache (``~/.cache/medtrans``): each test's goes to a folder of
    its own."""
    monkeypatch.setenv("MEDTRANS_CACHE_DIR", str(tmp_path_factory.mktemp("medtrans_cache")))


REAL_DATA_SKIP = "needs the real test data"
"""Part of the reason of every skip for missing real data: the terminal summary counts the skips by it."""


def shared_file(relative: str) -> Path:
    """A file of ../shared/data; skipped on a user's machine without it, a failure in CI (which always has it)."""
    path = SHARED_DATA / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real test data {path} is missing in CI")
        pytest.skip(f"{REAL_DATA_SKIP} {path} (set MEDTRANS_SHARED_DATA)")
    return path


# ---- the embedded synthetic dataset -------------------------------------------------------------------------------
SYNTHETIC = {"num_a": 2, "num_b": 2, "num_test": 2, "seed": 0}
"""``medtrans.datasets.make_synthetic_brains`` arguments (the demo's generator at its 2 mm default, fewer subjects):
``A/a00, a01`` T1w, ``B/b00, b01`` T2w of other subjects, ``test/{A,B,mask}/test00, test01`` co-registered pairs.
Each volume is 98x116x94, 2 mm, RAS, float32, skull-stripped (background 0)."""


def _build_synthetic(root: Path) -> Path:
    from medtrans.datasets import make_synthetic_brains
    from medtrans.errors import MedtransError

    try:
        make_synthetic_brains(root, **SYNTHETIC)
    except MedtransError as err:  # nilearn (the demo extra, which bash run.sh installs) is missing
        if os.environ.get("CI"):
            raise
        pytest.skip(f"the embedded synthetic dataset cannot be built: {err}")
    (root / "complete").touch()
    return root


@pytest.fixture(scope="session")
def synthetic_brains(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded synthetic dataset (see :data:`SYNTHETIC`), built once per run: xdist's workers share one copy in
    the run's common temporary folder (about 4 s to build), read-only by convention."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _build_synthetic(tmp_path_factory.mktemp("synthetic_brains"))
    from filelock import FileLock

    common = tmp_path_factory.getbasetemp().parent  # the same folder for every worker of this run
    root = common / "synthetic_brains"
    with FileLock(str(common / "synthetic_brains.lock")):
        if not (root / "complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            _build_synthetic(root)
    return root


def synthetic_pair(brains: Path, subject: str = "test00") -> tuple[Path, Path]:
    """The synthetic T1w and T2w of one held-out subject (co-registered, same grid), ``.nii.gz``."""
    return brains / "test" / "A" / f"{subject}.nii.gz", brains / "test" / "B" / f"{subject}.nii.gz"


def synthetic_nii(source: Path, target: Path) -> Path:
    """``source`` written as ``target`` (``.nii`` or ``.nii.gz``, header and values kept): a file a test may change."""
    nib.save(nib.load(source), target)
    return target


def synthetic_lps(source: Path, target: Path) -> Path:
    """``source`` reoriented to LPS (the orientation of DICOM-derived scans such as TCGA's), the same world geometry:
    a header whose axes medtrans must flip to RAS and back."""
    image = nib.load(source)
    transform = nib.orientations.ornt_transform(nib.io_orientation(image.affine), nib.orientations.axcodes2ornt("LPS"))
    lps = image.as_reoriented(transform)
    lps.set_qform(lps.affine, code=1)
    lps.set_sform(lps.affine, code=1)
    nib.save(lps, target)
    return target


def synthetic_domains(root: Path, brains: Path, subjects: tuple[str, ...] = ("s1",)) -> tuple[Path, Path]:
    """Domain folders ``root/a`` (synthetic T1w) and ``root/b`` (its co-registered T2w) holding ``s1.nii`` (and
    ``s2.nii``...: one held-out synthetic subject each, paired by file name): the layout the SPM templates' avg152 T1
    and T2 gave these tests before, on a brain of about the same size (98x116x94 against 91x109x91, 2 mm)."""
    folders = root / "a", root / "b"
    for folder in folders:
        folder.mkdir()
    for i, subject in enumerate(subjects):
        for folder, path in zip(folders, synthetic_pair(brains, f"test{i:02d}")):
            synthetic_nii(path, folder / f"{subject}.nii")
    return folders


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


def central_block(path: Path, size: int = 48) -> torch.Tensor:
    """The central ``size``³ block of a volume, :func:`to_unit_range`, as ``(1, 1, size, size, size)``."""
    data = to_unit_range(np.asarray(nib.load(path).dataobj, dtype=np.float32))
    c, h = [s // 2 for s in data.shape], size // 2
    return torch.from_numpy(data[c[0] - h : c[0] + h, c[1] - h : c[1] + h, c[2] - h : c[2] + h].copy())[None, None]


@pytest.fixture(scope="session")
def brain_t1_t2(synthetic_brains: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Co-registered synthetic T1w and T2w of one subject (2 mm), a central 48³ block in [-1, 1], ``(1, 1, 48³)``:
    white matter, grey matter, ventricles and sulci, with bias field and Rician noise."""
    t1, t2 = synthetic_pair(synthetic_brains)
    return central_block(t1), central_block(t2)


@pytest.fixture(scope="session")
def brain_t1_slice(brain_t1_t2: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The central axial slice of the synthetic T1 block, ``(1, 1, 48, 48)``."""
    return brain_t1_t2[0][..., 24].contiguous()


@pytest.fixture(scope="session")
def lesjak_t1_t2() -> tuple[torch.Tensor, torch.Tensor]:
    """Co-registered T1 and T2 of lesjak-ms-mni patient07 (LAS, 1 mm), a central 48³ block in [-1, 1], ``(1, 1, 48³)``."""
    return tuple(central_block(shared_file(f"lesjak-ms-mni/patient07/{name}.nii.gz")) for name in ("T1", "T2"))


@pytest.fixture(scope="session")
def lesjak_t1_slice(lesjak_t1_t2: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The central axial slice of the T1 block, ``(1, 1, 48, 48)``."""
    return lesjak_t1_t2[0][..., 24].contiguous()


PAIRS = {"synthetic": "brain_t1_t2", "lesjak": "lesjak_t1_t2"}


@pytest.fixture(params=sorted(PAIRS, reverse=True))
def each_t1_t2(request: pytest.FixtureRequest) -> tuple[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(name, (t1, t2))`` for each 48³ block in turn: the synthetic pair (always) and lesjak's (where the real data
    is), for the tests whose thresholds were first measured on real MRI and that hold on the synthetic brains too."""
    return request.param, request.getfixturevalue(PAIRS[request.param])


@pytest.fixture
def seeded() -> None:
    """Deterministic torch RNG for a test."""
    torch.manual_seed(0)


def refusal_line(capsys, argv: list, names: str | tuple[str, ...]) -> str:
    """Run ``medtrans ARGV`` and assert the refusal contract: exit status 1, no traceback, exactly one stderr line
    ``medtrans <command>: error: ...`` that contains each of ``names``; return that line."""
    from medtrans.commands.cli import main

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


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr  # (path, line, "Skipped: reason"), also when it came from an xdist worker
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After the short test summary: one line saying how many tests were skipped for want of the real data."""
    result = yield
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if REAL_DATA_SKIP in _skip_reason(r)]
    if skipped:
        count = f"{len(skipped)} tests skipped: they need" if len(skipped) > 1 else "1 test skipped: it needs"
        terminalreporter.write_line(f"{count} the real data in {SHARED_DATA} (set MEDTRANS_SHARED_DATA to the shared "
                                    "data folder to run them)", yellow=True, bold=True)
    return result
