"""The sample MONAI Label app serving a medtrans model: a real server on 127.0.0.1, driven over REST.

MONAI Label lives in its own venv (``.venv-label``, built by ``bash run.sh test``); the server runs there while these
tests run in the core venv and compare its answers with :func:`medtrans.inference.translate_path`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from medtrans.commands.cli import main
from medtrans.defaults import ROI_SIZE
from medtrans.inference import translate_path
from tests.conftest import REPO, shared_file, synthetic_domains, synthetic_lps, synthetic_pair

pytestmark = pytest.mark.xdist_group("monailabel")  # one server for the whole module

LABEL_PYTHON = Path(os.environ.get("MEDTRANS_LABEL_PYTHON", REPO / ".venv-label" / "bin" / "python"))
ROI = {"roi_size": "32,32,32", "overlap": 0.1}  # not the defaults; few windows on the 98x116x94 study


def _label_python() -> Path:
    if not LABEL_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"the MONAI Label venv {LABEL_PYTHON} is missing in CI (bash run.sh test builds it)")
        pytest.skip(f"no MONAI Label venv at {LABEL_PYTHON}: run bash run.sh test, or set MEDTRANS_LABEL_PYTHON")
    return LABEL_PYTHON


def _copy_app(root: Path) -> Path:
    """The sample app copied to ``root/app`` without what a server run leaves in it (the server writes there)."""
    ignore = shutil.ignore_patterns("model", "logs", "lib", "bin", "__pycache__")
    return Path(shutil.copytree(REPO / "monailabel_app", root / "app", ignore=ignore))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, python: Path, app: Path, studies: Path, models: str) -> None:
        cmd = [str(python), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
               "--host", "127.0.0.1", "--port", str(self.port), "--conf", "models", models]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"MONAI Label exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        pytest.fail(f"MONAI Label did not answer within 180 s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        """SIGTERM by PID; the exit code (None if it did not stop within 30 s, then it is killed)."""
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None

    def infer(self, params: dict | None = None, image: str | None = None, upload: Path | None = None,
              output: str = "image", model: str = "tiny") -> requests.Response:
        query = {"output": output, **({"image": image} if image else {})}
        files = {"params": (None, json.dumps(params or {}))}
        if upload is not None:
            files["file"] = (upload.name, upload.read_bytes())
        return requests.post(f"{self.url}/infer/{model}", params=query, files=files, timeout=300)


def assert_same_volume(got: nib.Nifti1Image, want: nib.Nifti1Image) -> None:
    """Same grid and values; values to float32 round-off (the server runs another numpy and thread count)."""
    assert got.get_data_dtype() == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-5)
    want_data = want.get_fdata()
    np.testing.assert_allclose(got.get_fdata(), want_data, rtol=0, atol=1e-5 * max(np.ptp(want_data), 1e-6))


def _nifti(response: requests.Response, path: Path) -> nib.Nifti1Image:
    assert response.status_code == 200, response.text
    path.write_bytes(response.content)
    return nib.load(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, synthetic_brains: Path):
    """A tiny 3D NEC model trained here, the sample app serving it, and reference translations."""
    python = _label_python()
    root = tmp_path_factory.mktemp("monailabel")
    synthetic_domains(root, synthetic_brains)
    run = root / "run"
    assert main(["train", "--method", "nec", "--data-a", str(root / "a"), "--data-b", str(root / "b"),
                 "--output", str(run), "--dims", "3", "--patch-size", "32", "32", "32", "--iterations", "4",
                 "--workers", "0", "--tracking", "none", "--no-progress",
                 "--set", 'generator={"channels": [4, 8], "strides": [2]}',
                 'discriminator={"channels": 4, "num_layers": 2, "num_scales": 1}']) == 0
    studies = root / "studies"
    studies.mkdir()
    study = studies / "study.nii.gz"  # another synthetic subject, LPS orientation: geometry must come back unchanged
    synthetic_lps(synthetic_pair(synthetic_brains, "test01")[0], study)
    app = _copy_app(root)
    reference = root / "reference"
    reference.mkdir()
    translate_path(study, reference / "study.nii.gz", run / "generator.pt", faithfulness_map=reference / "study_map.nii.gz",
                   roi_size=(32, 32, 32), overlap=0.1, progress=False)
    translate_path(root / "a" / "s1.nii", reference / "upload.nii.gz", run / "generator.pt", progress=False)
    (app / "model").mkdir()
    shutil.copy(run / "generator.pt", app / "model" / "tiny.pt")  # served as model "tiny"
    bundle = app / "model" / "tiny_bundle"  # the same weights as a bundle folder, as a bundle's train.yaml exports them
    shutil.copytree(REPO / "bundles" / "nec" / "configs", bundle / "configs")  # a method bundle with its trained model
    (bundle / "models").mkdir()
    shutil.copy(run / "generator.pt", bundle / "models" / "model.pt")
    server = Server(root)
    server.start(python, app, studies, "tiny,tiny_bundle")
    try:
        yield server, study, root / "a" / "s1.nii", reference, run / "generator.pt"
    finally:
        code = server.stop()
        assert code is not None, f"the server did not stop on SIGTERM:\n{server.tail()}"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/info/", timeout=5)


def test_info_lists_the_model_as_a_translation_task(served):
    server = served[0]
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    assert set(info["models"]) == {"tiny", "tiny_bundle"}
    model = info["models"]["tiny"]
    assert model["type"] == "others" and model["dimension"] == 3
    assert model["config"]["roi_size"] == ",".join(map(str, ROI_SIZE))  # the default window, a string (a list would be a choice)
    assert model["config"]["result_type"][0] == "translation"
    assert {"overlap", "device", "precision", "faithfulness_eps"} <= set(model["config"])
    assert model["config"]["blend_mode"] == ["gaussian", "constant"]  # the settings medtrans translate has, default first
    assert info["datastore"]["total"] == 1


def test_study_image_equals_medtrans_translate(served, tmp_path):
    server, study, _, reference, _ = served
    assert nib.aff2axcodes(nib.load(study).affine) == ("L", "P", "S")
    got = _nifti(server.infer(ROI, image="study"), tmp_path / "got.nii.gz")
    assert got.shape == nib.load(study).shape
    np.testing.assert_allclose(got.affine, nib.load(study).affine, atol=1e-5)
    assert_same_volume(got, nib.load(reference / "study.nii.gz"))
    assert np.ptp(got.get_fdata()) > 0


@pytest.mark.parametrize("model", ["tiny", "tiny_bundle"])
def test_uploaded_file_equals_medtrans_translate(served, tmp_path, model):
    server, _, upload, reference, _ = served
    got = _nifti(server.infer(upload=upload, model=model), tmp_path / "got.nii.gz")
    assert_same_volume(got, nib.load(reference / "upload.nii.gz"))


def test_a_real_scan_upload_equals_medtrans_translate(served, tmp_path):
    """A real scan's header (TCGA, LPS, 240x240x155, SRI-24 space) comes back on its own grid, as translate writes it."""
    server, _, _, _, generator = served
    scan = shared_file("tcga-lgg-brainles/TCGA-DU-7294/t1.nii.gz")
    want = tmp_path / "want.nii.gz"
    translate_path(scan, want, generator, roi_size=(32, 32, 32), overlap=0.1, progress=False)
    got = _nifti(server.infer(ROI, upload=scan), tmp_path / "got.nii.gz")
    assert got.shape == nib.load(scan).shape
    np.testing.assert_allclose(got.affine, nib.load(scan).affine, atol=1e-5)
    assert_same_volume(got, nib.load(want))


