import pytest
import torch
import torch.nn.functional as F

from medtrans.losses import PatchNCELoss
from medtrans.networks import PatchSampleMLP, ResnetGenerator


def _nce_pair(generator, head, source, output, num_patches=64):
    layers = generator.default_nce_layers
    feat_k, ids = head(generator.encode(source, layers), num_patches)
    feat_q, _ = head(generator.encode(output, layers), num_patches, ids)
    return feat_q, feat_k


@pytest.mark.parametrize("dims", [2, 3])
def test_lower_for_output_equal_to_source_than_shuffled(brain_t1_t2, brain_t1_slice, dims, seeded):
    source = brain_t1_t2[0][..., 8:40, 8:40, 8:40] if dims == 3 else brain_t1_slice[..., 8:40, 8:40]
    generator = ResnetGenerator(dims, channels=8, num_res_blocks=2)
    head = PatchSampleMLP(generator.feature_channels[i] for i in generator.default_nce_layers)
    shuffled = source.flatten()[torch.randperm(source.numel())].view_as(source)
    loss = PatchNCELoss()
    with torch.no_grad():
        same = loss(*_nce_pair(generator, head, source, source))
        other = loss(*_nce_pair(generator, head, source, shuffled))
    assert same.item() < other.item() - 0.5


def test_matches_hand_computed_cross_entropy(seeded):
    q = F.normalize(torch.randn(6, 4), dim=1)  # batch 2 x 3 patches
    k = F.normalize(torch.randn(6, 4), dim=1)
    tau = 0.07
    expected = []
    for b in range(2):
        for i in range(3):
            row = 3 * b + i
            negs = [q[row] @ k[3 * b + j] for j in range(3) if j != i]
            logits = torch.stack([q[row] @ k[row], *negs]) / tau
            expected.append(-torch.log_softmax(logits, 0)[0])
    # masked diagonal (-10/τ) contributes exp(-142.9) ~ 0
    assert PatchNCELoss(tau)(q, k, batch_size=2).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_batch_negatives_and_gradients_only_through_query(seeded):
    q = F.normalize(torch.randn(8, 16), dim=1).requires_grad_()
    k = F.normalize(torch.randn(8, 16), dim=1).requires_grad_()
    image_loss = PatchNCELoss(negatives_type="image")(q, k, batch_size=2)
    batch_loss = PatchNCELoss(negatives_type="batch")(q, k, batch_size=2)
    assert batch_loss.item() != pytest.approx(image_loss.item())  # more negatives: a different value
    batch_loss.backward()
    assert q.grad.abs().sum() > 0 and k.grad is None
    with pytest.raises(ValueError, match="negatives_type"):
        PatchNCELoss(negatives_type="other")
