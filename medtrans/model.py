"""The trained translator: the A→B generator, how it was built, the preprocessing around it and its inference
defaults — one object, owned here.

:meth:`TranslationModel.for_training` builds it once at the start of training from the method (the live generator)
and the training stream (domain A's preprocessing, domain B's intensities). Checkpoints, validation, ``generator.pt``,
bundle export, ``medtrans translate`` and MONAI Label all read that object or its record: the same record is written
inside the trainer's checkpoints (under ``"generator"``) and by :func:`save_generator`, and is read back by
:func:`load_model` from either, or from a bundle folder (``models/model.pt``). Networks are described by MONAI-bundle
style configs (``{"_target_": "medtrans.networks...."}``), so checkpoints and bundles share one vocabulary.

A translator is a file people share, so loading one never runs code from it: the file is read with
``torch.load(weights_only=True)`` (tensors and plain containers only), every field of the record is checked, and the
network is built by :func:`medtrans.networks.registry.build_network`, which treats its config as plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medtrans.data.fingerprint import check_fingerprint
from medtrans.data.intensity import TARGET_TYPES, validate_spec
from medtrans.data.preprocessing import Preprocessing
from medtrans.errors import ModelError
from medtrans.io import atomic_write
from medtrans.networks.registry import build_network, check_plain_data

if TYPE_CHECKING:
    from medtrans.data.stream import TrainStream
    from medtrans.methods.base import TranslationMethod

__all__ = ["FORMAT", "TranslationModel", "atomic_torch_save", "load_model", "save_generator"]

FORMAT = "medtrans.generator/1"


_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "unexpected pos", "file write failed")
"""What ``torch.save``'s zip writer says (as a ``RuntimeError``, not an ``OSError``) when the disk fills up."""


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary name beside ``path``, then rename: no half-written checkpoint on failure.

    Raises:
        InputError: naming ``path`` when it cannot be written, full disk included (torch's writer reports that as a
            ``RuntimeError``, turned here into the ``OSError`` :func:`~medtrans.io.atomic_write` reports).
    """
    def save(tmp: str) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:
            text = str(err)
            if not any(marker in text for marker in _WRITE_FAILURES):
                raise
            first = (text.strip().splitlines() or [""])[0][:200]
            raise OSError(f"torch.save failed, is the disk full? ({first})") from err

    return atomic_write(path, save)


@dataclass
class TranslationModel:
    """A loaded A→B generator with what inference needs around it.

    Attributes:
        network: the generator (``in_channels``/``out_channels`` attributes, ``size_divisor`` if it has one).
        network_def: the config it was built from.
        spatial_dims: 2 (slice-wise) or 3 (volumetric).
        preprocessing: the source domain's preprocessing at training (intensity spec, canonical, spacing).
        target_intensity: how outputs map back to target units (``window``, ``source`` or ``histogram`` spec).
        inference: default inference settings saved with the model (e.g. ``roi_size``).
        start: the start mapping the generator learned its residual on, and the evidence it was chosen by
            (``{"type": "inverted", "evidence": {"same": 0.2, "inverted": 0.15}}``; empty when none).
        fingerprint: what domain A looked like at training (:mod:`medtrans.data.fingerprint`), which inference
            measures each input against (empty for models trained before it was recorded: no check).
        source: where it was loaded from.
    """

    network: nn.Module
    network_def: dict[str, Any]
    spatial_dims: int
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    target_intensity: dict[str, Any] = field(default_factory=lambda: {"type": "source"})
    inference: dict[str, Any] = field(default_factory=dict)
    start: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    source: Path = Path("<memory>")

    @classmethod
    def for_training(cls, method: TranslationMethod, stream: TrainStream,
                     inference: dict[str, Any] | None = None) -> TranslationModel:
        """The translator a training run produces: ``method``'s live A→B network (its generator, or the generator's
        moving average with ``ema_decay``; weights shared, not copied), domain A's preprocessing, domain B's
        intensities and domain A's fingerprint (both from the volumes in memory) and the inference defaults."""
        return cls(
            network=method.translator,
            network_def=method.generator_def,
            spatial_dims=method.spatial_dims,
            preprocessing=stream.preprocessing_a,
            target_intensity=stream.target_intensity(),
            inference=dict(inference or {}),
            start=method.start_mapping.to_dict() if method.start_mapping is not None else {},
            fingerprint=stream.fingerprint(),
        )

    @property
    def in_channels(self) -> int:
        return int(getattr(self.network, "in_channels", 1))

    @property
    def size_divisor(self) -> int:
        return int(getattr(self.network, "size_divisor", 1))

    def record(self) -> dict[str, Any]:
        """The serialisable record (weights on CPU)."""
        return {
            "format": FORMAT,
            "network_def": self.network_def,
            "spatial_dims": self.spatial_dims,
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "preprocessing": self.preprocessing.to_dict(),
            "target_intensity": self.target_intensity,
            "inference": self.inference,
            "start": self.start,
            "fingerprint": self.fingerprint,
        }


