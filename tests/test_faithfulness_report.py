import csv
import json

import nibabel as nib
import numpy as np
import pytest

from medtrans.commands.cli import main
from medtrans.defaults import FAITHFULNESS_CALIBRATION
from medtrans.errors import InputError
from medtrans.faithfulness_report import faithfulness_report, load_calibration, report_text
from medtrans.model import save_generator
from tests.conftest import refusal_line, synthetic_pair, to_unit_range
from tests.test_inference import _identity_model

# 2 mm voxels, axes permuted and flipped, shifted: world = AFFINE @ (i, j, k, 1)
AFFINE = np.array([[0.0, -2, 0, 10], [0, 0, 2, -30], [-2, 0, 0, 55], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def t1(synthetic_brains) -> np.ndarray:
    """A whole synthetic T1w brain (98 × 116 × 94, 2 mm) in [-1, 1], background -1."""
    return to_unit_range(np.asarray(nib.load(synthetic_pair(synthetic_brains)[0]).dataobj, dtype=np.float32))


def _ball(shape, centre, radius_vox, amplitude):
    grid = np.indices(shape, dtype=np.float32)
    r = np.sqrt(((grid - np.reshape(centre, (-1,) + (1,) * len(shape))) ** 2).sum(0))
    return amplitude / (1 + np.exp((r - radius_vox) / 0.35))


def test_faithful_translations_report_nothing(t1):
    mask = t1 > -1
    for output in (t1, -t1, np.where(mask, np.exp(-2 * t1), -1)):  # itself, inverted, any monotone intensity map
        report, labels = faithfulness_report(t1, output.astype(np.float32), mask, AFFINE)
        assert report["regions"] == [] and labels.max() == 0


@pytest.mark.parametrize("amplitude", [0.6, -0.6])
def test_a_planted_6mm_lesion_is_one_region_at_its_world_centre(t1, amplitude):
    mask, centre = t1 > -1, np.array([50, 60, 45])
    output = np.where(mask, -t1 + _ball(t1.shape, centre, 3, amplitude), -1).astype(np.float32)  # 3 voxels = 6 mm
    report, labels = faithfulness_report(t1, output, mask, AFFINE)
    (region,) = report["regions"]
    world = AFFINE @ np.append(centre, 1)
    assert np.allclose([region["centre_x"], region["centre_y"], region["centre_z"]], world[:3], atol=1.0)
    assert region["kind"] == "invented" and region["polarity"] == ("brighter" if amplitude > 0 else "darker")
    assert 4 < region["radius_mm"] < 10 and region["volume_mm3"] == pytest.approx(region["voxels"] * 8)
    assert region["peak"] >= 1 and labels[tuple(centre)] == 1 and labels.max() == 1


def test_a_lesion_the_translation_dropped_is_erased(t1):
    mask, centre = t1 > -1, np.array([48, 56, 47])
    source = np.where(mask, t1 - _ball(t1.shape, centre, 4, 0.6), -1).astype(np.float32)  # the input has a lesion
    report, _ = faithfulness_report(source, np.where(mask, -t1, -1).astype(np.float32), mask, AFFINE)
    assert [r["kind"] for r in report["regions"]] == ["erased"]


def test_2d(t1):
    image = np.ascontiguousarray(t1[:, :, 47])
    mask, centre, affine = image > -1, np.array([50, 60]), np.array([[0.0, 2, 5], [-2, 0, 7], [0, 0, 1]])
    calibration = {**FAITHFULNESS_CALIBRATION, "min_volume_mm3": 10.0}  # an area in mm² in 2D
    output = np.where(mask, -image + _ball(image.shape, centre, 3, 0.6), -1).astype(np.float32)
    report, labels = faithfulness_report(image, output, mask, affine, calibration)
    (region,) = report["regions"]
    assert np.allclose([region["centre_x"], region["centre_y"]], (affine @ np.append(centre, 1))[:2], atol=2.0)  # a voxel
    assert region["centre_z"] == 0 and 4 < region["radius_mm"] < 10 and labels.shape == image.shape
    assert faithfulness_report(image, -image, mask, affine, calibration)[0]["regions"] == []


def test_calibration_files_are_checked(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**FAITHFULNESS_CALIBRATION, "thresholds": {"invented": 2.0, "erased": 3.0}}))
    assert load_calibration(good)["thresholds"] == {"invented": 2.0, "erased": 3.0}
    assert load_calibration(None) == FAITHFULNESS_CALIBRATION
    bad = {"not json": "{", "a list": "[1, 2]", "no thresholds": json.dumps({"sigma_mm": 2}),
           "negative": json.dumps({**FAITHFULNESS_CALIBRATION, "sigma_mm": -1}),
           "nan": json.dumps({**FAITHFULNESS_CALIBRATION, "thresholds": {"invented": float("nan"), "erased": 1}}),
           "bins": json.dumps({**FAITHFULNESS_CALIBRATION, "bins": 1.5})}
    for name, text in bad.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(InputError, match=str(path)):
            load_calibration(path)
    with pytest.raises(InputError, match="report must be"):
        report_text({"regions": []}, tmp_path / "r.txt")


