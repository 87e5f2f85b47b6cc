"""The one interface the engine, bundles, inference and MONAI Label know: :class:`TranslationMethod`.

A method owns its networks, optimisers and one training step; the engine owns the loop. Adding a method is one file in
``medtrans/methods/`` defining a subclass with a ``name`` (it registers itself) plus a bundle folder.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from monai.losses import PatchAdversarialLoss
from torch import nn

from medtrans.data.queues import Preprocessing
from medtrans.losses import NGFLoss
from medtrans.model import TranslationModel, build_network
from medtrans.networks import discriminator_logits

__all__ = ["DivergenceError", "TranslationMethod", "build_method", "method_names", "structure_loss"]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; raised before it could touch the weights."""


def structure_loss(spec: Mapping[str, Any], spatial_dims: int) -> nn.Module:
    """A structure loss between source and translation from a config entry, e.g. ``{"type": "ngf", "eps": 0.15}``.

    Raises:
        ValueError: on an unknown type.
    """
    kind = spec.get("type")
    args = {k: v for k, v in spec.items() if k not in ("type", "weight")}
    if kind == "ngf":
        return NGFLoss(spatial_dims, **args)
    raise ValueError(f"unknown structure loss type {kind!r}; available: 'ngf'")


def _linear_decay(constant: int, decay: int):
    def factor(iteration: int) -> float:
        if decay <= 0 or iteration < constant:
            return 1.0
        return max(0.0, 1.0 - (iteration - constant) / decay)

    return factor