def save_generator(path: str | Path, model: TranslationModel) -> Path:
    """Write ``model`` as a standalone generator checkpoint, atomically."""
    return atomic_torch_save(model.record(), path)


_RECORD_KEYS = {"format", "network_def", "spatial_dims", "state_dict", "preprocessing", "target_intensity", "inference",
                "start", "fingerprint"}


def _field(record: dict[str, Any], key: str, kind: type, source: Path, default: Any = None) -> Any:
    value = record.get(key, default)
    if not isinstance(value, kind):
        raise ModelError(source, f"record field {key!r} must be of type {kind.__name__}, got {type(value).__name__}")
    return value


def _from_record(record: dict[str, Any], source: Path) -> TranslationModel:
    if record.get("format") != FORMAT:
        raise ModelError(source, f"is not a medtrans generator checkpoint (format {record.get('format')!r}, expected {FORMAT!r})")
    unknown = sorted(map(str, set(record) - _RECORD_KEYS))
    if unknown:
        raise ModelError(source, f"record has unknown field(s) {', '.join(unknown)}")
    network_def = _field(record, "network_def", dict, source)
    spatial_dims = _field(record, "spatial_dims", int, source)
    state_dict = _field(record, "state_dict", dict, source)
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ModelError(source, f"record field 'spatial_dims' must be 2 or 3, got {spatial_dims!r}")
    if network_def.get("spatial_dims", spatial_dims) != spatial_dims:
        raise ModelError(source, f"holds a {network_def['spatial_dims']}D network but its record says {spatial_dims}D")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise ModelError(source, "record field 'state_dict' must map parameter names to tensors")
    pre = _field(record, "preprocessing", dict, source, {})
    target = _field(record, "target_intensity", dict, source, {"type": "source"})
    inference = _field(record, "inference", dict, source, {})
    start = _field(record, "start", dict, source, {})
    fingerprint = _field(record, "fingerprint", dict, source, {})  # absent from models saved before it existed
    try:
        for key, value in (("preprocessing", pre), ("target_intensity", target), ("inference", inference),
                           ("start", start), ("fingerprint", fingerprint)):
            check_plain_data(value, key)
        preprocessing = Preprocessing(**pre)
        target = validate_spec(target, TARGET_TYPES)
        fingerprint = check_fingerprint(fingerprint)
    except (TypeError, ValueError) as err:
        raise ModelError(source, f"record is malformed: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    network = build_network(network_def, source)
    _load_weights(network, state_dict, source)
    return TranslationModel(
        network=network.eval(),
        network_def=dict(network_def),
        spatial_dims=spatial_dims,
        preprocessing=preprocessing,
        target_intensity=target,
        inference=dict(inference),
        start=dict(start),
        fingerprint=fingerprint,
        source=source,
    )


def _load_weights(network: nn.Module, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    try:
        network.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError) as err:
        first = str(err).splitlines()[1:3] or str(err).splitlines()[:1]
        raise ModelError(
            source, f"holds weights of another architecture than {type(network).__name__}: {' '.join(first).strip()}"
        ) from err


def _from_bundle(folder: Path) -> TranslationModel:
    if not (folder / "configs").is_dir():
        raise ModelError(folder, "is a folder but not a bundle (it has no configs/ folder)")
    weights = folder / "models" / "model.pt"
    if not weights.exists():
        raise ModelError(folder, f"bundle has no trained model at {weights}: train it first (docs/bundles.md)")
    return _load_file(weights)


def _load_file(path: Path) -> TranslationModel:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors vary; all mean "not a checkpoint"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights_only" in reason or "Weights only load failed" in reason:
            reason = "it holds Python objects, not a medtrans checkpoint"
        raise ModelError(path, f"is not a readable medtrans checkpoint ({reason[:200]})") from err
    if not isinstance(payload, dict):
        raise ModelError(path, "is not a medtrans checkpoint (not a dict)")
    if "generator" in payload and isinstance(payload["generator"], dict):
        payload = payload["generator"]
    return _from_record(payload, path)


def load_model(path: str | Path) -> TranslationModel:
    """Load a translator from a generator checkpoint, a trainer checkpoint, or a bundle folder (its
    ``models/model.pt``, the generator record bundle training writes).

    Raises:
        ModelError: naming the file, when it does not exist, is not a medtrans checkpoint or bundle, or holds another
            architecture.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(path, "model checkpoint or bundle does not exist")
    if path.is_dir():
        return _from_bundle(path)
    return _load_file(path)
