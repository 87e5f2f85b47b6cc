import time

import pytest
import torch

from medtrans.networks import (
    DiscriminatorFeatures,
    HookFeatures,
    MultiResolutionDiscriminator,
    PretrainedFeatures,
    PretrainedWeightsUnavailableError,
    ResnetGenerator,
)


def test_discriminator_features_cover_every_scale(seeded):
    disc = MultiResolutionDiscriminator(3, num_scales=2, channels=4, num_layers=2)
    feats = DiscriminatorFeatures(disc)(torch.randn(1, 1, 24, 24, 24))
    assert [f.shape[1] for f in feats] == [4, 8, 16] * 2
    chosen = DiscriminatorFeatures(disc, layers=[0, 3])(torch.randn(1, 1, 24, 24, 24))
    assert [tuple(f.shape[2:]) for f in chosen] == [(12, 12, 12), (6, 6, 6)]


def test_hook_features_read_named_layers(seeded):
    net = ResnetGenerator(2, channels=4, num_res_blocks=1)
    x = torch.randn(1, 1, 16, 16)
    feats = HookFeatures(net, ["layers.1", "layers.3"])(x)
    assert [tuple(f.shape) for f in feats] == [tuple(t.shape) for t in net.encode(x, [2, 4])]
    assert all(torch.allclose(a, b) for a, b in zip(feats, net.encode(x, [2, 4])))
    with pytest.raises(KeyError, match="no sub-module"):
        HookFeatures(net, ["decoder"])


def test_pretrained_features_fail_fast_and_clearly_offline(tmp_path):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailableError, match="not in the torch hub cache.*does not download"):
        PretrainedFeatures("medicalnet_resnet10_23datasets", spatial_dims=3, hub_dir=str(tmp_path))
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError, match="3D network"):
        PretrainedFeatures("medicalnet_resnet10_23datasets", spatial_dims=2, hub_dir=str(tmp_path))
