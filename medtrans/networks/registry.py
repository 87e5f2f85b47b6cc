"""The networks a translator file may name, and building one from its config as plain data.

A translator (``generator.pt``, a trainer checkpoint, a bundle's ``models/model.pt``) describes its network by a
config such as ``{"_target_": "medtrans.networks.UNetGenerator", "spatial_dims": 3, "channels": [32, 64]}``. Such a
file is data that people share, so :func:`build_network` never evaluates it: the ``_target_`` is looked up by exact
name in :data:`NETWORKS`, every argument must be plain data (numbers, strings, booleans, ``None`` and lists or dicts of
them; no ``$`` expressions, ``@`` references or ``_requires_``-like keys), and each is checked against the type the
network's signature declares before the network is called. A network of your own becomes buildable (and so loadable)
with :func:`register_network`.
"""

from __future__ import annotations

import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNet, UNet
from torch import nn

from medtrans.defaults import START_KNOTS
from medtrans.errors import ModelError
from medtrans.networks.discriminators import MultiResolutionDiscriminator, patchgan
from medtrans.networks.generators import ResnetGenerator, UNetGenerator
from medtrans.networks.start import StartedGenerator
from medtrans.networks.unit import UNIT

__all__ = ["NETWORKS", "build_network", "check_plain_data", "register_network", "started_generator"]

NETWORKS: dict[str, Callable[..., nn.Module]] = {}
"""Every network a config may name, by its ``_target_``: medtrans's own networks and a few of MONAI core's."""

_EXPRESSION_PREFIXES = ("$", "@", "%")  # MONAI config expressions, references and macros


def register_network(name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Make ``builder`` (a network class or a function returning one) buildable from configs naming ``name``.

    Its signature is the config's schema: each argument a config gives must be one of its parameters, of the declared
    type (annotations made of ``int``, ``float``, ``bool``, ``str``, ``None``, ``Sequence``/``list``/``tuple``,
    ``Mapping``/``dict``, ``Literal``, ``Any`` and unions of them).

    Raises:
        ValueError: when ``name`` is already taken by another builder.
    """
    if NETWORKS.get(name, builder) is not builder:
        raise ValueError(f"network name {name!r} is already registered for {NETWORKS[name]!r}")
    NETWORKS[name] = builder
    return builder


def started_generator(spatial_dims: int, generator: Mapping[str, Any], num_knots: int = START_KNOTS
                      ) -> StartedGenerator:
    """A :class:`~medtrans.networks.start.StartedGenerator` from configs.

    Args:
        spatial_dims: 2 or 3.
        generator: the residual generator's config: its registered network name under ``"name"``, then its arguments
            (``spatial_dims`` is filled in).
        num_knots: knots of the start mapping (the background and the foreground quantiles).

    Raises:
        ValueError: when ``generator`` names a started generator itself.
    """
    config = dict(generator)
    name = config.pop("name", None)
    if name == "medtrans.networks.StartedGenerator":
        raise ValueError("a StartedGenerator cannot wrap another")
    network = build_network({"_target_": name, **config, "spatial_dims": spatial_dims}, "generator")
    return StartedGenerator(spatial_dims, network, num_knots)


for _builder in (UNetGenerator, ResnetGenerator, UNIT, MultiResolutionDiscriminator, patchgan):
    register_network(f"medtrans.networks.{_builder.__name__}", _builder)
register_network("medtrans.networks.StartedGenerator", started_generator)
for _name, _builder in (("monai.networks.nets.UNet", UNet), ("monai.networks.nets.BasicUNet", BasicUNet),
                        ("monai.networks.blocks.Convolution", Convolution)):
    register_network(_name, _builder)


def check_plain_data(value: Any, where: str) -> None:
    """Check that ``value`` is plain data: ``None``, a bool, a finite number, a string that is no config expression,
    or a list, tuple or string-keyed dict of plain data whose keys do not start with ``_``.

    Raises:
        ValueError: naming ``where`` (a dotted path into the config) and what is not data.
    """
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, expected a finite number")
        return
    if isinstance(value, str):
        if value.lstrip().startswith(_EXPRESSION_PREFIXES):
            raise ValueError(f"{where} is an expression ({value[:40]!r}); network arguments are plain data")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain_data(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("_"):
                raise ValueError(f"{where} has the key {key!r}; nested keys are plain names (no _target_, _requires_)")
            check_plain_data(item, f"{where}.{key}")
        return
    raise ValueError(f"{where} is a {type(value).__name__}, not plain data")


def _fits(value: Any, hint: Any) -> bool:
    """Whether plain-data ``value`` fits the resolved type ``hint``."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if isinstance(container, type) and issubclass(container, Mapping):
        return isinstance(value, dict)
    if isinstance(container, type) and issubclass(container, (tuple, list, Sequence)) and not issubclass(container, str):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    return False  # a callable, a module, a tensor...: nothing a config can hold


def _signature(builder: Callable[..., nn.Module]) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    function = builder.__init__ if isinstance(builder, type) else builder
    params = {n: p for n, p in inspect.signature(function).parameters.items() if n != "self"}
    accepts_more = any(p.kind is p.VAR_KEYWORD for p in params.values())
    params = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return params, typing.get_type_hints(function), accepts_more


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("collections.abc.", "") if not isinstance(hint, type) else hint.__name__


def _check_arguments(target: str, builder: Callable[..., nn.Module], args: Mapping[str, Any]) -> None:
    params, hints, accepts_more = _signature(builder)
    for key, value in args.items():
        if key not in params:
            if accepts_more:
                continue
            close = difflib.get_close_matches(key, params, n=1)
            raise ValueError(f"{target} has no argument {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        hint = hints.get(key, Any)
        if not _fits(value, hint):
            raise ValueError(f"{target} argument {key} expects {_describe(hint)}, got {value!r:.60}")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in args]
    if missing:
        raise ValueError(f"{target} needs the argument(s) {', '.join(missing)}")


def build_network(network_def: Any, source: str | Path = "<config>") -> nn.Module:
    """Build a network from its config, treated as plain data (never evaluated).

    Args:
        network_def: ``{"_target_": <a name of NETWORKS>, **arguments}``.
        source: the file or option the config came from, named in errors.

    Raises:
        ModelError: naming ``source``, when the config is not a dict, its ``_target_`` is not registered, an argument
            is not plain data, unknown or of the wrong type, or the network's construction fails.
    """
    if not isinstance(network_def, Mapping):
        raise ModelError(source, f"network config must be a dict, got {type(network_def).__name__}")
    target = network_def.get("_target_")
    if not isinstance(target, str) or target not in NETWORKS:
        close = difflib.get_close_matches(str(target), NETWORKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(NETWORKS))}"
        raise ModelError(source, f"network _target_ {target!r} is not a registered network{hint}")
    args = {k: v for k, v in network_def.items() if k != "_target_"}
    try:
        check_plain_data(args, "network")
        _check_arguments(target, NETWORKS[target], args)
    except ValueError as err:
        raise ModelError(source, str(err)) from None
    try:
        return NETWORKS[target](**args)
    except Exception as err:  # noqa: BLE001 - report any construction failure against the file
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ModelError(source, f"cannot build network {target} ({type(err).__name__}: {reason})") from err
