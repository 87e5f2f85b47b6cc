"""Weight initialisation of every network a method builds, as the pix2pix/CycleGAN/CUT reference code does it."""

from __future__ import annotations

import torch
from torch import nn

from medtrans.networks.layers import reinit_subpixel
from medtrans.networks.start import StartedGenerator

__all__ = ["INIT_TYPES", "init_weights"]

INIT_TYPES = ("normal", "xavier", "kaiming", "default")


def init_weights(network: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise convolution and linear weights as the pix2pix/CycleGAN/CUT reference code does.

    ``"normal"``: N(0, gain) (the reference default); ``"xavier"``: Xavier-normal with ``gain`` (CUT's default);
    ``"kaiming"``: Kaiming-normal (fan in); ``"default"``: the network's own initialisation, left untouched
    (PyTorch's layer defaults, or what the network applies itself, e.g. MONAI's PatchDiscriminator: N(0, 0.02)).
    Otherwise biases start at 0 and affine normalisation weights at N(1, gain), and sub-pixel convolutions draw their
    kernel the same way but keep it ICNR-tied (see :func:`medtrans.networks.layers.subpixel_upsample`).

    Raises:
        ValueError: on an unknown ``init_type``.
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f"init_type must be one of {INIT_TYPES}, got {init_type!r}")
    if init_type == "default":
        return _reset_residuals(network)
    draw = {
        "normal": lambda w: nn.init.normal_(w, 0.0, gain),
        "xavier": lambda w: nn.init.xavier_normal_(w, gain=gain),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
    }[init_type]
    for module in network.modules():
        if nn.utils.parametrize.is_parametrized(module, "weight"):  # e.g. spectral norm: initialise the raw weight
            weight = module.parametrizations.weight.original
        else:
            weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        name = type(module).__name__
        if "Conv" in name or isinstance(module, nn.Linear):
            draw(weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif "Norm" in name and weight.dim() == 1:
            nn.init.normal_(weight, 1.0, gain)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    reinit_subpixel(network, draw)  # sub-pixel convolutions keep their ICNR tie, drawn the same way
    return _reset_residuals(network)


def _reset_residuals(network: nn.Module) -> nn.Module:
    """Residual generators on a start mapping (:class:`~medtrans.networks.start.StartedGenerator`) start at zero."""
    for module in network.modules():
        if isinstance(module, StartedGenerator):
            module.reset_residual()
    return network
