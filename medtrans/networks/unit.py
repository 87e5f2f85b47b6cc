"""UNIT (Liu et al., NeurIPS 2017): two VAEs whose high-level layers are shared, with a N(0, I) or Gaussian-mixture prior."""

from __future__ import annotations

import math

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medtrans.networks.layers import ConvBlock, ResidualBlock, UpsampleBlock

__all__ = ["DOMAINS", "PRIOR_TYPES", "GaussianMixturePrior", "UNIT", "UNITDecoder", "UNITEncoder"]

DOMAINS = ("a", "b")
PRIOR_TYPES = ("normal", "gaussian_mixture")


class UNITEncoder(nn.Sequential):
    """Domain-specific encoder: 7-wide stem, stride-2 downsamplings, residual blocks.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: stem width, doubled per downsampling.
        num_downsamplings: stride-2 stages.
        num_res_blocks: domain-specific residual blocks after the downsamplings.
        norm: normalisation.
        pad_type: padding.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        num_downsamplings: int,
        num_res_blocks: int,
        norm: str | tuple | None = "instance",
        pad_type: str = "reflect",
    ) -> None:
        super().__init__()
        self.append(ConvBlock(spatial_dims, in_channels, channels, 7, 1, pad_type, norm, "relu"))
        ch = channels
        for _ in range(num_downsamplings):
            self.append(ConvBlock(spatial_dims, ch, ch * 2, 3, 2, pad_type, norm, "relu"))
            ch *= 2
        for _ in range(num_res_blocks):
            self.append(ResidualBlock(spatial_dims, ch, pad_type, norm))
        self.out_channels = ch


class UNITDecoder(nn.Sequential):
    """Domain-specific decoder: residual blocks, upsamplings, 7-wide output convolution and tanh.

    Args:
        spatial_dims: 2 or 3.
        out_channels: image channels.
        latent_channels: channels of the latent code.
        num_upsamplings: stride-2 upsamplings (channels halving).
        num_res_blocks: domain-specific residual blocks before the upsamplings.
        norm: normalisation.
        pad_type: padding.
        upsample_type: ``"transpose"``, ``"transpose_blur"``, ``"resize"``, ``"linear"`` or ``"pixelshuffle"``
            (see :class:`~medtrans.networks.layers.UpsampleBlock`).
    """

    def __init__(
        self,
        spatial_dims: int,
        out_channels: int,
        latent_channels: int,
        num_upsamplings: int,
        num_res_blocks: int,
        norm: str | tuple | None = "instance",
        pad_type: str = "reflect",
        upsample_type: str = "resize",
    ) -> None:
        super().__init__()
        ch = latent_channels
        for _ in range(num_res_blocks):
            self.append(ResidualBlock(spatial_dims, ch, pad_type, norm))
        for _ in range(num_upsamplings):
            self.append(UpsampleBlock(spatial_dims, ch, ch // 2, upsample_type, pad_type, norm))
            ch //= 2
        self.append(ConvBlock(spatial_dims, ch, out_channels, 7, 1, pad_type, None, "tanh"))


class GaussianMixturePrior(nn.Module):
    """A learnable diagonal Gaussian mixture over the latent vector at each location (patch) of the code.

    The patch-based mixture-of-Gaussians variant of UNIT replaces the N(0, I) prior with
    ``p(z) = Σ_k π_k N(z; m_k, diag(s_k²))`` shared by all locations, so the latent channel vector at every location
    of the code — the code of one receptive-field patch — is drawn from one of ``K`` tissue-like modes.

    Args:
        num_components: ``K``.
        latent_channels: dimension of each latent vector.
        init_spread: standard deviation of the initial component means.
    """

    def __init__(self, num_components: int, latent_channels: int, init_spread: float = 1.0) -> None:
        super().__init__()
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.means = nn.Parameter(torch.randn(num_components, latent_channels) * init_spread)
        self.log_vars = nn.Parameter(torch.zeros(num_components, latent_channels))
        self.logits = nn.Parameter(torch.zeros(num_components))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log density of each location's latent vector.

        Args:
            z: ``(B, C, *spatial)``.

        Returns:
            ``(B, *spatial)`` log-densities.
        """
        zc = z.movedim(1, -1).unsqueeze(-2)  # (..., 1, C)
        var = self.log_vars.exp()
        log_n = -0.5 * (((zc - self.means) ** 2) / var + self.log_vars + math.log(2 * math.pi)).sum(-1)  # (..., K)
        return torch.logsumexp(log_n + torch.log_softmax(self.logits, 0), dim=-1)

    def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Draw a code of ``shape = (B, C, *spatial)``, one mixture component per location."""
        b, c, *spatial = shape
        n = b * math.prod(spatial)
        k = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True)
        z = self.means[k] + torch.randn(n, c, device=self.means.device) * (0.5 * self.log_vars[k]).exp()
        return z.reshape(b, *spatial, c).movedim(-1, 1)


class UNIT(nn.Module):
    """The two UNIT VAEs with shared high-level encoder and decoder layers and a reparameterised latent.

    ``E_a, E_b`` (domain-specific) → ``E_shared`` → latent mean ``μ`` (and log-variance) → ``z = μ + σ·ε`` →
    ``G_shared`` → ``G_a, G_b`` (domain-specific). With ``prior_type="normal"`` the posterior has unit variance and the
    prior is N(0, I), as in UNIT; with ``"gaussian_mixture"`` the posterior variance is learned by a 1×1 convolution and
    the prior is a :class:`GaussianMixturePrior` (the patch-based mixture-of-Gaussians UNIT variant).

    ``forward`` translates A → B with the posterior mean, which is what inference uses.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of both domains' images.
        channels: stem width.
        num_downsamplings: stride-2 stages (latent is ``2**num_downsamplings`` times smaller per side).
        num_res_blocks: residual blocks per encoder and per decoder, of which ``num_shared_blocks`` are shared.
        num_shared_blocks: shared high-level residual blocks (the shared-latent constraint).
        prior_type: ``"normal"`` or ``"gaussian_mixture"``.
        num_components: mixture components for ``"gaussian_mixture"``.
        norm: normalisation.
        upsample_type: decoder upsampling, ``"resize"`` (default, as the reference code), ``"transpose"``, ``"linear"``,
            ``"transpose_blur"`` or ``"pixelshuffle"``.

    Raises:
        ValueError: on an unknown ``prior_type`` or more shared than total residual blocks.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        channels: int = 64,
        num_downsamplings: int = 2,
        num_res_blocks: int = 4,
        num_shared_blocks: int = 1,
        prior_type: str = "normal",
        num_components: int = 8,
        norm: str | tuple | None = "instance",
        upsample_type: str = "resize",
    ) -> None:
        super().__init__()
        if prior_type not in PRIOR_TYPES:
            raise ValueError(f"prior_type must be one of {PRIOR_TYPES}, got {prior_type!r}")
        if not 0 <= num_shared_blocks <= num_res_blocks:
            raise ValueError(f"num_shared_blocks must lie in [0, num_res_blocks={num_res_blocks}]")
        self.spatial_dims = spatial_dims
        self.in_channels = self.out_channels = in_channels
        self.num_downsamplings = num_downsamplings
        self.prior_type = prior_type
        private = num_res_blocks - num_shared_blocks
        self.encoders = nn.ModuleDict(
            {d: UNITEncoder(spatial_dims, in_channels, channels, num_downsamplings, private, norm) for d in DOMAINS}
        )
        self.latent_channels = latent = channels * 2**num_downsamplings
        self.shared_encoder = nn.Sequential(*(ResidualBlock(spatial_dims, latent, norm=norm) for _ in range(num_shared_blocks)))
        self.shared_decoder = nn.Sequential(*(ResidualBlock(spatial_dims, latent, norm=norm) for _ in range(num_shared_blocks)))
        self.decoders = nn.ModuleDict(
            {
                d: UNITDecoder(spatial_dims, in_channels, latent, num_downsamplings, private, norm, "reflect", upsample_type)
                for d in DOMAINS
            }
        )
        self.log_var_head: nn.Module | None = None
        self.prior: GaussianMixturePrior | None = None
        if prior_type == "gaussian_mixture":
            self.log_var_head = Conv[Conv.CONV, spatial_dims](latent, latent, kernel_size=1)
            self.prior = GaussianMixturePrior(num_components, latent)

    @property
    def size_divisor(self) -> int:
        """Every input side must be a multiple of this."""
        return 2**self.num_downsamplings

    def encode(self, x: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior parameters ``(μ, log σ²)``; the log-variance is ``None`` for the unit-variance UNIT posterior."""
        h = self.shared_encoder(self.encoders[domain](x))
        return h, (self.log_var_head(h) if self.log_var_head is not None else None)

    @staticmethod
    def reparameterize(mu: torch.Tensor, log_var: torch.Tensor | None) -> torch.Tensor:
        """``z = μ + σ·ε`` with ``ε ~ N(0, I)`` (σ = 1 when ``log_var`` is ``None``)."""
        noise = torch.randn_like(mu)
        return mu + noise if log_var is None else mu + noise * (0.5 * log_var).exp()

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        """Image of ``domain`` from latent code ``z``."""
        return self.decoders[domain](self.shared_decoder(z))

    def translate(self, x: torch.Tensor, source: str = "a", target: str = "b") -> torch.Tensor:
        """Deterministic translation through the posterior mean."""
        mu, _ = self.encode(x, source)
        return self.decode(mu, target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.size_divisor for s in x.shape[2:]):
            raise ValueError(f"UNIT needs spatial sides divisible by {self.size_divisor}, got {tuple(x.shape[2:])}")
        return self.translate(x, "a", "b")
