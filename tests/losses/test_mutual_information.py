import pytest
import torch

from medtrans.losses import MutualInformationLoss


def test_zero_for_the_source_and_its_inverse(brain_t1_t2):
    t1, _ = brain_t1_t2
    loss = MutualInformationLoss()
    assert loss(t1, t1).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(t1, -t1).item() == pytest.approx(0.0, abs=1e-5)


def test_one_mapping_beats_mixed_polarity_beats_noise(brain_t1_t2):
    t1, t2 = brain_t1_t2
    torch.manual_seed(0)
    loss = MutualInformationLoss()
    mixed = torch.where(torch.arange(48).view(1, 1, 48, 1, 1) < 24, t1, -t1)  # inverted in one half only
    nonmonotone = loss(t1, 1 - 2 * t1**2).item()  # one (non-monotone) intensity mapping
    values = [loss(t1, x).item() for x in (mixed, t2, (t2 + 0.3 * torch.randn_like(t2)).clamp(-1, 1), torch.rand_like(t1) * 2 - 1)]
    assert nonmonotone < values[0]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(1.0, abs=0.02)


def test_2d_gradient_and_value_range(brain_t1_slice):
    s = brain_t1_slice
    output = (-s + 0.2 * torch.randn_like(s)).clamp(-1, 1).requires_grad_(True)
    loss = MutualInformationLoss()(s, output)
    loss.backward()
    assert 0.0 < loss.item() < 1.0
    assert output.grad is not None and output.grad.abs().sum() > 0
    # the same images in [0, 1] with the matching value_range score the same
    assert MutualInformationLoss((0.0, 1.0))((s + 1) / 2, (output.detach() + 1) / 2).item() == pytest.approx(loss.item(), abs=1e-5)
    with pytest.raises(ValueError, match="value_range"):
        MutualInformationLoss((1.0, 1.0))
