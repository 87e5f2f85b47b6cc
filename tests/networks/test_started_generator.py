"""A generator on a start mapping: untrained, it is the mapping; it learns the residual; it saves and loads."""

import pytest
import torch

from medtrans.data.start import StartMapping
from medtrans.errors import ModelError
from medtrans.methods import build_method
from medtrans.model import TranslationModel, load_model, save_generator
from medtrans.networks.registry import build_network
from medtrans.networks.start import PiecewiseLinear, StartedGenerator

UNET = {"name": "medtrans.networks.UNetGenerator", "channels": [4, 8], "strides": [2]}
RESNET = {"name": "medtrans.networks.ResnetGenerator", "channels": 4, "num_res_blocks": 1}
INVERT = ([-1.0, -0.9, 1.0], [-1.0, 1.0, -0.9])  # background kept, foreground reversed
KNOTS = [-1.0, *torch.linspace(-0.9, 1.0, 33).tolist()]  # the default 34 knots, the same inversion
VALUES = [-1.0, *torch.linspace(1.0, -0.9, 33).tolist()]


def test_piecewise_linear():
    f = PiecewiseLinear(3)
    x = torch.tensor([-2.0, -1.0, -0.95, 0.05, 1.0, 3.0])
    assert torch.allclose(f(x), x.clamp(-1, 1))  # the identity until set
    f.set(*INVERT)
    assert torch.allclose(f(x), torch.tensor([-1.0, -1.0, 0.0, 0.05, -0.9, -0.9]), atol=1e-6)
    with pytest.raises(ValueError, match="expected 3 knots"):
        f.set([0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="increase strictly"):
        f.set([0.0, 0.0, 1.0], [0.0, 1.0, 2.0])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("inner", [UNET, RESNET])
def test_untrained_it_is_the_start_and_the_residual_learns(inner, dims):
    torch.manual_seed(0)
    g = build_network({"_target_": "medtrans.networks.StartedGenerator", "spatial_dims": dims, "generator": inner,
                       "num_knots": 3})
    g.set_start(*INVERT)
    x = torch.rand(2, 1, *(16,) * dims) * 2 - 1
    assert torch.equal(g(x), g.start(x))
    target = torch.zeros_like(x)
    optimizer = torch.optim.SGD(g.parameters(), lr=1e-2)
    before = torch.nn.functional.l1_loss(g(x), target).item()
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.l1_loss(g(x), target).backward()
        optimizer.step()
    assert torch.nn.functional.l1_loss(g(x), target).item() < before
    assert g.in_channels == 1 and g.size_divisor == g.network.size_divisor
    assert hasattr(g, "encode") == (inner is RESNET)


def test_a_started_generator_saves_and_loads(tmp_path):
    g_def = {"_target_": "medtrans.networks.StartedGenerator", "spatial_dims": 3, "generator": UNET, "num_knots": 3}
    g = build_network(g_def)
    g.set_start(*INVERT)
    model = TranslationModel(g, g_def, 3, start={"type": "inverted", "evidence": {"same": 0.3, "inverted": 0.1}})
    loaded = load_model(save_generator(tmp_path / "g.pt", model))
    x = torch.rand(1, 1, 8, 8, 8) * 2 - 1
    assert torch.equal(loaded.network(x), g.eval()(x)) and loaded.start["type"] == "inverted"
    with pytest.raises(ModelError, match="cannot wrap another"):
        build_network({**g_def, "generator": {"name": g_def["_target_"], "generator": UNET}})


@pytest.mark.parametrize("name,reverse", [("nec", None), ("cut", None), ("cyclegan", "g_ba"), ("pix2pix", None)])
def test_methods_start_both_directions(name, reverse):
    generator = UNET if name in ("nec", "pix2pix") else RESNET
    generator = {k: v for k, v in generator.items() if k != "name"}
    method = build_method(name, spatial_dims=2, generator=generator, start="auto")
    assert isinstance(method.generator, StartedGenerator)
    mapping = StartMapping("inverted", KNOTS, VALUES)
    method.set_start(mapping)
    x = torch.tensor([[[[-1.0, -0.9, 1.0]]]])
    assert torch.allclose(method.generator.start(x), torch.tensor([-1.0, 1.0, -0.9]))
    if reverse:
        assert torch.allclose(getattr(method, reverse).start(torch.tensor([-1.0, -0.9, 1.0])), torch.tensor([-1.0, 1.0, -0.9]))
    assert not isinstance(build_method(name, spatial_dims=2, generator=generator, start="none").generator, StartedGenerator)
    with pytest.raises(ValueError, match="start='same' but the mapping given is 'inverted'"):
        build_method(name, spatial_dims=2, generator=generator, start="same").set_start(mapping)


def test_lambda_start_holds_the_translation_near_its_start():
    """The L1 pull towards the start mapping is a logged generator term: with it, a few adversarial steps leave the
    translation closer to the start than without it."""
    torch.manual_seed(0)
    batch = {"a": torch.rand(2, 1, 32, 32) * 2 - 1, "b": torch.rand(2, 1, 32, 32) * 2 - 1}
    drift = {}
    for weight in (0.0, 100.0):
        torch.manual_seed(0)
        method = build_method("nec", spatial_dims=2, generator={k: v for k, v in UNET.items() if k != "name"},
                              discriminator={"channels": 4, "num_layers": 2, "num_scales": 1}, lambda_start=weight)
        method.set_start(StartMapping("inverted", KNOTS, VALUES))
        method.setup("cpu")
        losses = [method.training_step(batch) for _ in range(8)]
        assert ("start" in losses[-1]) == (weight > 0)
        with torch.no_grad():
            drift[weight] = float((method.generator(batch["a"]) - method.generator.start(batch["a"])).abs().mean())
    assert drift[100.0] < 0.5 * drift[0.0], drift


def test_unit_has_no_start():
    with pytest.raises(ValueError, match="UNIT has no start mapping"):
        build_method("unit", spatial_dims=2, start="auto")


def test_training_chooses_saves_and_starts_at_the_mapping(tmp_path):
    """start="auto": the trainer estimates the mapping from the stream before the first step, the translator record
    carries the choice, and an untrained two-sided method starts G_ab at it and G_ba at its inverse."""
    import nibabel as nib
    import numpy as np

    from medtrans.data import TrainStream
    from medtrans.engine import TranslationTrainer

    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij")) - 16
    radius = np.sqrt((grid**2).sum(0))
    for domain, core, rim in (("a", 250.0, 400.0), ("b", 400.0, 250.0)):  # B is A with the tissues' order reversed
        (tmp_path / domain).mkdir()
        for seed in range(2):
            noise = np.random.default_rng(seed).normal(0, 5, radius.shape)
            image = np.where(radius < 8, core, rim) * (radius < 12 + seed) + noise * (radius < 12 + seed)
            nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), tmp_path / domain / f"s{seed}.nii.gz")
    method = build_method("cyclegan", spatial_dims=3, generator={k: v for k, v in RESNET.items() if k != "name"},
                          discriminator={"channels": 4, "num_layers": 2}, start="auto")
    stream = TrainStream(str(tmp_path / "a"), str(tmp_path / "b"), {"patch_size": (24, 24, 24), "num_workers": 0})
    trainer = TranslationTrainer(method, stream, tmp_path / "run", iterations=1, tracking="none", progress=False)
    assert trainer.model.start["type"] == "inverted" and set(trainer.model.start["evidence"]) == {"same", "inverted"}
    mapping = method.start_mapping
    x = torch.tensor(mapping.knots[1:4])
    assert torch.allclose(method.g_ab.start(x), torch.tensor(mapping.values[1:4]))
    assert torch.allclose(method.g_ba.start(method.g_ab.start(x)), x, atol=1e-4)


