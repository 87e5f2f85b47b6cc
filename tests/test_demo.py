import pandas as pd
import pytest

pytest.importorskip("nilearn", reason="the 'demo' extra is not installed")

import medtrans.commands.demo as demo  # noqa: E402
from medtrans.commands.cli import main  # noqa: E402


@pytest.mark.slow
def test_demo_runs_end_to_end_and_its_result_depends_on_iterations_not_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "REFERENCE_SPEED", 1e6)  # this machine is "far slower than the reference"
    assert main(["demo", "--output", str(tmp_path), "--iterations", "60", "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "60 training iterations, 1 threads; about" in out and "measured" in out and "it/s" in out
    assert "WARNING: this machine trains" in out and "The result will be the same, only later." in out
    assert "inverted + histogram-matched input" in out and "protocol: both scaled by the target's" in out
    assert "done in" in out
    for part in ("translated/test00.nii.gz", "faithfulness/test00_invented.nii.gz", "scores.csv", "montage.png",
                 "generator.pt", "baselines/histmatch/test00.nii.gz", "regions/test00.json", "regions/test00.png",
                 "regions/test00_regions.nii.gz"):
        assert (tmp_path / part).exists(), part
    first = pd.read_csv(tmp_path / "scores.csv")
    # the translator starts from the inverted, histogram-matched mapping it chose, so even 60 iterations score at
    # least as well as that baseline does
    means = first.groupby("method")[["psnr", "ssim3d", "texture"]].mean()
    assert means.psnr[demo.NEC] >= means.psnr[demo.INVERTED] - 0.3, means
    assert means.ssim3d[demo.NEC] >= means.ssim3d[demo.INVERTED] - 0.01, means
    (tmp_path / "scores.csv").unlink()
    # again, on the same (reused) data: the same iterations give the same translation and scores
    assert main(["demo", "--output", str(tmp_path), "--iterations", "60", "--threads", "1", "--no-progress"]) == 0
    assert "reusing the embedded dataset" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, pd.read_csv(tmp_path / "scores.csv"))
