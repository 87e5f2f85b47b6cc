"""Bad input that is read — hostile headers, special files, odd masks and non-finite option values — is refused in
one line, before it costs memory or hangs.

Every volume here is synthetic, written in ``tmp_path`` (raw NIfTI headers where nibabel would not write the fault),
so these tests run on a fresh clone without ../shared. Every refusal must end with exit status 1, exactly one line on
stderr naming the file or the option, no traceback, nothing written, and every input byte-for-byte and mode-for-mode
unchanged (the contract of tests/test_bad_input.py).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import pathlib
import re
import signal
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtrans.commands.cli import main
from medtrans.data.sources import list_domain
from medtrans.defaults import MAX_VOXELS
from medtrans.errors import InputError
from medtrans.evaluate import EvaluationProtocol
from medtrans.io import read_mask, read_volume
from tests.conftest import REPO, refusal_line

SHAPE = (24, 24, 24)
TINY_UNET = {"_target_": "medtrans.networks.UNetGenerator", "channels": [4, 8], "strides": [2], "in_channels": 1,
             "out_channels": 1, "spatial_dims": 3}


# -- synthetic volumes ------------------------------------------------------------------------------------------------
def _phantom(seed: int = 0) -> np.ndarray:
    """A bright ball with texture on a zero background: varied inside, flat outside."""
    grid = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in SHAPE], indexing="ij"))
    ball = (grid**2).sum(0) < 9.0**2
    texture = np.random.default_rng(seed).uniform(50, 150, SHAPE)
    return np.where(ball, texture, 0).astype(np.float32)


def raw_nifti(path: Path, data: np.ndarray, claim_shape: tuple[int, ...] | None = None, payload: bytes | None = None,
              **fields) -> Path:
    """Write a single-file NIfTI-1 byte by byte (gzipped for ``.nii.gz``): its header as given, faults included.

    Args:
        claim_shape: the shape the header claims (default ``data.shape``).
        payload: the bytes after the header (default ``data``'s).
        fields: header fields to set after the defaults (qform and sform of a 1 mm identity grid, codes 1); a dict
            value sets single elements, e.g. ``pixdim={1: np.nan}``.
    """
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(claim_shape or data.shape)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    for key, value in fields.items():
        if isinstance(value, dict):
            array = header[key].copy()
            for index, element in value.items():
                array[index] = element
            header[key] = array
        else:
            header[key] = value
    body = payload if payload is not None else np.asarray(data).tobytes(order="F")
    blob = header.binaryblock + b"\0" * 4 + body
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


def _save(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _snapshot(*folders: Path) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def env(tmp_path):
    """``inputs/`` (good prediction, target and mask), ``bad/`` (each test's hostile files) and an empty ``out/``."""
    folders = {name: tmp_path / name for name in ("inputs", "bad", "out")}
    for folder in folders.values():
        folder.mkdir()
    inputs = folders["inputs"]
    _save(inputs / "pred.nii.gz", _phantom(0))
    _save(inputs / "target.nii.gz", _phantom(1))
    _save(inputs / "mask.nii.gz", (_phantom(1) > 0).astype(np.uint8))
    return {**folders, "pred": inputs / "pred.nii.gz", "target": inputs / "target.nii.gz",
            "mask": inputs / "mask.nii.gz", "tmp": tmp_path}


@pytest.fixture
def watchdog():
    """Fail a test that blocks (a FIFO opened for reading, /dev/zero read to its end) instead of hanging the suite."""
    def expired(signum, frame):
        raise TimeoutError("blocked on a special file")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def refused(capsys, env, argv: list, names: str) -> str:
    """Run ``medtrans ARGV``; assert the refusal contract (one line naming ``names``, exit 1, no traceback, nothing
    written in ``out/``, no input changed); return the error line."""
    before = _snapshot(env["inputs"], env["bad"])
    line = refusal_line(capsys, argv, names)
    assert list(env["out"].iterdir()) == [], list(env["out"].iterdir())
    assert _snapshot(env["inputs"], env["bad"]) == before, "an input changed"
    return line


def _evaluate(env, prediction, target, *options) -> list[str]:
    return [str(a) for a in ["evaluate", prediction, target, *options, "--csv", env["out"] / "scores.csv"]]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny 3D U-Net checkpoint (translate reads its input only after loading a model)."""
    from medtrans.model import TranslationModel, save_generator

    try:
        from medtrans.networks.registry import build_network
    except ImportError:
        from medtrans.model import build_network
    path = tmp_path_factory.mktemp("model") / "m3d.pt"
    save_generator(path, TranslationModel(build_network(TINY_UNET), TINY_UNET, 3))
    return path


# -- 1. memory bombs: refused from the header and the file's size, before allocating ------------------------------
BOMBS = {
    "gz_900": ("bomb.nii.gz", (900, 900, 900), "gzip cannot expand"),  # 64 kB claiming 2.9 GB
    "nii_900": ("bomb.nii", (900, 900, 900), "is truncated"),
    "gz_4000": ("huge.nii.gz", (4000, 4000, 4000), f"limit of {MAX_VOXELS:,} voxels"),  # 256 GB
}


def _bomb(env, key: str) -> Path:
    name, shape, _ = BOMBS[key]
    payload = np.random.default_rng(0).bytes(64_000)
    return raw_nifti(env["bad"] / name, np.zeros(1, np.float32), claim_shape=shape, payload=payload)


@pytest.mark.parametrize("key", sorted(BOMBS))
def test_a_header_bomb_is_refused_before_allocating(key, env):
    bomb, message = _bomb(env, key), BOMBS[key][2]
    good = read_volume(env["pred"])
    for read in (lambda: read_volume(bomb), lambda: read_mask(bomb, good)):
        tracemalloc.start()
        try:
            with pytest.raises(InputError, match=message) as caught:
                read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert caught.value.path == bomb
        assert peak < 16e6, f"allocated {peak / 1e6:.0f} MB before refusing"


@pytest.mark.parametrize("key", sorted(BOMBS))
def test_commands_refuse_a_header_bomb(key, env, capsys, model):
    bomb, message = _bomb(env, key), BOMBS[key][2]
    assert message in refused(capsys, env, _evaluate(env, bomb, env["target"]), str(bomb))
    assert message in refused(capsys, env, _evaluate(env, env["pred"], env["target"], "--mask", bomb), str(bomb))
    refused(capsys, env, ["translate", bomb, env["out"] / "o.nii.gz", "--model", model, "--no-progress"], str(bomb))
    refused(capsys, env, ["translate", env["pred"], env["out"] / "o.nii.gz", "--model", model, "--mask", bomb,
                          "--no-progress"], str(bomb))


def _dicom_series(folder: Path, volume: np.ndarray) -> Path:
    """``volume`` ``(z, y, x)`` int16 as a DICOM series, one file per slice (SimpleITK)."""
    import SimpleITK as sitk

    folder.mkdir()
    image = sitk.GetImageFromArray(volume)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.4242"
    for i in range(image.GetDepth()):
        slice_ = image[:, :, i]
        for tag, value in (("0020|000d", uid), ("0020|000e", uid + ".1"), ("0008|0060", "MR"),
                           ("0020|0032", f"0\\0\\{2.0 * i}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0013", str(i)), ("0028|0030", "1\\1"), ("0018|0050", "2")):
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{i:03d}.dcm"))
        writer.Execute(slice_)
    return folder


def test_a_dicom_series_over_the_limit_is_refused_from_its_headers(env, monkeypatch):
    pixels = np.random.default_rng(0).uniform(0, 100, (6, 12, 10)).astype(np.int16)
    series = _dicom_series(env["bad"] / "series", pixels)
    volume = read_volume(series)
    assert volume.data.shape == (10, 12, 6) and volume.spacing == (1.0, 1.0, 2.0)
    monkeypatch.setattr("medtrans.io.volumes.MAX_VOXELS", 719)
    with pytest.raises(InputError, match="its 6 DICOM files claim 10×12×6 = 720 voxels, over medtrans's limit of 7"):
        read_volume(series)


def test_a_truncated_uncompressed_file_is_refused_from_its_size(env):
    data = _phantom()
    short = raw_nifti(env["bad"] / "short.nii", data, payload=data.tobytes(order="F")[:1000])
    with pytest.raises(InputError, match="is truncated"):
        read_volume(short)


# -- 2. headers: spacing and voxel-to-world transforms must be finite and invertible ------------------------------
HEADERS = {
    "pixdim_nan": ({"pixdim": {1: np.nan}, "qform_code": 0, "sform_code": 0}, "voxel spacing (pixdim) nan, 1, 1"),
    "pixdim_inf": ({"pixdim": {2: np.inf}, "sform_code": 0}, "voxel spacing (pixdim) 1, inf, 1"),
    "pixdim_zero": ({"pixdim": {3: 0.0}, "qform_code": 0, "sform_code": 0}, "voxel spacing (pixdim) 1, 1, 0"),
    "pixdim_zero_with_sform": ({"pixdim": {1: 0.0}}, "voxel spacing (pixdim) 0, 1, 1"),
    "pixdim_negative": ({"pixdim": {1: -1.0}}, "voxel spacing (pixdim) -1, 1, 1"),
    "sform_nan": ({"srow_x": {0: np.nan}}, "sform has NaN or infinite entries"),
    "sform_inf": ({"srow_y": {3: np.inf}}, "sform has NaN or infinite entries"),
    "sform_singular": ({"srow_z": {2: 0.0}}, "sform is singular"),
    "sform_collinear": ({"srow_x": {0: 1.0, 1: 1.0}, "srow_y": {0: 1.0, 1: 1.0}}, "sform is singular"),
    "qform_nan": ({"quatern_b": np.nan, "sform_code": 0}, "qform has NaN or infinite entries"),
}


@pytest.mark.parametrize("key", sorted(HEADERS))
def test_a_broken_header_geometry_is_one_line(key, env, capsys):
    fields, message = HEADERS[key]
    bad = raw_nifti(env["bad"] / "header.nii.gz", _phantom(), **fields)
    assert f"{bad}: header {message}" in refused(capsys, env, _evaluate(env, bad, env["target"]), str(bad))
    assert f"{bad}: header {message}" in refused(capsys, env, _evaluate(env, env["pred"], bad), str(bad))
    with pytest.raises(InputError, match=re.escape(message)):
        read_mask(bad, read_volume(env["pred"]))


def test_train_refuses_a_domain_with_a_broken_header(env, capsys):
    bad = raw_nifti(env["bad"] / "header.nii.gz", _phantom(), pixdim={1: np.nan}, qform_code=0, sform_code=0)
    run = env["out"] / "run"
    line = refused(capsys, env, ["train", "--method", "nec", "--data-a", bad, "--data-b", env["target"], "--output",
                                 run, "--iterations", "1", "--tracking", "none", "--no-progress"], str(bad))
    assert "pixdim" in line.split(str(bad))[1]


def test_the_raw_writer_makes_a_readable_volume(env):
    """The faults above are the fields changed, not the way the files are written."""
    volume = read_volume(raw_nifti(env["bad"] / "fine.nii.gz", _phantom()))
    assert volume.data.shape == SHAPE and volume.spacing == (1.0, 1.0, 1.0)


def test_a_header_nibabel_would_fix_is_one_line_on_a_real_stderr(env, model):
    """nibabel logs (to its own stderr handler) before "fixing" a zero pixdim: the console script prints only ours."""
    bad = raw_nifti(env["bad"] / "zero.nii.gz", _phantom(), pixdim={1: 0.0}, qform_code=0, sform_code=0)
    done = subprocess.run([sys.executable, "-m", "medtrans", "translate", str(bad), str(env["out"] / "o.nii.gz"),
                           "--model", str(model), "--no-progress"], capture_output=True, encoding="utf-8", cwd=REPO)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"medtrans translate: error: {bad}: header voxel spacing (pixdim)"), done.stderr
    assert list(env["out"].iterdir()) == []


# -- 3. complex data is refused, not truncated to its real part -------------------------------------------------
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_data_is_refused(dtype, env, capsys, model):
    data = _phantom().astype(dtype) * (1 + 1j)
    bad = raw_nifti(env["bad"] / "complex.nii.gz", data)
    line = refused(capsys, env, _evaluate(env, bad, env["target"]), str(bad))
    assert "complex" in line and np.dtype(dtype).name in line
    refused(capsys, env, ["translate", bad, env["out"] / "o.nii.gz", "--model", model, "--no-progress"],
            f"{bad}: holds complex-valued data")


# -- 4. option values: finite, and pairs in order -----------------------------------------------------------------
@pytest.mark.parametrize("options,names", [
    (["--overlap", "nan"], "--overlap"),
    (["--overlap", "inf"], "--overlap"),
    (["--faithfulness-eps", "nan"], "--faithfulness-eps"),
    (["--faithfulness-eps", "inf"], "--faithfulness-eps"),
    (["--target-intensity", "window", "--window", "5", "1"], "--window"),
    (["--target-intensity", "window", "--window", "3", "3"], "--window"),
    (["--target-intensity", "window", "--window", "0", "inf"], "--window"),
    (["--target-intensity", "window", "--window", "nan", "1"], "--window"),
])
def test_non_finite_or_inverted_translate_options(options, names, env, capsys, model):
    line = refused(capsys, env, ["translate", env["pred"], env["out"] / "o.nii.gz", "--model", model, *options], names)
    assert "argument " + names in line


@pytest.mark.parametrize("options,names", [
    (["--percentiles", "99", "1"], "--percentiles"),
    (["--percentiles", "50", "50"], "--percentiles"),
    (["--percentiles", "-1", "99"], "--percentiles"),
    (["--percentiles", "1", "101"], "--percentiles"),
    (["--percentiles", "nan", "99"], "--percentiles"),
    (["--sigma-mm", "nan"], "--sigma-mm"),
    (["--sigma-mm", "inf"], "--sigma-mm"),
    (["--normalization", "none", "--data-range", "inf"], "--data-range"),
    (["--normalization", "none", "--data-range", "nan"], "--data-range"),
])
def test_non_finite_or_inverted_evaluate_options(options, names, env, capsys):
    line = refused(capsys, env, _evaluate(env, env["pred"], env["target"], *options), names)
    assert "argument " + names in line


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_memory_budget_is_refused(value, env, capsys):
    run = env["out"] / "run"
    refused(capsys, env, ["train", "--method", "nec", "--data-a", env["pred"], "--data-b", env["target"],
                          "--output", run, "--memory-gb", value, "--tracking", "none"], "--memory-gb")


def test_percentile_bounds_still_accept_the_extremes(env, capsys):
    assert main(_evaluate(env, env["pred"], env["target"], "--percentiles", "0", "100")) == 0
    assert "0–100th percentiles" in capsys.readouterr().out


@pytest.mark.parametrize("fields", [{"lower": 99.0, "upper": 1.0}, {"lower": -1.0}, {"upper": 100.5},
                                    {"lower": float("nan")}, {"sigma_mm": float("nan")},
                                    {"normalization": "none", "data_range": float("inf")}])
def test_the_evaluation_protocol_refuses_the_same_values(fields):
    with pytest.raises(ValueError):
        EvaluationProtocol(**fields)


# -- 5. evaluate: masks that cannot be scored in are refused, never silently dropped -----------------------------
def test_a_one_voxel_mask_is_refused(env, capsys):
    one = np.zeros(SHAPE, np.uint8)
    one[12, 12, 12] = 1
    mask = _save(env["bad"] / "one.nii.gz", one)
    for normalization in (["--normalization", "target"], ["--normalization", "each"],
                          ["--normalization", "none", "--data-range", "200"]):
        line = refused(capsys, env, _evaluate(env, env["pred"], env["target"], "--mask", mask, *normalization),
                       str(mask))
        assert "single voxel" in line


def test_a_mask_where_the_volumes_are_flat_is_refused(env, capsys):
    corner = np.zeros(SHAPE, np.uint8)
    corner[:4, :4, :4] = 1  # background of both volumes: flat
    mask = _save(env["bad"] / "corner.nii.gz", corner)
    line = refused(capsys, env, _evaluate(env, env["pred"], env["target"], "--mask", mask), str(env["target"]))
    assert "is flat inside the mask" in line and str(mask) in line


def test_a_target_flat_inside_the_mask_is_named(env, capsys):
    """The target is flat inside the mask, the prediction is not: the target is what cannot be normalised."""
    target = _phantom(1)
    target[8:16, 8:16, 8:16] = 100.0
    flat_target = _save(env["bad"] / "flat_target.nii.gz", target)
    inner = np.zeros(SHAPE, np.uint8)
    inner[9:15, 9:15, 9:15] = 1
    mask = _save(env["bad"] / "inner.nii.gz", inner)
    line = refused(capsys, env, _evaluate(env, env["pred"], flat_target, "--mask", mask), str(flat_target))
    assert line.startswith(f"medtrans evaluate: error: {flat_target}: is flat inside the mask {mask}")
    # each volume by its own percentiles: a flat prediction is named as such
    line = refused(capsys, env, _evaluate(env, flat_target, env["pred"], "--mask", mask, "--normalization", "each"),
                   str(flat_target))
    assert "is flat inside the mask" in line


def test_a_flat_volume_without_a_mask_is_refused(env, capsys):
    flat = np.zeros(SHAPE, np.float32)
    flat[0, 0, 0] = 1.0  # not constant (so readable), but its 1st and 99th percentiles are equal
    target = _save(env["bad"] / "nearly_constant.nii.gz", flat)
    line = refused(capsys, env, _evaluate(env, env["pred"], target), str(target))
    assert "is flat over the whole volume" in line


def test_a_mask_folder_for_single_files_is_refused(env, capsys):
    masks = env["bad"] / "masks"
    masks.mkdir()
    _save(masks / "pred.nii.gz", (_phantom(1) > 0).astype(np.uint8))
    line = refused(capsys, env, _evaluate(env, env["pred"], env["target"], "--mask", masks), str(masks))
    assert "--mask is a folder" in line


def test_a_fifo_mask_is_refused(env, capsys, watchdog):
    fifo = env["bad"] / "mask_fifo.nii.gz"
    os.mkfifo(fifo)
    line = refused(capsys, env, _evaluate(env, env["pred"], env["target"], "--mask", fifo), str(fifo))
    assert "FIFO" in line


def test_a_good_mask_still_scores_inside_it(env, capsys):
    assert main(_evaluate(env, env["pred"], env["target"], "--mask", env["mask"])) == 0
    assert "inside the mask" in capsys.readouterr().out
    assert (env["out"] / "scores.csv").is_file()


# -- 6. CSV domain sources ------------------------------------------------------------------------------------------
def test_an_empty_image_cell_names_the_csv_and_row(env, capsys):
    csv = env["bad"] / "domain.csv"
    csv.write_text(f"subject_id,image\ns1,{env['pred']}\ns2,\n")
    with pytest.raises(InputError, match=r"data row 2 \(subject_id 's2'\) has an empty image cell"):
        list_domain(csv)
    run = env["out"] / "run"
    line = refused(capsys, env, ["train", "--method", "nec", "--data-a", csv, "--data-b", env["target"], "--output",
                                 run, "--iterations", "1", "--tracking", "none", "--no-progress"], str(csv))
    assert "data row 2" in line and "image cell" in line


def test_an_empty_subject_id_cell_is_refused(env):
    csv = env["bad"] / "ids.csv"
    csv.write_text(f"subject_id,image\n,{env['pred']}\n")
    with pytest.raises(InputError, match="data row 1 has an empty subject_id cell"):
        list_domain(csv)


# -- 7. special files and folders that cannot be listed ---------------------------------------------------------
def _translate(env, source, model, *options) -> list:
    return ["translate", source, env["out"] / "o.nii.gz", "--model", model, "--no-progress", *options]


def test_dev_zero_is_refused_at_once(env, capsys, model, watchdog):
    zero = Path("/dev/zero")
    line = refused(capsys, env, _translate(env, zero, model), "/dev/zero")
    assert "character device" in line
    refused(capsys, env, _evaluate(env, zero, env["target"]), "/dev/zero")
    refused(capsys, env, _evaluate(env, env["pred"], zero), "/dev/zero")
    refused(capsys, env, _translate(env, env["pred"], model, "--mask", zero), "/dev/zero")
    refused(capsys, env, _translate(env, env["pred"], zero), "/dev/zero")  # as the model
    with pytest.raises(InputError, match="character device"):
        read_volume(zero)
    with pytest.raises(InputError, match="character device"):
        list_domain(zero)


def test_a_fifo_is_refused_without_blocking(env, capsys, model, watchdog):
    fifo = env["bad"] / "pipe.nii.gz"
    os.mkfifo(fifo)
    for argv in (_translate(env, fifo, model), _evaluate(env, fifo, env["target"]), _evaluate(env, env["pred"], fifo),
                 _translate(env, env["pred"], model, "--mask", fifo),
                 _translate(env, env["pred"], model, "--target-intensity", "histogram", "--reference", fifo)):
        assert "FIFO" in refused(capsys, env, argv, str(fifo))
    with pytest.raises(InputError, match="FIFO"):
        read_volume(fifo)
    with pytest.raises(InputError, match="FIFO"):
        list_domain(fifo)
    csv = env["bad"] / "pipes.csv"
    csv.write_text(f"subject_id,image\ns1,{fifo}\n")
    with pytest.raises(InputError, match="FIFO"):
        list_domain(csv)
    csv_fifo = env["bad"] / "domain_fifo.csv"
    os.mkfifo(csv_fifo)
    with pytest.raises(InputError, match="FIFO"):
        list_domain(csv_fifo)
    refused(capsys, env, ["train", "--method", "nec", "--data-a", csv, "--data-b", env["target"], "--output",
                          env["out"] / "run", "--iterations", "1", "--tracking", "none", "--no-progress"], str(fifo))


def test_a_fifo_inside_an_input_folder_is_refused(env, capsys, watchdog):
    folder = env["bad"] / "preds"
    folder.mkdir()
    _save(folder / "a.nii.gz", _phantom(0))
    os.mkfifo(folder / "b.nii.gz")
    targets = env["bad"] / "targets"
    targets.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        _save(targets / name, _phantom(1))
    refused(capsys, env, _evaluate(env, folder, targets), str(folder / "b.nii.gz"))


@pytest.fixture
def unlistable(monkeypatch):
    """``make(folder)``: the folder cannot be listed. chmod 000 does that for a user; root reads through it, so
    the OS calls that list a folder are made to answer EACCES for it as well."""
    made: list[Path] = []

    def make(folder: Path) -> Path:
        folder.chmod(0)
        made.append(folder)
        return folder

    def denied(path) -> bool:
        return any(Path(os.fsdecode(path)).absolute() == m.absolute() for m in made)

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    real_listdir, real_scandir, real_iterdir = os.listdir, os.scandir, pathlib.Path.iterdir
    monkeypatch.setattr(os, "listdir", lambda path=".": refuse(path) if denied(path) else real_listdir(path))
    monkeypatch.setattr(os, "scandir", lambda path=".": refuse(path) if denied(path) else real_scandir(path))
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda self: refuse(self) if denied(self) else real_iterdir(self))
    yield make
    for folder in made:
        folder.chmod(0o755)


def test_a_folder_that_cannot_be_listed_is_one_line(env, capsys, model, unlistable):
    folder = env["bad"] / "locked"
    folder.mkdir()
    _save(folder / "a.nii.gz", _phantom(0))
    unlistable(folder)
    expected = f"{folder}: folder cannot be listed: Permission denied"
    with pytest.raises(InputError, match="folder cannot be listed"):
        read_volume(folder)  # a DICOM folder is looked for inside it
    for argv in (_translate(env, folder, model), _evaluate(env, folder, env["target"]),
                 ["train", "--method", "nec", "--data-a", folder, "--data-b", env["target"], "--output",
                  env["out"] / "run", "--iterations", "1", "--tracking", "none", "--no-progress"]):
        assert expected in refused(capsys, env, argv, str(folder))
    with pytest.raises(InputError, match="folder cannot be listed"):
        list_domain(folder)
    # a folder of targets, and a folder of masks, beside a readable folder of predictions
    preds = env["bad"] / "preds"
    preds.mkdir()
    _save(preds / "a.nii.gz", _phantom(0))
    assert expected in refused(capsys, env, _evaluate(env, preds, folder), str(folder))
    assert expected in refused(capsys, env, _evaluate(env, preds, preds, "--mask", folder), str(folder))