def test_a_translator_starts_each_input_from_its_own_histogram():
    """The start mapping runs from the input's own foreground quantiles onto domain B's values: an untrained translator
    gives any input B's distribution (here uniform on [-0.9, 1], reversed), whatever the input's histogram, as the
    inverted, histogram-matched baseline does; the generator's own knots stay as trained."""
    import numpy as np

    from medtrans.inference import Translator
    from medtrans.io import Volume

    g_def = {"_target_": "medtrans.networks.StartedGenerator", "spatial_dims": 3, "generator": UNET}
    g = build_network(g_def)
    g.set_start(KNOTS, VALUES)
    model = TranslationModel(g, g_def, 3, start={"type": "inverted", "evidence": {}})
    grid = np.stack(np.meshgrid(*(np.arange(32),) * 3, indexing="ij"))
    inside = ((grid - 15.5) ** 2).sum(0) < 14**2
    rng = np.random.default_rng(0)
    data = np.where(inside, 100 + 900 * np.sqrt(rng.random(inside.shape)), 0).astype(np.float32)  # skewed: mostly bright
    translated = Translator(model).translate(Volume(data, np.eye(4), "skewed.nii.gz"))
    out = translated.output_normalized[inside & (translated.source_normalized > -0.99)]
    assert np.allclose(np.quantile(out, [0.1, 0.5, 0.9]), [-0.71, 0.05, 0.81], atol=0.05)
    assert np.corrcoef(out, translated.source_normalized[inside & (translated.source_normalized > -0.99)])[0, 1] < -0.9
    assert torch.equal(g.start.knots, torch.tensor(KNOTS))
