"""What training every method shares: optimisers and their learning-rate schedules, precision (AMP), gradients
averaged across ranks, the generator's moving average, ``torch.compile``, and the state a resumed run needs.

:class:`TrainingMixin` is a base of :class:`~medtrans.methods.base.TranslationMethod`; it reads the options that
class's ``__init__`` stores (``lr``, ``precision``, ``ema_decay``, ``compile_type``...) and the networks the method
built, and calls the method's :meth:`train_step`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from medtrans.distributed import average_gradients, broadcast_from_main
from medtrans.errors import DivergenceError
from medtrans.losses.structure import linear_decay
from medtrans.precision import autocast, resolve_precision

if TYPE_CHECKING:
    from medtrans.methods.base import TranslationMethod

__all__ = ["COMPILE_TYPES", "CUDA_GRAPH_COMPILE_TYPES", "TrainingMixin"]

COMPILE_TYPES = ("none", "default", "max-autotune-no-cudagraphs")
CUDA_GRAPH_COMPILE_TYPES = ("reduce-overhead", "max-autotune")
"""``torch.compile`` modes that capture CUDA graphs, refused: a GAN step runs its networks several times between
backward passes, and a graph's replay overwrites outputs the step still uses (measured on an H200: ``accessing tensor
output of CUDAGraphs that has been overwritten by a subsequent run``, NEC 3D 64³)."""


class TrainingMixin:
    """Optimisation, precision, moving average, compilation and checkpoint state of a
    :class:`~medtrans.methods.base.TranslationMethod` (the engine's side of the contract)."""

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
        average_gradients(p for group in optimizer.param_groups for p in group["params"])
        self.scaler.step(optimizer)

    def setup(self, device: torch.device | str = "cpu", batch_voxels: int | None = None,
              iterations: int | None = None) -> TranslationMethod:
        """Move to ``device``, make ranks start from rank 0's weights, resolve the precision for batches of
        ``batch_voxels`` voxels, and create optimisers, schedulers (for a run of ``iterations``) and scaler."""
        if self.ema_decay and self.generator_ema is None:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.to(device)
        broadcast_from_main(t for t in self.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point())
        self.amp = resolve_precision(self.precision, self.device, batch_voxels)
        self.total_iterations = iterations
        half = (iterations or 0) // 2
        constant = half if self.lr_constant_iters is None else self.lr_constant_iters
        decay = (iterations or 0) - half if self.lr_decay_iters is None else self.lr_decay_iters
        factor = linear_decay(constant, decay)
        for name, params in self.optimizer_groups().items():
            lr = self.lr_discriminator if name == "discriminator" else self.lr
            opt = torch.optim.Adam(list(params), lr=lr, betas=self.betas, weight_decay=self.weight_decay)
            self.optimizers[name] = opt
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16" and self.device.type == "cuda")
        if self.compile_type != "none":
            mode = None if self.compile_type == "default" else self.compile_type
            for network in self.children():
                if network is not self.generator_ema and any(True for _ in network.parameters()):
                    network.compile(mode=mode)
        return self

    def training_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One iteration on a batch ``{"a": ..., "b": ...}``; returns every loss term as a float."""
        if not self.optimizers:
            raise RuntimeError("call setup(device) before training")
        self.train()
        device = self.device
        tensors = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with autocast(self.amp, device):
            losses = self.train_step(tensors)
        self.scaler.update()
        for scheduler in self.schedulers.values():
            scheduler.step()
        if self.generator_ema is not None:
            self._update_ema()
        self.iteration += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Move the average toward the generator's weights (and copy its buffers, e.g. batch-norm statistics)."""
        decay = min(self.ema_decay, (1 + self.iteration) / (10 + self.iteration))
        for average, current in zip(self.generator_ema.parameters(), self.generator.parameters()):
            average.lerp_(current.detach(), 1.0 - decay)
        for average, current in zip(self.generator_ema.buffers(), self.generator.buffers()):
            average.copy_(current)

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
