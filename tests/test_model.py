import pytest
import torch

from medtrans.errors import ModelError
from medtrans.model import TranslationModel, load_model, save_generator
from medtrans.networks import ResnetGenerator
from medtrans.networks.registry import build_network

NET = {"_target_": "medtrans.networks.ResnetGenerator", "spatial_dims": 3, "channels": 4, "num_res_blocks": 1}


def _model() -> TranslationModel:
    torch.manual_seed(0)
    return TranslationModel(build_network(NET), NET, 3, target_intensity={"type": "window", "low": 0, "high": 900})


def test_checkpoint_round_trip(tmp_path):
    model = _model()
    path = save_generator(tmp_path / "g.pt", model)
    loaded = load_model(path)
    assert isinstance(loaded.network, ResnetGenerator) and not loaded.network.training
    assert loaded.target_intensity == {"type": "window", "low": 0, "high": 900}
    assert loaded.preprocessing.intensity["type"] == "percentile"
    x = torch.rand(1, 1, 8, 8, 8)
    assert torch.equal(loaded.network(x), model.network.eval()(x))
    trainer_ckpt = tmp_path / "trainer.pt"
    torch.save({"generator": model.record(), "iteration": 7}, trainer_ckpt)
    assert torch.equal(load_model(trainer_ckpt).network(x), model.network(x))


def test_bundle_folder(tmp_path):
    """A bundle's network comes from its saved model (the generator record bundle training exports)."""
    model = _model()
    model.inference = {"roi_size": [32, 32, 32]}
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    save_generator(tmp_path / "models" / "model.pt", model)
    loaded = load_model(tmp_path)
    assert loaded.inference == {"roi_size": [32, 32, 32]} and loaded.target_intensity == model.target_intensity
    x = torch.rand(1, 1, 8, 8, 8)
    assert torch.equal(loaded.network(x), model.network.eval()(x))
    torch.save(model.network.state_dict(), tmp_path / "models" / "model.pt")  # plain weights: no network to build
    with pytest.raises(ModelError, match="model.pt: is not a medtrans generator checkpoint"):
        load_model(tmp_path)


def test_bad_models_are_named(tmp_path):
    with pytest.raises(ModelError, match="missing.pt: model checkpoint or bundle does not exist"):
        load_model(tmp_path / "missing.pt")
    other = _model().record()
    other["network_def"] = dict(NET, channels=8)
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="other.pt: holds weights of another architecture"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01junk")
    with pytest.raises(ModelError, match="junk.pt: is not a readable medtrans checkpoint") as caught:
        load_model(tmp_path / "junk.pt")
    assert "weights_only" not in str(caught.value)
    torch.save({"not": object()}, tmp_path / "pickled.pt")  # arbitrary Python objects are never unpickled
    with pytest.raises(ModelError, match="pickled.pt: is not a readable medtrans checkpoint .it holds Python objects"):
        load_model(tmp_path / "pickled.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ModelError, match="is not a medtrans generator checkpoint"):
        load_model(tmp_path / "foreign.pt")
    with pytest.raises(ModelError, match="is not a registered network"):
        build_network({"_target_": "os.system", "command": "true"})
    with pytest.raises(ModelError, match="not a bundle"):
        load_model(tmp_path)
    (tmp_path / "configs").mkdir()
    with pytest.raises(ModelError, match="bundle has no trained model at .*model.pt: train it first"):
        load_model(tmp_path)
