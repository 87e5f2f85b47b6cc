"""The method contract, for every method: a training step returns every configured loss term, structure losses
included, as plain (detached) floats."""

import math

import pytest
import torch

from medtrans.methods import build_method, method_names
from medtrans.networks import ConvFeatures
from medtrans.utils import seed_everything
from tests.methods.conftest import METHOD_OF, TINY

TERMS = {
    "pix2pix": {"g_gan", "g_l1", "d"},
    "cyclegan": {"g_gan", "cycle", "d"},  # identity is off by default: it would undo the start mapping
    "cycle_medgan": {"g_gan", "cycle_perceptual", "cycle_style", "d"},  # λ_idt is relative to the L1 cycle term, off
    "cut": {"g_gan", "nce", "nce_identity", "d"},
    "fastcut": {"g_gan", "nce", "d"},
    "nec": {"g_gan", "ngf", "d"},
    "fsesim": {"g_gan", "spatial", "d"},
    "lsesim": {"features", "g_gan", "spatial", "d"},
    "unit": {"g_gan", "recon", "cycle", "kl", "kl_cycle", "d"},
    "unit_gmm": {"g_gan", "recon", "cycle", "kl", "kl_cycle", "d"},
}


def test_every_method_is_covered():
    assert {METHOD_OF.get(v, v) for v in TERMS} == set(method_names()) and set(TERMS) == set(TINY)


@pytest.mark.parametrize("structure", [False, True])
@pytest.mark.parametrize("variant", sorted(TERMS))
def test_losses_are_detached_floats_and_every_term_is_logged(variant, structure, tiny):
    name, kwargs, _ = tiny(variant)
    seed_everything(0)
    extra = {"structure_losses": [{"type": "ngf", "weight": 0.5}]} if structure else {}
    method = build_method(name, spatial_dims=2, **kwargs, **extra).setup("cpu")
    batch = {"a": torch.rand(2, 1, 32, 32) * 2 - 1, "b": torch.rand(2, 1, 32, 32) * 2 - 1}
    losses = method.training_step(batch)
    assert set(losses) == TERMS[variant] | ({"structure"} if structure else set())
    assert all(type(v) is float and math.isfinite(v) for v in losses.values()), losses


@pytest.mark.parametrize("variant", sorted(TERMS))
def test_every_trained_network_follows_init_type(variant, tiny):
    """Every trained convolution and linear layer — projection heads included — draws from ``init_type``: the
    reference code initialises all of its networks alike, and a head left at another scale learns at another pace.
    (SeSim's ConvFeatures keep their own initialisation: FSeSim's descriptor is defined by it, LSeSim starts from it.)"""
    name, kwargs, _ = tiny(variant)
    gain = 0.5  # far from every layer's own default scale
    method = build_method(name, spatial_dims=2, init_type="xavier", init_gain=gain, **kwargs)
    own_init = {id(m) for f in method.modules() if isinstance(f, ConvFeatures) for m in f.modules()}
    checked = 0
    for module in method.modules():
        if id(module) in own_init:
            continue
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            continue
        weight = module.weight
        if not weight.requires_grad or weight.numel() < 1024:
            continue
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(weight)
        expected = gain * math.sqrt(2.0 / (fan_in + fan_out))
        assert weight.std().item() == pytest.approx(expected, rel=0.2), (variant, module)
        checked += 1
    assert checked > 0


@pytest.mark.parametrize(
    "variant, options, identity",
    [("cyclegan", {"start": "none"}, True), ("cyclegan", {}, False), ("cyclegan", {"start": "auto", "lambda_identity": 0.5}, True),
     ("cyclegan", {"lambda_identity": 0.0}, False), ("cycle_medgan", {}, False),
     ("cycle_medgan", {"lambda_cycle": 1.0, "start": "none"}, True)],
)
def test_identity_term_runs_only_at_a_nonzero_weight(variant, options, identity, tiny):
    """The identity term weighs λ_cyc λ_idt (λ_idt relative to the L1 cycle term, as in the reference code; by default
    0.5 without a start mapping, 0 on one): at weight 0 — Cycle-MedGAN's, whose L1 cycle term is off — neither
    generator runs a third time."""
    name, kwargs, _ = tiny(variant)
    method = build_method(name, spatial_dims=2, **kwargs, **options).setup("cpu")
    calls = []
    method.g_ab.register_forward_hook(lambda *_: calls.append(1))
    batch = {"a": torch.rand(1, 1, 32, 32) * 2 - 1, "b": torch.rand(1, 1, 32, 32) * 2 - 1}
    losses = method.training_step(batch)
    assert ("identity" in losses) is identity
    assert len(calls) == (3 if identity else 2)
