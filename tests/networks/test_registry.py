"""Networks are built from configs as plain data: nothing in a config is evaluated, imported or instantiated."""

import pytest
import torch
from torch import nn

from medtrans.errors import ModelError
from medtrans.networks import ResnetGenerator, UNetGenerator
from medtrans.networks.registry import NETWORKS, build_network, register_network

TINY = {"_target_": "medtrans.networks.UNetGenerator", "spatial_dims": 2, "channels": [4, 8], "strides": [2]}


def _payloads(marker):
    command = f"touch {marker}"
    return {
        "expression argument": {**TINY, "channels": f"$__import__('os').system('{command}') or [4, 8]"},
        "expression in a list": {**TINY, "channels": [f"$__import__('os').system('{command}') or 4", 8]},
        "nested _target_": {**TINY, "norm": {"_target_": "os.system", "command": command}},
        "nested _target_ in a tuple": {**TINY, "act": ["leakyrelu", {"_target_": "os.system", "command": command}]},
        "_requires_": {**TINY, "_requires_": f"$__import__('os').system('{command}')"},
        "prefix-looking target": {"_target_": "medtrans.io.os.system", "command": command},
        "target of a module": {"_target_": "os.system", "command": command},
        "reference": {**TINY, "channels": "@network"},
    }


@pytest.mark.parametrize("name", list(_payloads("x")))
def test_payloads_never_run(name, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ModelError, match="evil.pt: "):
        build_network(_payloads(marker)[name], "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("config,message", [
    ("UNetGenerator", "network config must be a dict"),
    ({"spatial_dims": 2}, "_target_ None is not a registered network"),
    ({**TINY, "_target_": "medtrans.networks.UNetGenerato"}, "did you mean 'medtrans.networks.UNetGenerator'"),
    ({**TINY, "chanels": [4, 8]}, "has no argument 'chanels'; did you mean 'channels'"),
    ({**TINY, "channels": 8}, r"argument channels expects Sequence\[int\], got 8"),
    ({**TINY, "channels": [4, 8.5]}, "argument channels expects"),
    ({**TINY, "spatial_dims": "3"}, "argument spatial_dims expects int"),
    ({**TINY, "spatial_dims": True}, "argument spatial_dims expects int"),
    ({**TINY, "dropout": float("nan")}, "network.dropout is nan, expected a finite number"),
    ({**TINY, "dropout": torch.tensor(0.5)}, "is a Tensor, not plain data"),
    ({k: v for k, v in TINY.items() if k != "spatial_dims"}, "needs the argument.s. spatial_dims"),
    ({**TINY, "upsample_type": "magic"}, "cannot build network medtrans.networks.UNetGenerator .ValueError: upsample_type"),
])
def test_bad_configs_are_named(config, message):
    with pytest.raises(ModelError, match=message):
        build_network(config, "g.pt")


def test_plain_configs_build_every_registered_network():
    assert isinstance(build_network(TINY), UNetGenerator)
    assert isinstance(build_network({**TINY, "norm": ["group", {"num_groups": 2}], "dropout": 0}), UNetGenerator)
    resnet = {"_target_": "medtrans.networks.ResnetGenerator", "spatial_dims": 3, "channels": 4, "num_res_blocks": 1}
    assert isinstance(build_network(resnet), ResnetGenerator)
    conv = build_network({"_target_": "monai.networks.blocks.Convolution", "spatial_dims": 2, "in_channels": 1,
                          "out_channels": 1, "kernel_size": [3, 1], "conv_only": True})
    assert conv(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    for name in NETWORKS:  # every registered signature can be checked (resolvable annotations)
        with pytest.raises(ModelError, match="no argument 'not_an_argument'"):
            build_network({"_target_": name, "spatial_dims": 2, "not_an_argument": 1})


def test_a_registered_network_of_ones_own():
    class Tiny(nn.Module):
        def __init__(self, spatial_dims: int, width: int = 2) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, width, 1) if spatial_dims == 2 else nn.Conv3d(1, width, 1)

    register_network("tests.Tiny", Tiny)
    try:
        assert build_network({"_target_": "tests.Tiny", "spatial_dims": 2, "width": 3}).conv.out_channels == 3
        with pytest.raises(ModelError, match="argument width expects int"):
            build_network({"_target_": "tests.Tiny", "spatial_dims": 2, "width": "3"})
        with pytest.raises(ValueError, match="already registered"):
            register_network("tests.Tiny", nn.Identity)
    finally:
        del NETWORKS["tests.Tiny"]
