"""The one interface the engine, bundles, inference and MONAI Label know: :class:`TranslationMethod`.

A method owns its networks, optimisers and one training step; the engine owns the loop. Adding a method is one file in
``medtrans/methods/`` defining a subclass whose ``name`` is the file's name (:mod:`medtrans.registry` finds it), plus a
bundle folder. What the methods share besides the contract lives beside it: the training machinery in
:mod:`medtrans.methods._training`, the GAN updates in :mod:`medtrans.methods._adversarial`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medtrans.data.start import START_TYPES, StartMapping
from medtrans.losses import AdversarialLoss
from medtrans.losses.discriminator import AUGMENT_POLICIES
from medtrans.losses.structure import structure_loss
from medtrans.methods._adversarial import AdversarialMixin
from medtrans.methods._training import (
    COMPILE_TYPES,
    CUDA_GRAPH_COMPILE_TYPES,
    TrainingMixin,
)
from medtrans.networks.init import INIT_TYPES, init_weights
from medtrans.networks.registry import build_network
from medtrans.precision import PRECISION_TYPES

__all__ = ["NEGATIVE_TYPES", "TranslationMethod", "check_option_values"]

NEGATIVE_TYPES = ("source", "histogram_matched")
POSITIVE_OPTIONS = ("lr", "lr_discriminator")
"""Options that must be finite and > 0 (learning rates)."""
NON_NEGATIVE_OPTIONS = ("weight_decay", "r1_gamma", "instance_noise")
"""Options that must be finite and >= 0, besides every ``lambda_*`` loss weight."""


def check_option_values(options: Mapping[str, Any]) -> None:
    """Check the numeric options whose sign matters: learning rates (:data:`POSITIVE_OPTIONS`) must be finite and
    > 0; loss weights (every ``lambda_*``) and :data:`NON_NEGATIVE_OPTIONS` finite and >= 0. Other names, ``None``
    and non-numbers are left alone (their own checks and types apply).

    Raises:
        ValueError: naming the option and its value.
    """
    for name, value in options.items():
        if not (name in POSITIVE_OPTIONS or name in NON_NEGATIVE_OPTIONS or name.startswith("lambda_")):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        if name in POSITIVE_OPTIONS and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _checking_options(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` (a method's ``__init__``), preceded by :func:`check_option_values` on the arguments it is given."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            given = signature.bind(self, *args, **kwargs).arguments
        except TypeError:
            given = {}  # the call itself is wrong: let ``init`` raise its own TypeError
        check_option_values({k: v for k, v in given.items() if k != "self"})
        init(self, *args, **kwargs)

    checked.checks_options = True  # type: ignore[attr-defined]
    return checked


class TranslationMethod(TrainingMixin, AdversarialMixin, nn.Module):
    """Base of every translation method.

    Network options (``generator``, ``discriminator``) are bundle-style configs; their ``_target_`` defaults to the
    method's architecture, so a config may give only arguments (a bundle must, or MONAI's ConfigParser would build the
    network before the method sees the config).

    Subclasses set ``name`` (and ``paired = True`` for supervised methods), build the A→B generator with
    :meth:`build_generator` and their discriminators with :meth:`build_discriminator` in ``__init__``, and implement
    :meth:`optimizer_groups` and :meth:`train_step`. Inside :meth:`train_step` they call :meth:`optimize` for each
    optimiser, which guards against divergence, scales for AMP, averages gradients across ranks, and steps; one-sided
    methods (one generator, one discriminator) use :meth:`gan_step` for the whole discriminator-then-generator update.

    Args:
        spatial_dims: 2 (slices) or 3 (patches).
        in_channels: image channels of both domains.
        lr: Adam learning rate of the generator(s) (2e-4 in pix2pix/CycleGAN/CUT).
        lr_discriminator: Adam learning rate of the discriminator(s) (default: ``lr``; a larger one gives the
            two-time-scale update rule of Heusel et al. 2017).
        betas: Adam betas ((0.5, 0.999) in the reference code).
        weight_decay: Adam weight decay.
        lr_constant_iters: iterations at the initial rate before the linear decay starts (default: half the run).
        lr_decay_iters: iterations of linear decay to 0 (default: the other half of the run; 0 = constant rate).
            The run's length is what :meth:`setup` is given; without one, the rate stays constant.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :mod:`medtrans.precision`).
        structure_losses: extra terms between each source and its translation added to the generator loss, e.g.
            ``[{"type": "ngf", "weight": 1.0, "eps": 0.15}]`` (CycleGAN + NGF, CUT + NGF...) or ``{"type": "lncc",
            "kernel_size": 7}`` (:class:`~medtrans.losses.LNCCLoss`) or ``{"type": "mi"}``
            (:class:`~medtrans.losses.MutualInformationLoss`) or ``{"type": "polarity", "polarity_type": "inverted",
            "cooldown": [0, 200]}`` (:class:`~medtrans.losses.PolarityLoss`, a prior for the first iterations);
            ``"warmup": [start, end]`` ramps a term's weight linearly from 0 at iteration ``start`` to ``weight`` at
            ``end``, ``"cooldown": [start, end]`` from ``weight`` down to 0. Logged, weighted, as ``structure``.
        adversarial_criterion: ``"least_squares"`` (LSGAN), ``"bce"`` or ``"hinge"``
            (:class:`~medtrans.losses.AdversarialLoss`).
        lambda_negative: weight of negative examples for each domain's discriminator (unpaired methods): a real
            image of the other domain is judged fake beside the translation (negative data augmentation, Sinha et
            al., ICLR 2021). The discriminator then learns the source's appearance as not the target's, and the
            adversarial term penalises a translation that keeps the source contrast; 0 (default) = off.
        negative_type: what the negative example is: ``"source"`` (default), the other domain's image as it is;
            ``"histogram_matched"``, that image with its foreground intensities mapped onto the real target image's
            (:func:`~medtrans.data.intensity.histogram_match_batch`), so only the contrast — the order of the tissues'
            intensities — tells it from the target domain. Needs ``lambda_negative`` > 0.
        init_type: weight initialisation of every network (see :func:`init_weights`; ``"normal"`` = N(0, 0.02) as
            the reference code; the U-Net methods, NEC and pix2pix, default to ``"default"``).
        init_gain: its gain.
        compile_type: ``"none"`` (default), or a ``torch.compile`` mode for every network (``"default"``,
            ``"max-autotune-no-cudagraphs"``). The networks are compiled in place, so checkpoints are unchanged; the
            first steps pay the compilation. The modes that capture CUDA graphs (``"reduce-overhead"``,
            ``"max-autotune"``) are refused: see :data:`~medtrans.methods._training.CUDA_GRAPH_COMPILE_TYPES`.
        start: where every generator starts (:mod:`medtrans.data.start`): ``"none"`` (default), from its initial
            weights alone; ``"auto"``, from the global intensity mapping from domain A to B, histogram-matched with or
            without inversion, chosen from the training volumes before the first step; ``"same"`` or ``"inverted"``
            forces that mapping. The generator then learns the residual on top
            (:class:`~medtrans.networks.start.StartedGenerator`), so an untrained translator is that mapping.
        lambda_start: weight of an L1 pull of the translation towards the start mapping of its source (the one-sided
            methods' generator loss; 0 = off): the generator leaves the start only where the other terms gain more.
        ema_decay: 0 (default) translates with the generator as trained; in (0, 1), with an exponential moving
            average of its weights (Yazıcı et al., ICLR 2019), updated after every step with the decay
            ``min(ema_decay, (1 + t) / (10 + t))`` at step ``t`` (short runs are not dominated by the initial
            weights). The average is what the saved translator, validation and inference use; training is unchanged.
        d_augment: differentiable augmentations of every image a discriminator sees (``["translation", "cutout"]``;
            :func:`~medtrans.losses.discriminator.diff_augment`); default none.
        r1_gamma: weight γ of the R1 penalty on the discriminators' gradients at real images (0 = off).
        instance_noise: standard deviation of Gaussian noise added to every discriminator input, annealed to 0 over
            the run (0 = off). Three remedies for a discriminator that memorises a small training set; spectral
            normalisation is ``discriminator={"spectral_norm": true}``.
    """

    name: ClassVar[str] = ""
    paired: ClassVar[bool] = False
    reverse_generator: ClassVar[str | None] = None
    """A two-sided method's B→A generator attribute: it starts from the inverse of the A→B start mapping."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = vars(cls).get("__init__")
        if init is not None and not getattr(init, "checks_options", False):
            cls.__init__ = _checking_options(init)  # every lambda_* / lr of a method checked before anything is built

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        lr: float = 2e-4,
        lr_discriminator: float | None = None,
        betas: Sequence[float] = (0.5, 0.999),
        weight_decay: float = 0.0,
        lr_constant_iters: int | None = None,
        lr_decay_iters: int | None = None,
        precision: str = "auto",
        structure_losses: Sequence[Mapping[str, Any]] = (),
        adversarial_criterion: str = "least_squares",
        lambda_negative: float = 0.0,
        negative_type: str = "source",
        init_type: str = "normal",
        init_gain: float = 0.02,
        compile_type: str = "none",
        ema_decay: float = 0.0,
        start: str = "auto",
        lambda_start: float = 10.0,
        d_augment: Sequence[str] = (),
        r1_gamma: float = 0.0,
        instance_noise: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if precision not in PRECISION_TYPES:
            raise ValueError(f"precision must be one of {PRECISION_TYPES}, got {precision!r}")
        if init_type not in INIT_TYPES:
            raise ValueError(f"init_type must be one of {INIT_TYPES}, got {init_type!r}")
        if compile_type in CUDA_GRAPH_COMPILE_TYPES:
            raise ValueError(f"compile_type {compile_type!r} captures CUDA graphs, which a GAN step's repeated network "
                             "calls overwrite; use 'default' or 'max-autotune-no-cudagraphs'")
        if compile_type not in COMPILE_TYPES:
            raise ValueError(f"compile_type must be one of {COMPILE_TYPES}, got {compile_type!r}")
        check_option_values({"lr": lr, "lr_discriminator": lr_discriminator, "weight_decay": weight_decay,
                             "lambda_negative": lambda_negative, "lambda_start": lambda_start, "r1_gamma": r1_gamma,
                             "instance_noise": instance_noise})
        if isinstance(d_augment, str) or any(p not in AUGMENT_POLICIES for p in d_augment):
            raise ValueError(f"d_augment must be a list of {AUGMENT_POLICIES}, got {d_augment!r}")
        if start not in START_TYPES:
            raise ValueError(f"start must be one of {START_TYPES}, got {start!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        if lambda_negative < 0:
            raise ValueError(f"lambda_negative must be >= 0, got {lambda_negative}")
        if lambda_negative > 0 and self.paired:
            raise ValueError(f"lambda_negative: {type(self).__name__} is paired; negative examples are for unpaired methods")
        if negative_type not in NEGATIVE_TYPES:
            raise ValueError(f"negative_type must be one of {NEGATIVE_TYPES}, got {negative_type!r}")
        if negative_type != "source" and lambda_negative == 0:
            raise ValueError(f"negative_type={negative_type!r} needs lambda_negative > 0")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.lr = lr
        self.lr_discriminator = lr if lr_discriminator is None else lr_discriminator
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.lr_constant_iters = lr_constant_iters
        self.lr_decay_iters = lr_decay_iters
        self.precision = precision
        self.amp = "fp32"  # the resolved precision, set by setup()
        self.init_type = init_type
        self.init_gain = init_gain
        self.compile_type = compile_type
        self.ema_decay = ema_decay
        self.generator_ema: nn.Module | None = None  # built by setup() when ema_decay > 0
        self.start = start
        self.start_mapping: StartMapping | None = None  # set by set_start()
        self.lambda_start = lambda_start
        self.structure_specs = [dict(s) for s in structure_losses]
        self.structure_terms = nn.ModuleList(structure_loss(s, spatial_dims) for s in self.structure_specs)
        self.adversarial_loss = AdversarialLoss(adversarial_criterion)
        self.lambda_negative = lambda_negative
        self.negative_type = negative_type
        self.d_augment = tuple(d_augment)
        self.r1_gamma = r1_gamma
        self.instance_noise = instance_noise
        self.total_iterations: int | None = None  # the run's length, set by setup()
        self.discriminator_names: list[str] = []
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.scaler: torch.amp.GradScaler | None = None
        self.iteration = 0
        self.visuals: dict[str, torch.Tensor] = {}

    # -- what subclasses provide -----------------------------------------------------------------------------------
    @staticmethod
    def network_def(default_target: str, default_args: Mapping[str, Any], config: Mapping[str, Any] | None,
                    **fixed: Any) -> dict[str, Any]:
        """A network config: the user's ``config`` merged over the method's defaults for its default architecture
        (:mod:`medtrans.defaults`); a config naming another ``_target_`` starts from that network's own defaults.

        Args:
            default_target: ``_target_`` used when ``config`` names none.
            default_args: the method's default arguments of that network.
            config: user's network config (arguments, optionally a ``_target_``).
            **fixed: arguments the method imposes (channels).
        """
        config = dict(config or {})
        target = config.pop("_target_", default_target)
        return {"_target_": target, **(default_args if target == default_target else {}), **config, **fixed}

    def build_generator(self, network_def: Mapping[str, Any], attribute: str = "net_g") -> nn.Module:
        """Build (and initialise) the A→B generator that inference uses, store it as ``attribute`` and remember its
        config (see :meth:`network_def`)."""
        self._generator_def = self.full_def(network_def)
        if self.start != "none":
            inner = {k: v for k, v in self._generator_def.items() if k not in ("_target_", "spatial_dims")}
            self._generator_def = {"_target_": "medtrans.networks.StartedGenerator", "spatial_dims": self.spatial_dims,
                                   "generator": {"name": self._generator_def["_target_"], **inner}}
        network = self.build(self._generator_def)
        setattr(self, attribute, network)
        self._generator_attribute = attribute
        return network

    def build_discriminator(self, attribute: str, network_def: Mapping[str, Any]) -> nn.Module:
        """Build (and initialise) a discriminator, store it as ``attribute``; :meth:`check_patch` runs it."""
        network = self.build(network_def)
        setattr(self, attribute, network)
        self.discriminator_names.append(attribute)
        return network

    def set_start(self, mapping: StartMapping) -> None:
        """Start the A→B generator (and a two-sided method's B→A one, from the inverse) at ``mapping``; nothing to
        set when the method was built with ``start="none"``.

        Raises:
            ValueError: when ``mapping``'s type differs from a forced ``start``.
        """
        if self.start not in ("auto", mapping.type):
            raise ValueError(f"start={self.start!r} but the mapping given is {mapping.type!r}")
        self.start_mapping = mapping
        if self.start == "none":
            return
        networks = [(self.generator, mapping)]
        if self.reverse_generator:
            networks.append((getattr(self, self.reverse_generator), mapping.inverse()))
        for network, m in networks:
            network.set_start(m.knots, m.values)

    @property
    def generator(self) -> nn.Module:
        """The A→B network that inference uses."""
        return getattr(self, self._generator_attribute)

    @property
    def target_discriminator(self) -> nn.Module:
        """The discriminator that judges domain B: a one-sided method's only one, a two-sided method's ``d_b``."""
        names = self.discriminator_names
        return getattr(self, names[0] if len(names) == 1 else "d_b")

    @property
    def translator(self) -> nn.Module:
        """The A→B network a trained translator is made of: the generator's moving average when ``ema_decay`` > 0
        (once :meth:`setup` has built it), else the generator itself."""
        return self.generator if self.generator_ema is None else self.generator_ema

    @property
    def generator_def(self) -> dict[str, Any]:
        """The bundle-style config that rebuilds :attr:`generator`."""
        return self._generator_def

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters of each optimiser, by name (``"discriminator"`` gets ``lr_discriminator``); by default the
        generator's, and every discriminator's together."""
        return {"generator": self.generator.parameters(),
                "discriminator": [p for n in self.discriminator_names for p in getattr(self, n).parameters()]}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One iteration: forward, :meth:`optimize` per optimiser; returns every loss term by name."""
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------------------------------------
    def build(self, network_def: Mapping[str, Any]) -> nn.Module:
        """Build a network from a bundle-style config, filling in ``spatial_dims``, and initialise it."""
        return init_weights(build_network({"spatial_dims": self.spatial_dims, **network_def}), self.init_type, self.init_gain)

    def full_def(self, network_def: Mapping[str, Any]) -> dict[str, Any]:
        return {"spatial_dims": self.spatial_dims, **network_def}

    # -- what the engine calls -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_patch(self, patch_size: Sequence[int]) -> None:
        """Run the generator and every discriminator on a batch of ``patch_size`` on PyTorch's meta device (shapes
        only: no memory, no arithmetic), so a patch that cannot work fails before any data is read.

        Raises:
            ValueError: naming the network (``generator`` or ``discriminator``) and what it could not take.
        """
        spatial = tuple(int(s) for s in patch_size if s != 1) if self.spatial_dims == 2 else tuple(int(s) for s in patch_size)
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"a {self.spatial_dims}D method cannot train on patches {tuple(patch_size)}")
        networks = [("generator", self.generator)] + [("discriminator", getattr(self, n)) for n in self.discriminator_names]
        for role, network in networks:
            first = next(m for m in network.modules() if isinstance(getattr(m, "in_channels", None), int))
            meta = copy.deepcopy(network).to("meta").train()
            try:
                with torch.no_grad():
                    meta(torch.empty((2, first.in_channels, *spatial), device="meta"))
            except (ValueError, RuntimeError) as err:
                reason = str(err).splitlines()[0]
                raise ValueError(f"the {role} cannot take {'x'.join(map(str, spatial))} patches: {reason}") from None