def test_translate_writes_the_report(tmp_path, synthetic_brains):
    source = synthetic_pair(synthetic_brains)[0]
    model = save_generator(tmp_path / "id.pt", _identity_model())
    args = ["translate", str(source), str(tmp_path / "t.nii.gz"), "--model", str(model), "--no-progress",
            "--roi-size", "32", "32", "32"]
    assert main([*args, "--faithfulness-report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["regions"] == [] and report["input"] == str(source)  # the identity invents nothing
    assert report["calibration"]["thresholds"] == FAITHFULNESS_CALIBRATION["thresholds"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*args[:2], str(tmp_path / "t2.nii.gz"), *args[3:], "--faithfulness-report", str(tmp_path / "r.csv")]) == 0
    with open(tmp_path / "r.csv") as handle:
        assert list(csv.DictReader(handle)) == [] and handle.seek(0) == 0 and "centre_x" in handle.readline()


@pytest.mark.parametrize("case", ["bad calibration", "missing calibration", "bad suffix", "report over calibration"])
def test_translate_refuses_a_bad_report_option(tmp_path, synthetic_brains, capsys, case):
    source = synthetic_pair(synthetic_brains)[0]
    model = save_generator(tmp_path / "id.pt", _identity_model())
    out = tmp_path / "out"
    out.mkdir()
    calibration = tmp_path / "cal.json"
    calibration.write_text(json.dumps({"sigma_mm": 2.0}))
    report, name = out / "r.json", str(calibration)
    if case == "missing calibration":
        calibration, name = tmp_path / "absent.json", str(tmp_path / "absent.json")
    if case == "bad suffix":
        report, calibration, name = out / "r.txt", None, str(out / "r.txt")
    if case == "report over calibration":  # a file the command reads is never overwritten
        calibration = out / "cal.json"
        calibration.write_text(json.dumps(FAITHFULNESS_CALIBRATION))
        report, name = calibration, "--faithfulness-report"
    argv = ["translate", source, out / "t.nii.gz", "--model", model, "--faithfulness-report", report]
    refusal_line(capsys, argv + (["--faithfulness-calibration", calibration] if calibration else []), name)
    assert list(out.iterdir()) == ([calibration] if case == "report over calibration" else [])


def test_a_folder_gets_a_folder_of_reports(tmp_path, synthetic_brains):
    inputs, reports = tmp_path / "in", tmp_path / "reports"
    inputs.mkdir()
    for name in ("a.nii.gz", "b.nii"):
        nib.save(nib.load(synthetic_pair(synthetic_brains)[0]), inputs / name)
    model = save_generator(tmp_path / "id.pt", _identity_model())
    assert main(["translate", str(inputs), str(tmp_path / "out"), "--model", str(model), "--no-progress",
                 "--roi-size", "32", "32", "32", "--faithfulness-report", str(reports)]) == 0
    assert sorted(p.name for p in reports.iterdir()) == ["a.json", "a.png", "b.json", "b.png"]
    assert json.loads((reports / "b.json").read_text())["output"] == str(tmp_path / "out" / "b.nii")
