"""The one interface the engine, bundles, inference and MONAI Label know: :class:`TranslationMethod`.

A method owns its networks, optimisers and one training step; the engine owns the loop. Adding a method is one file in
``medtrans/methods/`` defining a subclass with a ``name`` (it registers itself) plus a bundle folder.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medtrans.data.intensity import histogram_match_batch
from medtrans.data.start import START_TYPES, StartMapping
from medtrans.distributed import average_gradients, broadcast_from_main
from medtrans.errors import MedtransError
from medtrans.losses import AdversarialLoss, LNCCLoss, MutualInformationLoss, NGFLoss, PolarityLoss
from medtrans.networks import discriminator_logits
from medtrans.networks.layers import reinit_subpixel
from medtrans.networks.registry import build_network
from medtrans.networks.start import StartedGenerator
from medtrans.precision import PRECISION_TYPES, autocast, resolve_precision

__all__ = ["DivergenceError", "TranslationMethod", "build_method", "check_option_values", "init_weights", "method_class",
           "method_names", "structure_loss"]

INIT_TYPES = ("normal", "xavier", "kaiming", "default")
COMPILE_TYPES = ("none", "default", "reduce-overhead", "max-autotune")
NEGATIVE_TYPES = ("source", "histogram_matched")
SCHEDULE_KEYS = ("warmup", "cooldown")
POSITIVE_OPTIONS = ("lr", "lr_discriminator")
"""Options that must be finite and > 0 (learning rates)."""
NON_NEGATIVE_OPTIONS = ("weight_decay",)
"""Options that must be finite and >= 0, besides every ``lambda_*`` loss weight."""


class DivergenceError(MedtransError, RuntimeError):
    """A loss became NaN or infinite; raised before it could touch the weights.

    A :class:`~medtrans.errors.MedtransError`, so the command line reports it in one line (it stays a
    ``RuntimeError`` for code that catches those)."""


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


def structure_loss(spec: Mapping[str, Any], spatial_dims: int) -> nn.Module:
    """A structure loss between source and translation from a config entry, e.g. ``{"type": "ngf", "eps": 0.15}``.

    Raises:
        ValueError: on an unknown type, or a ``warmup`` or ``cooldown`` that is not ``[start, end]`` with
            ``0 <= start < end``.
    """
    for key in SCHEDULE_KEYS:
        window = spec.get(key)
        if window is not None and not (isinstance(window, Sequence) and len(window) == 2
                                       and all(isinstance(i, int) for i in window) and 0 <= window[0] < window[1]):
            raise ValueError(f"structure loss {key} must be [start, end] iterations with 0 <= start < end, got {window!r}")
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"structure loss weight must be a finite number >= 0, got {weight!r}")
    kind = spec.get("type")
    args = {k: v for k, v in spec.items() if k not in ("type", "weight", *SCHEDULE_KEYS)}
    if kind == "ngf":
        return NGFLoss(spatial_dims, **args)
    if kind == "lncc":
        return LNCCLoss(spatial_dims, **args)
    if kind == "mi":
        return MutualInformationLoss(**args)
    if kind == "polarity":
        return PolarityLoss(**args)
    raise ValueError(f"unknown structure loss type {kind!r}; available: 'ngf', 'lncc', 'mi', 'polarity'")


def _schedule_factor(spec: Mapping[str, Any], iteration: int) -> float:
    """A structure loss's weight factor at ``iteration``: ``warmup`` ramps it from 0 up to 1, ``cooldown`` from 1 down
    to 0, linearly between their ``[start, end]``; an absent window leaves it at 1."""
    factor = 1.0
    for key in SCHEDULE_KEYS:
        if spec.get(key) is not None:
            start, end = spec[key]
            down = _linear_decay(start, end - start)(iteration)
            factor *= 1.0 - down if key == "warmup" else down
    return factor


def _linear_decay(constant: int, decay: int):
    def factor(iteration: int) -> float:
        if decay <= 0 or iteration < constant:
            return 1.0
        return max(0.0, 1.0 - (iteration - constant) / decay)

    return factor


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


class TranslationMethod(nn.Module):
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
            ``"reduce-overhead"`` — CUDA graphs, for launch-bound steps —, ``"max-autotune"``). The networks are
            compiled in place, so checkpoints are unchanged; the first steps pay the compilation.
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
    """

    name: ClassVar[str] = ""
    paired: ClassVar[bool] = False
    reverse_generator: ClassVar[str | None] = None
    """A two-sided method's B→A generator attribute: it starts from the inverse of the A→B start mapping."""
    registry: ClassVar[dict[str, type[TranslationMethod]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            TranslationMethod.registry[cls.name] = cls
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
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if precision not in PRECISION_TYPES:
            raise ValueError(f"precision must be one of {PRECISION_TYPES}, got {precision!r}")
        if init_type not in INIT_TYPES:
            raise ValueError(f"init_type must be one of {INIT_TYPES}, got {init_type!r}")
        if compile_type not in COMPILE_TYPES:
            raise ValueError(f"compile_type must be one of {COMPILE_TYPES}, got {compile_type!r}")
        check_option_values({"lr": lr, "lr_discriminator": lr_discriminator, "weight_decay": weight_decay,
                             "lambda_negative": lambda_negative, "lambda_start": lambda_start})
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

    @staticmethod
    def set_requires_grad(networks: Iterable[nn.Module], flag: bool) -> None:
        for net in networks:
            net.requires_grad_(flag)

    def _logits(self, discriminator: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
        logits = discriminator_logits(discriminator(image))
        if not all(torch.isfinite(t.detach()).all() for t in logits):
            raise DivergenceError(
                f"{type(self).__name__}: a discriminator output is nan/inf at iteration {self.iteration}; training "
                "stopped, the last checkpoint is the last good one (lower the learning rate or use fp32)"
            )
        return logits

    def generator_adversarial(self, discriminator: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss: ``fake`` should be judged real."""
        return self.adversarial_loss(self._logits(discriminator, fake), target_is_real=True, for_discriminator=False)

    def discriminator_adversarial(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                                  negative: torch.Tensor | None = None) -> torch.Tensor:
        """½ (real judged real + fake judged fake), the fake detached; with ``lambda_negative`` > 0, plus
        ½ λ · ``negative`` (a real image of the other domain, histogram-matched to ``real`` when ``negative_type`` is
        ``"histogram_matched"``) judged fake."""
        loss_real = self.adversarial_loss(self._logits(discriminator, real), target_is_real=True)
        loss_fake = self.adversarial_loss(self._logits(discriminator, fake.detach()), target_is_real=False)
        if negative is not None and self.lambda_negative > 0:
            if self.negative_type == "histogram_matched":
                negative = histogram_match_batch(negative, real)
            loss_fake = loss_fake + self.lambda_negative * self.adversarial_loss(
                self._logits(discriminator, negative), target_is_real=False)
        return 0.5 * (loss_real + loss_fake)

    def structure_penalty(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the configured extra structure losses between a source and its translation; a term with
        ``"warmup": [start, end]`` weighs 0 before iteration ``start`` and reaches its weight at ``end``, linearly, one
        with ``"cooldown": [start, end]`` weighs its weight until ``start`` and falls to 0 at ``end``."""
        total = source.new_zeros((), dtype=torch.float32)
        for spec, term in zip(self.structure_specs, self.structure_terms):
            ramp = _schedule_factor(spec, self.iteration)
            if ramp > 0:
                total = total + ramp * float(spec.get("weight", 1.0)) * term(source.float(), output.float())
        return total

    def gan_step(
        self,
        source: torch.Tensor,
        output: torch.Tensor,
        target: torch.Tensor,
        generator_terms: Callable[[], Mapping[str, tuple[float, torch.Tensor]]],
        lambda_gan: float = 1.0,
        condition: bool = False,
        frozen: Sequence[nn.Module] = (),
    ) -> dict[str, torch.Tensor]:
        """The one-sided GAN update: the discriminator ``net_d`` on ``target`` (real) against ``output`` (fake), then
        the generator on ``λ_GAN · L_GAN + Σ weight · term + structure losses``.

        Args:
            source: the generator's input (structure losses compare it with ``output``).
            output: the translation.
            target: a real image of the target domain.
            generator_terms: called once the discriminator is frozen; returns ``{name: (weight, loss)}``.
            lambda_gan: weight of the generator's adversarial term.
            condition: the discriminator sees ``[source, image]`` (pix2pix's conditional PatchGAN).
            frozen: further networks to freeze during the generator update.

        Returns:
            ``g_gan``, every generator term, ``structure`` (when structure losses are configured) and ``d``.
        """
        real, fake = (torch.cat([source, target], 1), torch.cat([source, output], 1)) if condition else (target, output)
        loss_d = self.discriminator_adversarial(self.net_d, real, fake, None if condition else source)
        self.optimize("discriminator", loss_d)
        frozen = [self.net_d, *frozen]
        self.set_requires_grad(frozen, False)
        loss_gan = self.generator_adversarial(self.net_d, fake)
        terms = dict(generator_terms())
        loss_g = lambda_gan * loss_gan + sum(weight * loss for weight, loss in terms.values())
        losses = {"g_gan": loss_gan, **{k: loss for k, (_, loss) in terms.items()}}
        if self.structure_specs:
            losses["structure"] = self.structure_penalty(source, output)
            loss_g = loss_g + losses["structure"]
        if self.lambda_start > 0 and self.start_mapping is not None and self.start_mapping.type != "none":
            losses["start"] = F.l1_loss(output.float(), self.generator.start(source).float())
            loss_g = loss_g + self.lambda_start * losses["start"]
        self.optimize("generator", loss_g)
        self.set_requires_grad(frozen, True)
        self.visuals = {"source": source, "output": output, "target": target}
        return {**losses, "d": loss_d}

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

    def setup(self, device: torch.device | str = "cpu", batch_voxels: int | None = None,
              iterations: int | None = None) -> TranslationMethod:
        """Move to ``device``, make ranks start from rank 0's weights, resolve the precision for batches of
        ``batch_voxels`` voxels, and create optimisers, schedulers (for a run of ``iterations``) and scaler."""
        if self.ema_decay and self.generator_ema is None:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.to(device)
        broadcast_from_main(t for t in self.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point())
        self.amp = resolve_precision(self.precision, self.device, batch_voxels)
        half = (iterations or 0) // 2
        constant = half if self.lr_constant_iters is None else self.lr_constant_iters
        decay = (iterations or 0) - half if self.lr_decay_iters is None else self.lr_decay_iters
        factor = _linear_decay(constant, decay)
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


def _discover() -> None:
    import medtrans.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base":
            importlib.import_module(f"medtrans.methods.{info.name}")


def method_names() -> list[str]:
    """Names of every method in ``medtrans/methods/``."""
    _discover()
    return sorted(TranslationMethod.registry)


def method_class(name: str) -> type[TranslationMethod]:
    """The class of method ``name``.

    Raises:
        ValueError: on an unknown name.
    """
    _discover()
    if name not in TranslationMethod.registry:
        raise ValueError(f"unknown method {name!r}; available: {sorted(TranslationMethod.registry)}")
    return TranslationMethod.registry[name]


def build_method(name: str, **kwargs: Any) -> TranslationMethod:
    """Instantiate a method by name (``build_method("cyclegan", spatial_dims=3, ...)``).

    Raises:
        ValueError: on an unknown name.
    """
    return method_class(name)(**kwargs)