@pytest.mark.parametrize("result_type, extension", [("invented", ".nii.gz"), ("ngf", ".nii.gz"), ("erased", ".nii")])
def test_faithfulness_map_on_request(served, tmp_path, result_type, extension):
    server, _, _, reference, _ = served
    params = {**ROI, "result_type": result_type, "result_extension": extension}
    got = _nifti(server.infer(params, image="study"), tmp_path / f"map{extension}")
    name = "study_map.nii.gz" if result_type == "ngf" else f"study_map_{result_type}.nii.gz"
    assert_same_volume(got, nib.load(reference / name))


def test_the_faithfulness_report_on_request(served, tmp_path):
    server, study, _, _, generator = served
    want = tmp_path / "report.json"
    translate_path(study, tmp_path / "t.nii.gz", generator, faithfulness_report=want, roi_size=(32, 32, 32),
                   overlap=0.1, progress=False)
    response = server.infer({**ROI, "faithfulness_report": True}, image="study", output="json")
    assert response.status_code == 200, response.text
    got = response.json()["medtrans"]["faithfulness_report"]
    assert got == {k: json.loads(want.read_text())[k] for k in ("regions", "calibration")}
    plain = server.infer(ROI, image="study", output="json").json()["medtrans"]
    assert "faithfulness_report" not in plain  # off unless asked for


def test_twenty_concurrent_requests_all_succeed(served, tmp_path):
    server, _, upload, reference, _ = served
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: server.infer(upload=upload), range(20)))
    want = nib.load(reference / "upload.nii.gz")
    for i, response in enumerate(responses):
        assert_same_volume(_nifti(response, tmp_path / f"r{i}.nii.gz"), want)


def test_corrupt_upload_gets_a_clear_error_and_the_server_keeps_serving(served, tmp_path):
    server, _, upload, reference, _ = served
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(upload.read_bytes()[:5000])  # truncated
    response = server.infer(upload=corrupt)
    assert response.status_code == 422
    assert "cannot translate the input image" in response.json()["detail"]
    assert "not a readable" in response.json()["detail"] or "truncated" in response.json()["detail"]
    got = _nifti(server.infer(upload=upload), tmp_path / "after.nii.gz")
    assert_same_volume(got, nib.load(reference / "upload.nii.gz"))


@pytest.mark.parametrize("params, message", [
    ({"result_dtype": "uint8", "result_extension": ".nrrd"}, "float32"),  # what 3D Slicer's module asks for
    ({"overlap": 1.5}, "overlap"),
    ({"roi_size": "32,32"}, "roi_size"),
    ({"result_type": "segmentation"}, "result_type"),
    ({"blend_mode": "nearest"}, "blend_mode"),
    ({"faithfulness_report": "maybe"}, "faithfulness_report"),
])
def test_bad_parameters_are_refused_with_the_reason(served, params, message):
    response = served[0].infer(params, image="study", output="json")
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_a_missing_model_stops_the_server_with_the_paths_it_tried(tmp_path):
    python = _label_python()
    app = _copy_app(tmp_path)
    (tmp_path / "studies").mkdir()
    result = subprocess.run([str(python), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies",
                             str(tmp_path / "studies"), "--host", "127.0.0.1", "--port", str(_free_port()),
                             "--conf", "models", "nope"], capture_output=True, encoding="utf-8", timeout=180, check=False)
    assert result.returncode != 0
    assert f"model not found (looked for nope, {app / 'model' / 'nope'}, {app / 'model' / 'nope.pt'})" in result.stdout + result.stderr