class TranslationMethod(nn.Module):
    """Base of every translation method.

    Network options (``generator``, ``discriminator``) are bundle-style configs; their ``_target_`` defaults to the
    method's architecture, so a config may give only arguments (a bundle must, or MONAI's ConfigParser would build the
    network before the method sees the config).

    Subclasses set ``name`` (and ``paired = True`` for supervised methods), build the A→B generator with
    :meth:`build_generator` and their other networks with :meth:`build` in ``__init__``, and implement
    :meth:`optimizer_groups` and :meth:`train_step`. Inside :meth:`train_step` they call :meth:`optimize` for each optimiser, which guards against
    divergence, scales for AMP, averages gradients across ranks, and steps.

    Args:
        spatial_dims: 2 (slices) or 3 (patches).
        in_channels: image channels of both domains.
        lr: Adam learning rate (2e-4 in pix2pix/CycleGAN/CUT).
        betas: Adam betas ((0.5, 0.999) in the reference code).
        weight_decay: Adam weight decay.
        lr_constant_iters: iterations at the initial rate before the linear decay starts.
        lr_decay_iters: iterations of linear decay to 0 (0 = constant rate).
        precision: ``"fp32"``, ``"bf16"`` (autocast), ``"fp16"`` (autocast + gradient scaling, CUDA) or ``"auto"``
            (bf16 on CUDA where supported, else fp16; fp32 on CPU).
        structure_losses: extra terms between each source and its translation added to the generator loss, e.g.
            ``[{"type": "ngf", "weight": 1.0, "eps": 0.15}]`` (CycleGAN + NGF, CUT + NGF...).
        adversarial_criterion: ``"least_squares"`` (LSGAN), ``"bce"`` or ``"hinge"`` (MONAI PatchAdversarialLoss).
    """

    name: ClassVar[str] = ""
    paired: ClassVar[bool] = False
    registry: ClassVar[dict[str, type[TranslationMethod]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            TranslationMethod.registry[cls.name] = cls

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        weight_decay: float = 0.0,
        lr_constant_iters: int = 0,
        lr_decay_iters: int = 0,
        precision: str = "fp32",
        structure_losses: Sequence[Mapping[str, Any]] = (),
        adversarial_criterion: str = "least_squares",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.lr = lr
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.lr_constant_iters = lr_constant_iters
        self.lr_decay_iters = lr_decay_iters
        self.precision = precision
        self.structure_specs = [dict(s) for s in structure_losses]
        self.structure_terms = nn.ModuleList(structure_loss(s, spatial_dims) for s in self.structure_specs)
        self.adversarial_loss = PatchAdversarialLoss(
            criterion=adversarial_criterion, no_activation_leastsq=True  # LSGAN as in the reference code: plain MSE
        )
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.scaler: torch.amp.GradScaler | None = None
        self.iteration = 0
        self.visuals: dict[str, torch.Tensor] = {}

    # -- what subclasses provide -----------------------------------------------------------------------------------
    def build_generator(self, default_target: str, config: Mapping[str, Any] | None, attribute: str = "net_g",
                        **fixed: Any) -> nn.Module:
        """Build the A→B generator that inference uses, store it as ``attribute`` and remember its config.

        Args:
            default_target: ``_target_`` used when ``config`` names none.
            config: user's network config (arguments, optionally a ``_target_``).
            attribute: the attribute to hold the network.
            **fixed: arguments the method imposes (channels).
        """
        self._generator_def = self.full_def({"_target_": default_target, **(config or {}), **fixed})
        network = self.build(self._generator_def)
        setattr(self, attribute, network)
        self._generator_attribute = attribute
        return network

    @property
    def generator(self) -> nn.Module:
        """The A→B network that inference uses."""
        return getattr(self, self._generator_attribute)

    @property
    def generator_def(self) -> dict[str, Any]:
        """The bundle-style config that rebuilds :attr:`generator`."""
        return self._generator_def

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters of each optimiser, by name."""
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One iteration: forward, :meth:`optimize` per optimiser; returns the (detached) losses by name."""
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------------------------------------
    def build(self, network_def: Mapping[str, Any]) -> nn.Module:
        """Build a network from a bundle-style config, filling in ``spatial_dims``."""
        return build_network({"spatial_dims": self.spatial_dims, **network_def})

    def full_def(self, network_def: Mapping[str, Any]) -> dict[str, Any]:
        return {"spatial_dims": self.spatial_dims, **network_def}

    @staticmethod
    def set_requires_grad(networks: Iterable[nn.Module], flag: bool) -> None:
        for net in networks:
            net.requires_grad_(flag)

    def _logits(self, discriminator: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
        logits = discriminator_logits(discriminator(image))
        if not all(torch.isfinite(t.detach()).all() for t in logits):  # BCE would fail on NaN with a cryptic message
            raise DivergenceError(
                f"{type(self).__name__}: a discriminator output is nan/inf at iteration {self.iteration}; training "
                "stopped, the last checkpoint is the last good one (lower the learning rate or use fp32)"
            )
        return logits

    def generator_adversarial(self, discriminator: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss: ``fake`` should be judged real."""
        return self.adversarial_loss(self._logits(discriminator, fake), target_is_real=True, for_discriminator=False)

    def discriminator_adversarial(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """½ (real judged real + fake judged fake), the fake detached."""
        loss_real = self.adversarial_loss(self._logits(discriminator, real), target_is_real=True, for_discriminator=True)
        loss_fake = self.adversarial_loss(self._logits(discriminator, fake.detach()), target_is_real=False, for_discriminator=True)
        return 0.5 * (loss_real + loss_fake)

    def structure_penalty(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the configured extra structure losses between a source and its translation."""
        total = source.new_zeros(())
        for spec, term in zip(self.structure_specs, self.structure_terms):
            total = total + float(spec.get("weight", 1.0)) * term(source.float(), output.float())
        return total

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss`` and step optimiser ``name`` (AMP scaling, cross-rank gradient averaging).

        Raises:
            DivergenceError: when ``loss`` is NaN or infinite (nothing is updated).
        """
        if not torch.isfinite(loss.detach()).all():
            raise DivergenceError(
                f"{type(self).__name__}: the loss for optimiser {name!r} is {loss.item()} at iteration {self.iteration}; "
                "training stopped, the last checkpoint is the last good one (lower the learning rate or use fp32)"
            )
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= world
        self.scaler.step(optimizer)

    # -- what the engine calls -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _autocast_dtype(self) -> torch.dtype | None:
        kind = self.device.type
        if self.precision == "bf16":
            return torch.bfloat16
        if self.precision == "fp16":
            return torch.float16
        if self.precision == "auto" and kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None

    def setup(self, device: torch.device | str = "cpu") -> TranslationMethod:
        """Move to ``device``, make ranks start from rank 0's weights, create optimisers, schedulers and scaler."""
        self.to(device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for tensor in self.state_dict().values():
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                    dist.broadcast(tensor, src=0)
        factor = _linear_decay(self.lr_constant_iters, self.lr_decay_iters)
        for name, params in self.optimizer_groups().items():
            opt = torch.optim.Adam(list(params), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
            self.optimizers[name] = opt
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._autocast_dtype() == torch.float16)
        return self

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One iteration on a batch ``{"a": ..., "b": ...}``; returns the losses as floats."""
        if not self.optimizers:
            raise RuntimeError("call setup(device) before training")
        self.train()
        device = self.device
        tensors = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        dtype = self._autocast_dtype()
        context = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with context:
            losses = self.train_step(tensors)
        self.scaler.update()
        for scheduler in self.schedulers.values():
            scheduler.step()
        self.iteration += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def training_state(self) -> dict[str, Any]:
        """Everything a resumed run needs: networks (and image pools), optimisers, schedulers, scaler, iteration."""
        return {
            "networks": self.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "iteration": self.iteration,
        }

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        self.load_state_dict(state["networks"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        if state.get("scaler") is not None and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])

    def translation_model(
        self, preprocessing: Preprocessing | None = None, target_intensity: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
    ) -> TranslationModel:
        """The A→B generator packaged for :mod:`medtrans.inference` (shares the live weights)."""
        return TranslationModel(
            network=self.generator,
            network_def=self.generator_def,
            spatial_dims=self.spatial_dims,
            preprocessing=preprocessing or Preprocessing(),
            target_intensity=dict(target_intensity or {"type": "source"}),
            inference=dict(inference or {}),
        )


def _discover() -> None:
    import medtrans.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base":
            importlib.import_module(f"medtrans.methods.{info.name}")


def method_names() -> list[str]:
    """Names of every method in ``medtrans/methods/``."""
    _discover()
    return sorted(TranslationMethod.registry)


def build_method(name: str, **kwargs: Any) -> TranslationMethod:
    """Instantiate a method by name (``build_method("cyclegan", spatial_dims=3, ...)``).

    Raises:
        ValueError: on an unknown name.
    """
    _discover()
    if name not in TranslationMethod.registry:
        raise ValueError(f"unknown method {name!r}; available: {sorted(TranslationMethod.registry)}")
    return TranslationMethod.registry[name](**kwargs)
