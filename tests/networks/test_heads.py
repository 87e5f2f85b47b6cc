import pytest
import torch

from medtrans.networks import PatchSampleMLP


@pytest.mark.parametrize("dims", [2, 3])
def test_samples_same_locations_with_unit_rows(dims, seeded):
    feats = [torch.randn((2, 4) + (8,) * dims), torch.randn((2, 16) + (4,) * dims)]
    head = PatchSampleMLP([4, 16], num_features=32)
    samples, ids = head(feats, num_patches=20)
    n_small = 4**dims if 4**dims < 20 else 20
    assert [tuple(s.shape) for s in samples] == [(2 * 20, 32), (2 * n_small, 32)]
    assert all(torch.allclose(s.norm(dim=1), torch.ones(s.shape[0])) for s in samples)
    again, ids2 = head(feats, patch_ids=ids)
    assert all(torch.equal(a, b) for a, b in zip(samples, again))
    assert all(torch.equal(a, b) for a, b in zip(ids, ids2))


def test_rows_are_the_features_at_the_sampled_locations(seeded):
    feat = torch.randn(2, 3, 5, 6)
    head = PatchSampleMLP([3], use_mlp=False)
    (samples,), (ids,) = head([feat], num_patches=7)
    flat = feat.flatten(2)
    expected = torch.nn.functional.normalize(torch.cat([flat[b, :, ids].T for b in range(2)]), dim=1)
    assert torch.allclose(samples, expected)


def test_channel_mismatch_is_rejected():
    with pytest.raises(ValueError, match="channels"):
        PatchSampleMLP([4])([torch.randn(1, 5, 4, 4)])
