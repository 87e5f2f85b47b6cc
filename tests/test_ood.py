"""The out-of-distribution check: domain A's fingerprint recorded at training, measured at translation, reported in a
sidecar JSON and a one-line warning (tiny identity model on the synthetic brains, CPU)."""

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch

from medtrans.data import TrainStream
from medtrans.data.fingerprint import build_fingerprint, check_fingerprint, ood_message, ood_path, ood_report
from medtrans.data.preprocessing import Preprocessing
from medtrans.errors import InputError, ModelError
from medtrans.inference import translate_path
from medtrans.model import TranslationModel, load_model, save_generator
from medtrans.networks.registry import build_network
from tests.conftest import synthetic_pair

IDENTITY = {"_target_": "monai.networks.blocks.Convolution", "spatial_dims": 3, "in_channels": 1, "out_channels": 1,
            "kernel_size": 1, "conv_only": True}


@pytest.fixture(scope="module")
def model_file(synthetic_brains, tmp_path_factory):
    stream = TrainStream(synthetic_brains / "A", synthetic_brains / "B", {"patch_size": (32, 32, 32), "prefetch": 0})
    net = build_network(IDENTITY)
    with torch.no_grad():
        net.conv.weight.fill_(1.0)
        net.conv.bias.zero_()
    model = TranslationModel(net, IDENTITY, 3, Preprocessing(), fingerprint=stream.fingerprint())
    return save_generator(tmp_path_factory.mktemp("ood") / "model.pt", model)


def _variant(source, path, data=None, affine=None):
    image = nib.load(source)
    out = nib.Nifti1Image(np.asarray(image.dataobj, np.float32) if data is None else data,
                          image.affine if affine is None else affine)
    nib.save(out, path)
    return path


def _translate(model, source, out, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medtrans.inference"):
        translate_path(source, out, model, progress=False)
    return [r.getMessage() for r in caplog.records if r.name == "medtrans.inference"]


def test_fingerprint_is_recorded_and_round_trips(model_file):
    model = load_model(model_file)
    assert len(model.fingerprint["volumes"]) == 2  # the two training T1w volumes
    assert check_fingerprint(model.fingerprint) == model.fingerprint
    assert model.fingerprint["volumes"][0]["spacing"] == pytest.approx([2.0, 2.0, 2.0])
    assert set(model.fingerprint["thresholds"]) == {"intensity", "spacing", "fov", "shape", "depth", "axial", "edges",
                                                    "orientation"}
    volume = model.fingerprint["volumes"][0]
    assert len(volume["depth"]) == 6 and len(volume["axial"]) == 24 and len(volume["edges"]) == 5
    assert volume["orientation"] == [1.0, 2.0, 3.0]  # the synthetic brains are stored RAS
    assert volume["edges"][4] - volume["edges"][1] < -0.5  # a T1: its brightest fifth (white matter) has few edges
    assert all(sum(volume["axial"][i : i + 8]) == pytest.approx(1.0) for i in (0, 8, 16))


def test_held_out_subject_of_the_same_domain_does_not_warn(model_file, synthetic_brains, tmp_path, caplog):
    t1, _ = synthetic_pair(synthetic_brains)
    out = tmp_path / "t2.nii.gz"
    assert _translate(model_file, t1, out, caplog) == []
    report = json.loads(ood_path(out).read_text(encoding="utf-8"))
    assert ood_path(out).name == "t2.nii.gz.ood.json"
    assert report["checked"] and not report["out_of_distribution"] and report["far"] == []
    assert all(report["distances"][k] <= report["thresholds"][k] for k in report["thresholds"])


@pytest.mark.parametrize("case, component", [("inverted", "intensity"), ("thick", "spacing"), ("swapped", "shape")])
def test_far_inputs_warn_in_one_line(model_file, synthetic_brains, tmp_path, caplog, case, component):
    t1, _ = synthetic_pair(synthetic_brains)
    image = nib.load(t1)
    data = np.asarray(image.dataobj, np.float32)
    if case == "inverted":  # a T2-like contrast: the foreground's intensities reversed
        source = _variant(t1, tmp_path / "in.nii.gz", np.where(data > 0, data.max() - data + 1, 0).astype(np.float32))
    elif case == "thick":  # 5 mm slices given to a 2 mm model
        import torchio as tio

        source = tmp_path / "in.nii.gz"
        tio.Resample((2.0, 2.0, 5.0))(tio.ScalarImage(t1)).save(source)
    else:  # a header that relabels the axes (R→A, A→S, S→R): the same voxels, the brain lying on its side
        affine = image.affine.copy()
        affine[:3, :3] = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float) @ affine[:3, :3]
        source = _variant(t1, tmp_path / "in.nii.gz", affine=affine)
    out = tmp_path / "out.nii.gz"
    lines = _translate(model_file, source, out, caplog)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"medtrans: warning: {source} looks unlike the training data (")
    assert f"{component} distance" in lines[0]
    report = json.loads(ood_path(out).read_text(encoding="utf-8"))
    assert report["out_of_distribution"] and component in report["far"] and out.exists()


