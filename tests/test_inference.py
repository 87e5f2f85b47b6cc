import os

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medtrans.commands.cli import main
from medtrans.data.intensity import fit_intensity
from medtrans.inference import InferenceSettings, Translator
from medtrans.io import Volume, read_volume
from medtrans.model import TranslationModel, save_generator
from medtrans.networks.registry import build_network
from medtrans.data.preprocessing import Canonical, Preprocessing
from tests.conftest import shared_file, synthetic_lps, synthetic_pair

IDENTITY = {"_target_": "monai.networks.blocks.Convolution", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
            "kernel_size": 1, "conv_only": True}


def _identity_model(target=None) -> TranslationModel:
    net = build_network(IDENTITY)
    with torch.no_grad():
        net.conv.weight.fill_(1.0)
        net.conv.bias.zero_()
    return TranslationModel(net, IDENTITY, 3, Preprocessing(), target or {"type": "source"})


class SmallConvNet(nn.Module):
    """Receptive field 5, no normalisation: windows agree with a full pass away from window borders."""

    in_channels = 1
    size_divisor = 1

    def __init__(self, dims: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.body = nn.Sequential(conv(1, 4, 3, padding=1), nn.Tanh(), conv(4, 1, 3, padding=1))

    def forward(self, x):
        return torch.tanh(self.body(x))


@pytest.mark.parametrize("relative", ["synthetic", "synthetic LPS", "lesjak-ms-mni/patient26/T1.nii.gz",
                                      "tcga-lgg-brainles/TCGA-FG-6692/t1.nii.gz"])
def test_identity_round_trip_keeps_geometry_and_values(tmp_path, relative, synthetic_brains):
    """The synthetic brain (RAS) and its LPS copy always; real scans' headers (lesjak LAS, TCGA LPS) where they are."""
    if relative.startswith("synthetic"):
        source = synthetic_pair(synthetic_brains)[0]
        source = synthetic_lps(source, tmp_path / "lps.nii.gz") if relative.endswith("LPS") else source
    else:
        source = shared_file(relative)
    out = tmp_path / "out.nii.gz"
    settings = InferenceSettings(roi_size=(96, 96, 96), overlap=0.25, progress=False)
    Translator(_identity_model(), settings).translate_file(source, out)
    original, result = nib.load(source), nib.load(out)
    assert result.shape == original.shape
    assert np.array_equal(result.affine, original.affine)
    assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(original.affine)
    assert result.get_data_dtype() == np.float32
    x = np.asarray(original.dataobj, dtype=np.float32)
    low, high = fit_intensity({"type": "percentile"}, x).range
    inside = (x >= low) & (x <= high)
    assert inside.mean() > 0.1
    np.testing.assert_allclose(result.get_fdata()[inside], x[inside], rtol=1e-4, atol=1e-4 * (high - low))


def test_canonical_round_trip_on_a_permuted_orientation():
    affine = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -5], [0, -1, 0, 3], [0, 0, 0, 1]])  # axes: I?, R, P...
    data = np.random.rand(5, 6, 7).astype(np.float32)
    canon = Canonical(Volume(data, affine, path=None), enabled=True)
    ras = canon.forward(data)
    assert nib.aff2axcodes(canon.affine) == ("R", "A", "S")
    assert np.array_equal(canon.inverse(ras), data)
    # the same world point holds the same value in both grids
    ijk = np.array([1, 2, 3, 1.0])
    world = affine @ ijk
    ras_ijk = np.round(np.linalg.solve(canon.affine, world)).astype(int)
    assert ras[tuple(ras_ijk[:3])] == data[1, 2, 3]


def test_sliding_window_equals_full_pass_away_from_borders(brain_t1_t2, seeded):
    x = brain_t1_t2[0]  # (1, 1, 48, 48, 48)
    model = TranslationModel(SmallConvNet(), {}, 3)
    full = Translator(model, InferenceSettings(roi_size=(64, 64, 64), progress=False)).run_network(x)
    windows = Translator(model, InferenceSettings(roi_size=(24, 24, 24), overlap=0.5, progress=False)).run_network(x)
    assert windows.shape == full.shape == x.shape
    inner = (..., slice(4, -4), slice(4, -4), slice(4, -4))
    assert (windows[inner] - full[inner]).abs().max() < 2e-3
    assert not torch.allclose(windows, torch.zeros_like(windows))


