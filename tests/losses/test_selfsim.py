import pytest
import torch

from medtrans.losses import SpatialCorrelativeLoss, patch_self_similarity
from medtrans.networks import ResnetGenerator


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("loss_type", ["cos", "l1"])
def test_zero_for_identical_and_larger_for_shifted(brain_t1_t2, brain_t1_slice, dims, loss_type, seeded):
    image = brain_t1_t2[0][..., 8:40, 8:40, 8:40] if dims == 3 else brain_t1_slice[..., 8:40, 8:40]
    features = ResnetGenerator(dims, channels=8, num_res_blocks=1).encode
    loss = SpatialCorrelativeLoss(loss_type, patch_size=5, num_patches=64)
    with torch.no_grad():
        fs = features(image, [1, 2])
        same = loss(fs, features(image, [1, 2]))
        shifted = loss(fs, features(torch.roll(image, 4, dims=2), [1, 2]))
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    assert shifted.item() > 0.05


def test_info_is_lowest_for_identical(seeded):
    f = torch.randn(2, 8, 16, 16, 16)
    loss = SpatialCorrelativeLoss("info", patch_size=4, num_patches=32)
    assert loss(f, f).item() < loss(f, torch.roll(f, 3, dims=2)).item() - 1.0


def test_window_maps_match_a_manual_loop(seeded):
    f = torch.randn(1, 3, 7, 9, 6)
    ids = torch.tensor([0, 100, 377])
    maps, _ = patch_self_similarity(f, patch_size=3, num_patches=0, patch_ids=ids)
    g = f - f.mean(dim=(2, 3, 4), keepdim=True)
    g = torch.nn.functional.normalize(g, dim=1)
    for n, flat in enumerate(ids.tolist()):
        z, y, x = torch.unravel_index(torch.tensor(flat), (7, 9, 6))
        start = [min(max(int(c) - 1, 0), s - 3) for c, s in zip((z, y, x), (7, 9, 6))]
        window = g[0, :, start[0] : start[0] + 3, start[1] : start[1] + 3, start[2] : start[2] + 3].reshape(3, -1)
        expected = g[0, :, z, y, x] @ window
        assert torch.allclose(maps[0, n], expected, atol=1e-6)


def test_gradient_reaches_output_features_only(seeded):
    fs = torch.randn(1, 4, 12, 12, requires_grad=True)
    fo = torch.randn(1, 4, 12, 12, requires_grad=True)
    SpatialCorrelativeLoss(patch_size=4, num_patches=16)(fs, fo).backward()
    assert fo.grad.abs().sum() > 0 and fs.grad is None
