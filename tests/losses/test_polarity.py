import pytest
import torch
import torch.nn.functional as F

from medtrans.losses import PolarityLoss, invert_foreground


@pytest.fixture
def padded_t1_t2(brain_t1_t2):
    """The synthetic T1/T2 blocks inside an 8-voxel background border at -1, as a skull-stripped brain has."""
    return tuple(F.pad(v, (8,) * 6, value=-1.0) for v in brain_t1_t2)


def test_inverts_the_foreground_and_keeps_the_background(padded_t1_t2):
    t1, _ = padded_t1_t2
    inverted = invert_foreground(t1)
    background = t1 <= -1.0 + 1e-3  # the minimum, within the tolerance
    assert background.sum() > 0 and torch.equal(inverted[background], t1[background])
    assert torch.equal(inverted[~background], -t1[~background])
    assert torch.equal(invert_foreground(t1[..., 30]), inverted[..., 30])  # 2D slices alike


def test_each_image_keeps_its_own_background(padded_t1_t2):
    t1, _ = padded_t1_t2
    batch = torch.cat([t1, 0.5 * t1 + 0.3])  # the second image's background is at -0.2
    inverted = invert_foreground(batch)
    assert torch.equal(inverted[0], invert_foreground(t1)[0])
    assert (inverted[1][batch[1] == -0.2] == -0.2).all()


def test_zero_at_its_prior_and_the_inverse_nearer_a_real_t2(padded_t1_t2):
    t1, t2 = padded_t1_t2
    inverted, same = PolarityLoss("inverted"), PolarityLoss("same")
    assert inverted(t1, invert_foreground(t1)).item() == 0.0 and same(t1, t1).item() == 0.0
    assert inverted(t1, t1).item() > 0.1
    assert inverted(t1, t2).item() < same(t1, t2).item()  # T2's contrast is the T1's, inverted


def test_has_gradient_and_rejects_unknown_polarity(brain_t1_slice):
    output = torch.zeros_like(brain_t1_slice, requires_grad=True)
    PolarityLoss()(brain_t1_slice, output).backward()
    assert output.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="polarity_type must be one of"):
        PolarityLoss("negative")