def test_2d_model_over_3d_equals_a_manual_slice_loop(brain_t1_t2, seeded):
    x = brain_t1_t2[0][..., :44, :40, :12]
    net_def = {"_target_": "medtrans.networks.ResnetGenerator", "spatial_dims": 2, "channels": 4, "num_res_blocks": 1}
    model = TranslationModel(build_network(net_def).eval(), net_def, 2)
    for axis in (0, 2):
        out = Translator(model, InferenceSettings(slice_axis=axis, batch_size=3, progress=False)).run_network(x)
        with torch.no_grad():
            manual = torch.stack([model.network(x.select(2 + axis, i)) for i in range(x.shape[2 + axis])], dim=2 + axis)
        assert torch.allclose(out, manual, atol=1e-5)


def test_faithfulness_maps_written_with_input_geometry(tmp_path, synthetic_brains):
    source = synthetic_pair(synthetic_brains)[0]
    model_path = save_generator(tmp_path / "id.pt", _identity_model())
    code = main(["translate", str(source), str(tmp_path / "t.nii.gz"), "--model", str(model_path),
                 "--faithfulness-map", str(tmp_path / "f.nii.gz"), "--no-progress", "--roi-size", "32", "32", "32"])
    assert code == 0
    for name in ("f.nii.gz", "f_invented.nii.gz", "f_erased.nii.gz"):
        image = nib.load(tmp_path / name)
        assert image.shape == nib.load(source).shape and np.allclose(image.affine, nib.load(source).affine)
    # an identity translation invents and erases nothing
    assert nib.load(tmp_path / "f_invented.nii.gz").get_fdata().max() < 1e-5
    assert nib.load(tmp_path / "f_erased.nii.gz").get_fdata().max() < 1e-5


def test_target_intensity_options(tmp_path, synthetic_brains):
    source, reference = synthetic_pair(synthetic_brains)
    source = read_volume(source)
    settings = InferenceSettings(roi_size=(128, 128, 128), progress=False)
    window = Translator(_identity_model({"type": "window", "low": 0, "high": 1000}), settings).translate(source)
    assert window.output.min() >= 0 and window.output.max() == pytest.approx(1000, rel=1e-5)
    # where the input is background, the output gets the target domain's recorded background value
    spec = {"type": "window", "low": 100, "high": 1000, "background": -5.0}
    stripped = np.zeros((40, 40, 40), np.float32)
    stripped[8:32, 8:32, 8:32] = np.random.default_rng(0).uniform(10, 50, (24, 24, 24))  # skull-stripped: 0 outside
    restored = Translator(_identity_model(spec), settings).translate(Volume(stripped, np.eye(4), path=None)).output
    background = stripped == 0
    assert np.all(restored[background] == -5.0) and restored[~background].min() >= 100 - 1e-3
    hist = Translator(_identity_model(), settings, {"type": "histogram", "reference": str(reference)}).translate(source)
    ref = np.asarray(nib.load(reference).dataobj)
    fg = source.data > 0
    assert np.median(hist.output[fg]) == pytest.approx(np.median(ref[ref > 0]), rel=0.05)


# ---- bad input: one clear error naming the file, non-zero exit, no output left behind ------------------------------
@pytest.fixture
def cli_env(tmp_path):
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32), np.eye(4)), good)
    model = save_generator(tmp_path / "model.pt", _identity_model())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return tmp_path, good, model, out_dir


def _translate(capsys, *args):
    code = main(["translate", *map(str, args), "--no-progress", "--roi-size", "32", "32", "32"])
    return code, capsys.readouterr().err