def test_older_model_without_fingerprint_loads_and_translates_silently(model_file, synthetic_brains, tmp_path, caplog):
    record = torch.load(model_file, weights_only=True)
    del record["fingerprint"]
    old = tmp_path / "old.pt"
    torch.save(record, old)
    assert load_model(old).fingerprint == {}
    t1, _ = synthetic_pair(synthetic_brains)
    inverted = _variant(t1, tmp_path / "in.nii.gz", -np.asarray(nib.load(t1).dataobj, np.float32))
    out = tmp_path / "out.nii.gz"
    assert _translate(old, inverted, out, caplog) == []
    assert out.exists() and not ood_path(out).exists()


def test_malformed_fingerprint_is_refused_on_load(model_file, tmp_path):
    record = torch.load(model_file, weights_only=True)
    record["fingerprint"]["thresholds"]["intensity"] = -1.0
    bad = tmp_path / "bad.pt"
    torch.save(record, bad)
    with pytest.raises(ModelError, match="fingerprint.thresholds"):
        load_model(bad)
    with pytest.raises(ValueError, match="fingerprint has fields"):
        check_fingerprint({"volumes": []})
    assert build_fingerprint([]) == {}


def test_report_is_written_with_the_translation_or_not_at_all(model_file, synthetic_brains, tmp_path, monkeypatch):
    t1, _ = synthetic_pair(synthetic_brains)

    def full_disk(image, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", full_disk)
    out = tmp_path / "out.nii.gz"
    with pytest.raises(InputError, match="cannot be written"):
        translate_path(t1, out, model_file, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_report_path_that_is_an_input_is_refused_before_work(model_file, synthetic_brains, tmp_path):
    t1, _ = synthetic_pair(synthetic_brains)
    out = tmp_path / "out.nii.gz"
    ood_path(out).mkdir()  # a folder where the report goes
    with pytest.raises(InputError):
        translate_path(t1, out, model_file, progress=False)
    assert not out.exists()


def _report(model, source, out, caplog):
    lines = _translate(model, source, out, caplog)
    return lines, json.loads(ood_path(out).read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", ["held_out", "flip_si", "flip_ap", "t2"])
def test_layout_components_flag_flips_and_contrast_not_a_held_out_t1(model_file, synthetic_brains, tmp_path, caplog,
                                                                      case):
    t1, t2 = synthetic_pair(synthetic_brains, "test01")
    flips = {"flip_si": np.diag([1.0, 1.0, -1.0, 1.0]), "flip_ap": np.diag([1.0, -1.0, 1.0, 1.0])}
    if case in flips:  # a header that mirrors one axis: the same voxels, the brain upside down or back to front
        source = _variant(t1, tmp_path / "in.nii.gz", affine=flips[case] @ nib.load(t1).affine)
    else:
        source = t1 if case == "held_out" else t2
    lines, report = _report(model_file, source, tmp_path / "out.nii.gz", caplog)
    distances, thresholds = report["distances"], report["thresholds"]
    if case == "held_out":
        assert lines == [] and all(distances[k] <= thresholds[k] for k in thresholds)
    elif case == "t2":  # a reversed layout (bright surface, darker depth) beside the histogram
        assert distances["depth"] > thresholds["depth"] and "depth distance" in lines[0]
    else:
        assert distances["axial"] > thresholds["axial"] and "axial distance" in lines[0], distances
        assert "check the orientation header" in lines[0]


def _flair_like(t1, path, grey=0.4):
    """``t1`` with the contrast of a FLAIR: the same voxels, CSF still dark, but every intensity above the ``grey``
    foreground quantile (grey matter's) mapped below it, so white matter turns darker than the cortex."""
    data = np.asarray(nib.load(t1).dataobj, np.float32)
    foreground = data > 0
    low, high = np.percentile(data[foreground], [1, 99])
    unit = np.clip((data - low) / (high - low), 0, 1)
    peak = np.quantile(unit[foreground], grey)
    flair = np.where(unit <= peak, unit, peak - 0.5 * (unit - peak))
    return _variant(t1, path, np.where(foreground, 100 + 1000 * flair, 0).astype(np.float32))


@pytest.mark.parametrize("case", ["flair_like", "flip_lr"])
def test_edges_and_orientation_flag_what_the_other_components_miss(model_file, synthetic_brains, tmp_path, caplog,
                                                                   case):
    t1, _ = synthetic_pair(synthetic_brains, "test01")
    if case == "flair_like":
        source = _flair_like(t1, tmp_path / "in.nii.gz")
    else:  # a header that mirrors left and right: a near-symmetric brain, so only the header tells
        source = _variant(t1, tmp_path / "in.nii.gz", affine=np.diag([-1.0, 1.0, 1.0, 1.0]) @ nib.load(t1).affine)
    lines, report = _report(model_file, source, tmp_path / "out.nii.gz", caplog)
    component = {"flair_like": "edges", "flip_lr": "orientation"}[case]
    assert report["far"] == [component], report  # the histogram, layout and shape do not see it
    assert len(lines) == 1 and f"{component} distance" in lines[0]
    if case == "flair_like":
        assert lines[0].endswith(": check the contrast)"), lines
    else:
        assert report["input"]["orientation"] == "LAS" and report["training"]["orientations"] == ["RAS"]
        assert "orientation LAS vs RAS at training: check the orientation header" in lines[0]


def _saved_without(model_file, path, components):
    """``model_file``'s record saved to ``path`` with ``components`` taken out of its fingerprint (what an older
    version saved); returns the record."""
    record = torch.load(model_file, weights_only=True)
    for name in components:
        for volume in record["fingerprint"]["volumes"]:
            del volume[name]
        del record["fingerprint"]["thresholds"][name]
    torch.save(record, path)
    return record


def test_fingerprint_saved_before_the_edges_checks_the_six_it_has(model_file, synthetic_brains, tmp_path, caplog):
    old = tmp_path / "old.pt"
    _saved_without(model_file, old, ("edges", "orientation"))
    six = {"intensity", "spacing", "fov", "shape", "depth", "axial"}
    assert set(load_model(old).fingerprint["thresholds"]) == six
    t1, _ = synthetic_pair(synthetic_brains, "test01")
    lines, report = _report(old, _flair_like(t1, tmp_path / "in.nii.gz"), tmp_path / "out.nii.gz", caplog)
    assert set(report["distances"]) == six and lines == [] and report["training"]["orientations"] == []
    flipped = _variant(t1, tmp_path / "flip.nii.gz", affine=np.diag([1.0, 1.0, -1.0, 1.0]) @ nib.load(t1).affine)
    lines, report = _report(old, flipped, tmp_path / "out2.nii.gz", caplog)
    assert report["far"] == ["axial"] and "check the orientation header" in lines[0]  # still checked on the six


def test_fingerprint_saved_before_the_layout_components_loads_and_checks_the_others(model_file, synthetic_brains,
                                                                                     tmp_path, caplog):
    old = tmp_path / "old.pt"
    record = _saved_without(model_file, old, ("depth", "axial", "edges", "orientation"))
    assert set(load_model(old).fingerprint["thresholds"]) == {"intensity", "spacing", "fov", "shape"}
    t1, _ = synthetic_pair(synthetic_brains)
    data = np.asarray(nib.load(t1).dataobj, np.float32)
    inverted = _variant(t1, tmp_path / "in.nii.gz", np.where(data > 0, data.max() - data + 1, 0).astype(np.float32))
    lines, report = _report(old, inverted, tmp_path / "out.nii.gz", caplog)
    assert set(report["distances"]) == {"intensity", "spacing", "fov", "shape"}
    assert report["far"] == ["intensity"] and "intensity distance" in lines[0]
    record["fingerprint"]["thresholds"].update(depth=0.25, axial=0.035, edges=0.15, orientation=0.5)  # thresholds
    # without the volumes' statistics
    torch.save(record, old)
    with pytest.raises(ModelError, match="fingerprint.volumes"):
        load_model(old)


def test_fingerprint_of_volumes_some_without_layout_leaves_those_components_out():
    full = _stats()
    cached = {k: v for k, v in full.items() if k not in ("depth", "axial", "edges", "orientation")}  # an older version
    fingerprint = build_fingerprint([full, cached])
    assert set(fingerprint["thresholds"]) == {"intensity", "spacing", "fov", "shape"}
    assert check_fingerprint(fingerprint) == fingerprint
    later = {k: v for k, v in full.items() if k not in ("edges", "orientation")}  # cached before the edge profile
    fingerprint = build_fingerprint([full, later])
    assert set(fingerprint["thresholds"]) == {"intensity", "spacing", "fov", "shape", "depth", "axial"}
    assert check_fingerprint(fingerprint) == fingerprint
    odd = {k: v for k, v in full.items() if k not in ("depth", "axial")}  # no older version saved this: left out
    assert set(build_fingerprint([full, odd])["thresholds"]) == {"intensity", "spacing", "fov", "shape"}
    assert set(build_fingerprint([full, full])["thresholds"]) == {"intensity", "spacing", "fov", "shape", "depth",
                                                                  "axial", "edges", "orientation"}


def _stats(orientation=(1.0, 2.0, 3.0), polarity=-1.0):
    """:func:`volume_stats`-like statistics of a plain volume: ``orientation`` as stored (``-1, 2, 3`` is LAS), an
    edge profile of the given polarity (brightest band minus the second)."""
    return {"quantiles": [float(q) for q in np.linspace(-1, 1, 21)], "spacing": [1.0] * 3, "fov": [180.0] * 3,
            "shape": [0.0] * 6, "depth": [0.0] * 6, "axial": [0.125] * 24,
            "edges": [0.5, -polarity / 2, 0.0, 0.0, polarity / 2], "orientation": list(orientation)}


def test_orientation_no_training_volume_had_is_far_whatever_their_spread():
    las, lps, ras = (-1.0, 2.0, 3.0), (-1.0, -2.0, 3.0), (1.0, 2.0, 3.0)
    fingerprint = build_fingerprint([_stats(las), _stats(las), _stats(lps)])
    assert fingerprint["thresholds"]["orientation"] == 0.5  # not widened by the LPS volume's leave-one-out distance
    for own, far in ((las, False), (lps, False), (ras, True), ((2.0, 1.0, 3.0), True)):
        report = ood_report(fingerprint, _stats(own))
        assert ("orientation" in report["far"]) is far, (own, report)
    report = ood_report(fingerprint, _stats(ras))  # a left-right flip of an LAS file: one axis differs
    assert report["distances"]["orientation"] == 1 and report["input"]["orientation"] == "RAS"
    assert report["training"]["orientations"] == ["LAS", "LPS"]
    assert ood_message(report) == ("orientation distance 1 > 0.5; orientation RAS vs LAS, LPS at training: check the "
                                   "orientation header")


def test_edge_polarity_outside_the_training_range_is_far():
    fingerprint = build_fingerprint([_stats(polarity=p) for p in (-1.0, -0.95, -0.45, -0.4)])  # two protocols
    assert fingerprint["thresholds"]["edges"] == 0.15  # the floor: leave-one-out, each lies 0.05 outside the others
    assert build_fingerprint([_stats(polarity=-1.0), _stats(polarity=-0.4)])["thresholds"]["edges"] == 0.75
    inside = ood_report(fingerprint, _stats(polarity=-0.7))
    assert inside["distances"]["edges"] == 0 and not inside["far"]  # between two protocols: not far
    flair = ood_report(fingerprint, _stats(polarity=0.3))
    assert flair["distances"]["edges"] == pytest.approx(0.7) and flair["far"] == ["edges"]
    assert ood_message(flair).endswith(": check the contrast")
