"""Complete, atomic checkpoints: everything to resume exactly, and the generator record inference reads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medtrans.data.stream import TrainStream
from medtrans.distributed import is_main_rank
from medtrans.engine.rng import gather_rng_states, set_rng_state
from medtrans.errors import InputError
from medtrans.io import remove_stale_partials
from medtrans.methods.base import TranslationMethod
from medtrans.model import TranslationModel, atomic_torch_save

__all__ = ["CHECKPOINT_FORMAT", "CheckpointHandler", "latest_checkpoint", "read_checkpoint"]

CHECKPOINT_FORMAT = "medtrans.checkpoint/1"
_NAME = re.compile(r"checkpoint_(\d+)\.pt$")


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the highest iteration in ``folder`` (``None`` when there is none)."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("checkpoint_*.pt") if (m := _NAME.search(p.name))]
    return max(found)[1] if found else None


def read_checkpoint(path: str | Path, method_name: str) -> dict[str, Any]:
    """Load a training checkpoint of method ``method_name``.

    Raises:
        InputError: naming the file, when it is not a readable medtrans checkpoint of that method.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise InputError(path, f"is not a readable medtrans checkpoint ({type(err).__name__}); move it or use "
                               "another --output") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("method") != method_name:
        found = state.get("method") if isinstance(state, dict) else None
        raise InputError(path, f"is not a checkpoint of {method_name} (it is {found or 'something else'}), so this "
                               "run cannot resume from it; use another --output")
    return state


class CheckpointHandler:
    """Saves ``checkpoint_<iteration>.pt`` every ``save_interval`` iterations and at the end; resumes from the latest.

    A checkpoint holds the method's networks (with image pools), optimisers, schedulers and AMP scaler, the engine's
    iteration and epoch, the training RNG state, the resolved config, and under ``"generator"`` the A→B generator record
    that ``medtrans translate`` loads. Files are written to a temporary name and renamed, by rank 0 only; the oldest
    are deleted beyond ``keep_last``; the temporaries of checkpoints a killed run was writing are removed at the next
    save. Nothing is saved when training stops on an exception (e.g. divergence), so the newest checkpoint is the last
    good one.

    Args:
        method: the method being trained.
        stream: the training stream (positioned on resume).
        model: the trained translator whose record every checkpoint carries.
        output_dir: folder of the checkpoints.
        save_interval: iterations between checkpoints.
        keep_last: checkpoints kept.
        resume: load the latest checkpoint of ``output_dir`` (if any) when training starts.
        config: the resolved config, stored in every checkpoint.
    """

    def __init__(self, method: TranslationMethod, stream: TrainStream, model: TranslationModel, output_dir: str | Path,
                 save_interval: int = 1000, keep_last: int = 3, resume: bool = True,
                 config: Mapping[str, Any] | None = None) -> None:
        self.method = method
        self.stream = stream
        self.model = model
        self.output_dir = Path(output_dir)
        self.save_interval = save_interval
        self.keep_last = keep_last
        self.resume = resume
        self.config = dict(config or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def payload(self, engine: Engine, rng: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "method": self.method.name,
            "training": self.method.training_state(),
            "engine": {"iteration": engine.state.iteration, "epoch": engine.state.epoch},
            "rng": rng,
            "config": self.config,
            "generator": self.model.record(),
        }

    def save(self, engine: Engine) -> Path | None:
        rng = gather_rng_states()  # on every rank (a collective), before rank 0 alone writes
        if not is_main_rank():
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.output_dir, "checkpoint_*.pt")  # what killed runs were writing
        path = self.output_dir / f"checkpoint_{engine.state.iteration:08d}.pt"
        if path.exists():
            return path
        atomic_torch_save(self.payload(engine, rng), path)
        kept = sorted(self.output_dir.glob("checkpoint_*.pt"))
        for old in kept[: max(0, len(kept) - self.keep_last)]:
            old.unlink()
        return path

    def load(self, engine: Engine) -> None:
        path = latest_checkpoint(self.output_dir) if self.resume else None
        if path is None:
            return
        state = read_checkpoint(path, self.method.name)
        try:
            self.method.load_training_state(state["training"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:  # networks or optimisers of other shapes
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise InputError(path, f"holds a run of other settings than this one ({reason}); use another --output or "
                                   "the same settings") from err
        engine.state.iteration = state["engine"]["iteration"]
        engine.state.epoch = engine.state.iteration // engine.state.epoch_length
        set_rng_state(state["rng"])
        self.stream.resume_at(engine.state.iteration)
        engine.logger.info(f"resumed from {path} at iteration {engine.state.iteration}")