def _bad_input(tmp_path, kind):
    path = tmp_path / f"{kind}.nii.gz"
    arrays = {
        "four_d": np.random.rand(8, 8, 8, 2),
        "two_d": np.random.rand(8, 8),
        "nan": np.where(np.eye(8)[:, :, None] * np.ones(8) > 0, np.nan, 1.0),
        "constant": np.ones((8, 8, 8)),
    }
    if kind == "truncated":
        nib.save(nib.Nifti1Image(np.random.rand(30, 30, 30).astype(np.float32), np.eye(4)), path)
        path.write_bytes(path.read_bytes()[:4000])
    elif kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("no image here")
    else:
        nib.save(nib.Nifti1Image(arrays[kind].astype(np.float32), np.eye(4)), path)
    return path


@pytest.mark.parametrize(
    "kind,message",
    [("truncated", "corrupt or truncated"), ("text", "not a readable"), ("four_d", "got 4D"), ("two_d", "got 2D"),
     ("nan", "NaN/Inf"), ("constant", "constant image")],
)
def test_bad_input_files(cli_env, capsys, kind, message):
    tmp_path, _, model, out_dir = cli_env
    bad = _bad_input(tmp_path, kind)
    code, err = _translate(capsys, bad, out_dir / "o.nii.gz", "--model", model)
    assert code == 1
    assert bad.name in err and message in err and err.count("error:") == 1
    assert os.listdir(out_dir) == []


def test_bad_paths_and_models(cli_env, capsys):
    tmp_path, good, model, out_dir = cli_env
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ((empty, out_dir / "x", "--model", model), "empty: input folder holds no NIfTI"),
        ((good, tmp_path / "nowhere" / "o.nii.gz", "--model", model), "does not exist"),
        ((good, out_dir, "--model", model), "output path is a folder"),
        ((good, out_dir / "o.nii.gz", "--model", tmp_path / "none.pt"), "none.pt: model checkpoint or bundle does not exist"),
    ]
    two_channel = dict(IDENTITY, in_channels=2)
    save_generator(tmp_path / "two.pt", TranslationModel(build_network(two_channel), two_channel, 3))
    cases.append(((good, out_dir / "o.nii.gz", "--model", tmp_path / "two.pt"), "expects 2 input channels but"))
    other = TranslationModel(build_network(IDENTITY), IDENTITY, 3).record()
    other["network_def"] = dict(IDENTITY, kernel_size=3)
    torch.save(other, tmp_path / "other.pt")
    cases.append(((good, out_dir / "o.nii.gz", "--model", tmp_path / "other.pt"), "other.pt: holds weights of another architecture"))
    for args, message in cases:
        code, err = _translate(capsys, *args)
        assert code == 1 and message in err, (args, err)
        assert os.listdir(out_dir) == []


def test_failure_mid_translation_leaves_no_output(cli_env, monkeypatch):
    _, good, model, out_dir = cli_env

    def broken(self, x):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Translator, "run_network", broken)
    with pytest.raises(RuntimeError):
        main(["translate", str(good), str(out_dir / "o.nii.gz"), "--model", str(model), "--no-progress"])
    assert os.listdir(out_dir) == []


def test_folder_with_one_volume_is_still_a_folder(cli_env, capsys):
    tmp_path, good, model, _ = cli_env
    folder = tmp_path / "one"
    folder.mkdir()
    nib.save(nib.load(good), folder / "only.nii.gz")
    code, _ = _translate(capsys, folder, tmp_path / "out_one", "--model", model, "--faithfulness-map", tmp_path / "maps")
    assert code == 0
    assert os.listdir(tmp_path / "out_one") == ["only.nii.gz"]
    assert sorted(os.listdir(tmp_path / "maps")) == ["only.nii.gz", "only_erased.nii.gz", "only_invented.nii.gz"]


def test_folder_in_folder_out(cli_env, capsys):
    tmp_path, good, model, out_dir = cli_env
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii"):
        nib.save(nib.load(good), folder / name)
    code, _ = _translate(capsys, folder, tmp_path / "translated", "--model", model)
    assert code == 0
    assert sorted(os.listdir(tmp_path / "translated")) == ["a.nii.gz", "b.nii"]
