"""A generator that starts from a fixed intensity mapping and learns the residual on top of it."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medtrans.defaults import START_KNOTS

__all__ = ["PiecewiseLinear", "StartedGenerator"]


class PiecewiseLinear(nn.Module):
    """``y = f(x)`` voxel-wise, ``f`` piecewise linear through ``(knots[i], values[i])`` and constant beyond the ends.

    Knots and values are buffers (saved with the weights, never trained); they start as the identity on [-1, 1].
    """

    def __init__(self, num_knots: int) -> None:
        super().__init__()
        if num_knots < 2:
            raise ValueError(f"num_knots must be >= 2, got {num_knots}")
        self.register_buffer("knots", torch.linspace(-1.0, 1.0, num_knots))
        self.register_buffer("values", torch.linspace(-1.0, 1.0, num_knots))

    @torch.no_grad()
    def set(self, knots: Sequence[float], values: Sequence[float]) -> None:
        """Use the map through ``(knots, values)``: as many as :attr:`knots` holds, knots strictly increasing.

        Raises:
            ValueError: on another number of knots, or knots that do not increase.
        """
        knots_t = torch.as_tensor(knots, dtype=torch.float32)
        values_t = torch.as_tensor(values, dtype=torch.float32)
        if knots_t.shape != self.knots.shape or values_t.shape != self.values.shape:
            raise ValueError(f"expected {self.knots.numel()} knots and values, got {knots_t.numel()} and {values_t.numel()}")
        if not bool((knots_t[1:] > knots_t[:-1]).all()):
            raise ValueError("knots must increase strictly")
        self.knots.copy_(knots_t)
        self.values.copy_(values_t)

    def forward(self, x: torch.Tensor, knots: torch.Tensor | None = None) -> torch.Tensor:
        """``f(x)``; ``knots`` (as many, increasing) replace the stored ones for this call, e.g. an input's own
        quantiles (the values stay)."""
        knots = self.knots if knots is None else knots.to(self.knots)
        values = self.values
        x = x.float().clamp(knots[0], knots[-1])
        index = torch.bucketize(x, knots[1:-1])  # segment [knots[i], knots[i + 1]]
        k0, k1, v0, v1 = knots[index], knots[index + 1], values[index], values[index + 1]
        return v0 + (x - k0) / (k1 - k0) * (v1 - v0)


class StartedGenerator(nn.Module):
    """``G(x) = clamp(f(x) + R(x), -1, 1)``: a fixed start mapping ``f`` (:class:`PiecewiseLinear`, chosen from the
    training data by :func:`medtrans.data.start.estimate_start`) plus a generator ``R`` that learns the residual.

    ``R``'s output convolution starts at zero (:meth:`reset_residual`, which :func:`medtrans.networks.init.init_weights`
    calls again after drawing the weights), so an untrained translator reproduces the start mapping exactly, and the
    gradient reaches every layer from the first step on. Attributes the wrapped generator offers (``encode``,
    ``size_divisor``, ``in_channels``...) are read through.

    Configs build it through :func:`medtrans.networks.registry.started_generator`, which builds ``R`` from its own
    config.

    Args:
        spatial_dims: 2 or 3.
        network: the residual generator ``R``.
        num_knots: knots of the start mapping (the background and the foreground quantiles).
    """

    def __init__(self, spatial_dims: int, network: nn.Module, num_knots: int = START_KNOTS) -> None:
        super().__init__()
        if isinstance(network, StartedGenerator):
            raise TypeError("a StartedGenerator cannot wrap another")
        self.spatial_dims = spatial_dims
        self.network = network
        self.start = PiecewiseLinear(num_knots)
        self._output_layer = _output_convolution(self.network, spatial_dims)
        self.reset_residual()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            network = self.__dict__.get("_modules", {}).get("network")
            if network is None:
                raise
            return getattr(network, name)

    @torch.no_grad()
    def reset_residual(self) -> None:
        """Zero the residual generator's output convolution: ``R(x) = 0`` for every input."""
        layer = self.network.get_submodule(self._output_layer)
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()

    def set_start(self, knots: Sequence[float], values: Sequence[float]) -> None:
        """Use the start mapping through ``(knots, values)`` (see :meth:`PiecewiseLinear.set`)."""
        self.start.set(knots, values)

    def forward(self, x: torch.Tensor, start_knots: torch.Tensor | None = None) -> torch.Tensor:
        """``clamp(f(x) + R(x), -1, 1)``; ``start_knots`` replace the start mapping's knots for this call (see
        :meth:`PiecewiseLinear.forward`)."""
        residual = self.network(x)
        return (self.start(x, start_knots).to(residual.dtype) + residual).clamp(-1.0, 1.0)


def _output_convolution(network: nn.Module, spatial_dims: int) -> str:
    """The name of the last convolution ``network`` runs (traced on PyTorch's meta device: no memory, no arithmetic).

    Raises:
        ValueError: when ``network`` runs no convolution.
    """
    meta = copy.deepcopy(network).to("meta")
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda module, args, out, name=name: order.append(name))
             for name, m in meta.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d))]
    side = 16 * int(getattr(network, "size_divisor", 1))
    with torch.no_grad():
        meta(torch.empty((1, int(getattr(network, "in_channels", 1)), *(side,) * spatial_dims), device="meta"))
    for hook in hooks:
        hook.remove()
    if not order:
        raise ValueError(f"{type(network).__name__} runs no convolution to start at zero")
    return order[-1]
