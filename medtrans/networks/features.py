"""Feature extractors for perceptual, style and self-similarity losses: a module returning a list of feature maps.

Everything here works offline. A method can read features from a network it trains itself (its discriminator, as
Cycle-MedGAN reads a discriminator's layers, or any sub-module by name) or, when their weights are already in the
torch hub cache, from MONAI's pretrained perceptual networks — which otherwise fail at once with a clear error rather
than trying the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medtrans.networks.discriminators import discriminator_features
from medtrans.networks.layers import BlurPool

__all__ = [
    "ConvFeatures",
    "FeatureExtractor",
    "DiscriminatorFeatures",
    "HookFeatures",
    "PretrainedFeatures",
    "PretrainedWeightsUnavailableError",
    "PRETRAINED_NETWORKS",
]


class FeatureExtractor(nn.Module):
    """Interface: ``forward(x)`` returns a list of feature maps ``(B, C_l, *spatial_l)``."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


def _select(features: list[torch.Tensor], layers: Sequence[int] | None) -> list[torch.Tensor]:
    return features if layers is None else [features[i] for i in layers]


class DiscriminatorFeatures(FeatureExtractor):
    """Intermediate features of a (multi-resolution) PatchGAN discriminator, logits excluded.

    The discriminator is held by reference (not registered as a sub-module) so a method's checkpoint and optimisers see
    it once, under the discriminator's own name.

    Args:
        discriminator: a :func:`~medtrans.networks.discriminators.patchgan` or
            :class:`~medtrans.networks.discriminators.MultiResolutionDiscriminator`.
        layers: indices into the feature list (all when ``None``).
    """

    def __init__(self, discriminator: nn.Module, layers: Sequence[int] | None = None) -> None:
        super().__init__()
        self._discriminator = [discriminator]
        self.layers = None if layers is None else tuple(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _select(discriminator_features(self._discriminator[0](x)), self.layers)


class ConvFeatures(FeatureExtractor):
    """A small N-D convolutional feature pyramid that medtrans builds itself (no download, any ``spatial_dims``).

    The input is first low-passed by a fixed ``[1, 2, 1]`` blur (:class:`~medtrans.networks.layers.BlurPool` at stride
    1), then each stage is conv 3 → LeakyReLU → stride-2 conv 3 → LeakyReLU; ``forward`` returns every stage's output.
    Its weights are drawn from their own seeded generator, so the same ``seed`` gives the same network whatever the
    global RNG state. Frozen, it is a fixed structure descriptor for self-similarity losses (self-similarity of random
    convolutional features, in the spirit of MIND-like descriptors); trainable, it is LSeSim's learned extractor.

    Why the blur: random filters respond to the 2-voxel period as strongly as to anatomy, and the LeakyReLUs and strided
    convolutions fold a grid's modulation back into coarse features. Without it, a checkerboard whose amplitude
    follows the source matches the source's self-similarity better than the real target contrast does, and FSeSim's
    generator learned exactly that (docs/notes.md, "What the longer runs showed"). The blur has no gain at that period,
    so no grid reaches it.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: width of each stage.
        seed: initialisation seed.
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64), seed: int = 0) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.low_pass = BlurPool(spatial_dims, in_channels, stride=1)
        stages, prev = [], in_channels
        for ch in channels:
            stages.append(nn.Sequential(conv(prev, ch, 3, padding=1), nn.LeakyReLU(0.2), conv(ch, ch, 3, stride=2, padding=1), nn.LeakyReLU(0.2)))
            prev = ch
        self.stages = nn.ModuleList(stages)
        generator = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, a=0.2, generator=generator)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = self.low_pass(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class HookFeatures(FeatureExtractor):
    """Outputs of named sub-modules of any network, collected with forward hooks during one forward pass.

    Args:
        network: the network to read (registered as a sub-module).
        layer_names: dotted names as in ``network.named_modules()``.

    Raises:
        KeyError: if a name is not a sub-module of ``network``.
    """

    def __init__(self, network: nn.Module, layer_names: Sequence[str]) -> None:
        super().__init__()
        self.network = network
        self.layer_names = tuple(layer_names)
        modules = dict(network.named_modules())
        missing = [n for n in self.layer_names if n not in modules]
        if missing:
            raise KeyError(f"no sub-module named {missing} in {type(network).__name__}")
        self._store: dict[str, torch.Tensor] = {}
        for name in self.layer_names:
            modules[name].register_forward_hook(self._hook(name))

    def _hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            self._store[name] = output

        return hook

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._store.clear()
        self.network(x)
        features = [self._store[n] for n in self.layer_names]
        self._store.clear()
        return features


# MONAI's pretrained perceptual networks that expose convolutional stages: network -> (spatial dims, stage names)
PRETRAINED_NETWORKS: dict[str, tuple[int, tuple[str, ...]]] = {
    "medicalnet_resnet10_23datasets": (3, ("layer1", "layer2", "layer3", "layer4")),
    "medicalnet_resnet50_23datasets": (3, ("layer1", "layer2", "layer3", "layer4")),
    "radimagenet_resnet50": (2, ("layer1", "layer2", "layer3", "layer4")),
}
_HUB_REPO = "Project-MONAI/perceptual-models"


class PretrainedWeightsUnavailableError(RuntimeError):
    """A pretrained network's code or weights are not in the local torch hub cache and medtrans will not download."""


class PretrainedFeatures(FeatureExtractor):
    """Stage outputs of a MONAI pretrained perceptual network (MedicalNet 3D, RadImageNet 2D), frozen.

    Only the local torch hub cache is read (``torch.hub.get_dir()`` or ``hub_dir``); nothing is downloaded. Populate the
    cache once on a connected machine (e.g. by building ``monai.losses.PerceptualLoss`` with the same network type).

    Args:
        network_type: a key of :data:`PRETRAINED_NETWORKS`.
        spatial_dims: must match the network (3 for MedicalNet, 2 for RadImageNet).
        hub_dir: torch hub directory to read; defaults to ``torch.hub.get_dir()``.

    Raises:
        ValueError: on an unknown network or a spatial_dims mismatch.
        PretrainedWeightsUnavailableError: when the hub cache lacks the network's code or weights.
    """

    def __init__(self, network_type: str, spatial_dims: int, hub_dir: str | None = None) -> None:
        super().__init__()
        if network_type not in PRETRAINED_NETWORKS:
            raise ValueError(f"network_type must be one of {sorted(PRETRAINED_NETWORKS)}, got {network_type!r}")
        dims, stages = PRETRAINED_NETWORKS[network_type]
        if dims != spatial_dims:
            raise ValueError(f"{network_type} is a {dims}D network, spatial_dims={spatial_dims} was asked")
        hub_dir = hub_dir or torch.hub.get_dir()
        repo_dir = os.path.join(hub_dir, _HUB_REPO.replace("/", "_") + "_main")
        advice = (
            f"run once on a connected machine: python -c \"import monai; monai.losses.PerceptualLoss("
            f"spatial_dims={spatial_dims}, network_type='{network_type}')\", or use a feature extractor medtrans "
            f"trains itself (feature_type='discriminator')"
        )
        if not os.path.isdir(repo_dir):
            raise PretrainedWeightsUnavailableError(
                f"pretrained network {network_type!r} is not in the torch hub cache ({repo_dir} is missing) and "
                f"medtrans does not download at run time; {advice}"
            )
        previous = torch.hub.get_dir()
        try:
            torch.hub.set_dir(hub_dir)
            model = torch.hub.load(repo_dir, model=network_type, source="local", verbose=False)
        except (OSError, RuntimeError, ImportError) as err:  # URLError is an OSError
            raise PretrainedWeightsUnavailableError(
                f"could not load cached {network_type!r} from {repo_dir} without downloading ({err}); {advice}"
            ) from err
        finally:
            torch.hub.set_dir(previous)
        model.eval().requires_grad_(False)
        self.extractor = HookFeatures(model, stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.extractor(x)
