"""F/LSeSim's learned descriptor: its augmentation, and what inverting in it teaches the descriptor."""

import pytest
import torch

from medtrans.methods import build_method


def _lsesim(tiny, **kwargs):
    name, tiny_kwargs, _ = tiny("lsesim")
    return build_method(name, spatial_dims=2, **{**tiny_kwargs, **kwargs})


def test_augmentation_inverts_with_its_probability(tiny, lesjak_t1_slice):
    batch = lesjak_t1_slice.expand(64, -1, -1, -1)
    kept, inverted, half = (_lsesim(tiny, invert_probability=p) for p in (0.0, 1.0, 0.5))
    torch.manual_seed(0)
    a = kept.augment(batch)
    torch.manual_seed(0)
    b = inverted.augment(batch)
    assert torch.allclose(b, -a)  # the same gamma and contrast, the sign flipped
    brain = lesjak_t1_slice > lesjak_t1_slice.mean()
    kept_polarity = (a - a.mean(dim=(2, 3), keepdim=True))[:, brain[0]].mean(1) > 0
    assert kept_polarity.all()  # without inversion the bright tissue stays bright
    flipped = (half.augment(batch) - a.mean(dim=(2, 3), keepdim=True))[:, brain[0]].mean(1) < 0
    assert 16 < flipped.sum() < 48, flipped.sum()


def test_inverting_augmentation_makes_the_learned_descriptor_polarity_blind(tiny, lesjak_t1_slice):
    """Trained with inversion, LSeSim's descriptor matches a slice with its inverted copy better than without."""
    batch = lesjak_t1_slice.expand(4, -1, -1, -1)
    losses = {}
    for p in (0.0, 0.5):
        torch.manual_seed(0)
        method = _lsesim(tiny, invert_probability=p, lr_decay_iters=0)
        method.setup("cpu")
        for _ in range(60):
            loss = method.feature_loss(method.net_f(batch), method.net_f(method.augment(batch)))
            method.optimize("features", loss)
        with torch.no_grad():
            torch.manual_seed(1)
            losses[p] = method.spatial(method.net_f(lesjak_t1_slice), method.net_f(-lesjak_t1_slice)).item()
    assert losses[0.5] < losses[0.0] - 0.1, losses


@pytest.mark.parametrize("kwargs, match", [
    ({"variant": "lsesim", "invert_probability": 1.5}, "invert_probability must be in"),
    ({"variant": "lsesim", "invert_probability": -0.1}, "invert_probability must be in"),
    ({"variant": "fsesim", "invert_probability": 0.5}, "use variant='lsesim'"),
])
def test_rejects_a_bad_invert_probability(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _lsesim(tiny, **kwargs)
