"""One small ignite/MONAI trainer that drives any :class:`~medtrans.methods.base.TranslationMethod`.

MONAI's GanTrainer/AdversarialTrainer assume one generator, one discriminator and a "real" image that is the input;
translation methods have several networks and optimisers and own their step, so the engine only runs the loop:
batches from a :class:`~medtrans.engine.data.TrainStream` → ``method.training_step`` → handlers (checkpoints, stats,
TensorBoard or MLflow, progress bar, PNG montages, validation with the whole-volume inference path).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines import Trainer

from medtrans.data.intensity import fit_intensity
from medtrans.engine.checkpoint import CheckpointHandler
from medtrans.engine.data import TrainStream
from medtrans.inference import InferenceSettings, Translator
from medtrans.io import read_volume
from medtrans.methods.base import TranslationMethod
from medtrans.metrics import mae, psnr, ssim
from medtrans.model import TranslationModel, save_generator
from medtrans.utils import resolve_device
from medtrans.visualize import save_png, tensor_montage

__all__ = ["TRACKING_TYPES", "TranslationTrainer"]

TRACKING_TYPES = ("tensorboard", "mlflow", "none")
VALIDATION_METRICS = {"psnr": True, "ssim": True, "mae": False}  # name -> higher is better


def _main_rank() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class TranslationTrainer(Trainer):
    """Trains a translation method for ``max_epochs × epoch_length`` iterations.

    Args:
        method: the method (networks already built; seed before building it for reproducible weights).
        data: the training stream.
        output_dir: checkpoints, montages, TensorBoard logs, best generator.
        max_epochs: epochs.
        epoch_length: iterations per epoch (patches are endless, so an "epoch" is a logging/validation period).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        save_interval: iterations between checkpoints (default: one epoch).
        keep_last: checkpoints kept.
        resume: continue from the latest checkpoint in ``output_dir``.
        log_interval: iterations between log lines / scalar records.
        montage_interval: iterations between PNG montages (0 = off).
        tracking: ``"tensorboard"`` (default), ``"mlflow"`` (needs the ``tracking`` extra) or ``"none"``.
        validation: ``{"pairs": [[a_path, b_path, mask_path_or_null], ...], "interval": epochs, "metric": "psnr",
            "roi_size": [..], "overlap": 0.25}``: whole-volume translation of each A, scored against its B in the
            network's intensity range ([-1, 1]; data range 2) inside the mask; the best generator is kept as
            ``best_generator.pt``.
        target_intensity: how the saved generator maps outputs back (default: domain B's per-dataset range).
        config: the resolved config, stored in checkpoints.
        progress: show a progress bar.
        handlers: extra MONAI/ignite handlers.
    """

    def __init__(
        self,
        method: TranslationMethod,
        data: TrainStream,
        output_dir: str | Path,
        max_epochs: int = 1,
        epoch_length: int = 100,
        device: str = "auto",
        save_interval: int | None = None,
        keep_last: int = 3,
        resume: bool = True,
        log_interval: int = 10,
        montage_interval: int = 0,
        tracking: str = "tensorboard",
        validation: Mapping[str, Any] | None = None,
        target_intensity: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        progress: bool = True,
        handlers: Sequence[Any] = (),
    ) -> None:
        if tracking not in TRACKING_TYPES:
            raise ValueError(f"tracking must be one of {TRACKING_TYPES}, got {tracking!r}")
        if data.spatial_dims != method.spatial_dims:
            raise ValueError(f"{method.spatial_dims}D method but the patches {data.config.patch_size} are {data.spatial_dims}D")
        if data.paired != method.paired:
            raise ValueError(f"method {method.name!r} needs {'paired' if method.paired else 'unpaired'} data (TrainStream paired={method.paired})")
        device = resolve_device(device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        method.setup(device)
        super().__init__(device=device, max_epochs=max_epochs, data_loader=data, epoch_length=epoch_length,
                         handlers=list(handlers), decollate=False)
        self.method = method
        self.data = data
        self.output_dir = Path(output_dir)
        self.config = dict(config or {})
        self._target_intensity = dict(target_intensity) if target_intensity else None
        self.inference_defaults = dict(inference or {})
        self.log_interval = log_interval
        self.logger = logging.getLogger("medtrans.train")
        self._writer = None
        self._mlflow = None
        CheckpointHandler(self, self.output_dir, save_interval or epoch_length, keep_last, resume).attach(self)
        self.add_event_handler(Events.ITERATION_COMPLETED(every=log_interval), self._log)
        if _main_rank():
            self._attach_tracking(tracking)
            if montage_interval:
                self.add_event_handler(Events.ITERATION_COMPLETED(every=montage_interval), self._montage)
            if progress:
                from ignite.handlers import ProgressBar

                ProgressBar(persist=False).attach(self, output_transform=lambda out: out)
        self.validation = dict(validation) if validation else None
        if self.validation and _main_rank():
            self.best: float | None = None
            every = int(self.validation.get("interval", 1))
            self.add_event_handler(Events.EPOCH_COMPLETED(every=every), self._validate)

    # -- the loop ---------------------------------------------------------------------------------------------------
    def _iteration(self, engine: Engine, batchdata: dict[str, torch.Tensor]) -> dict[str, float]:
        return self.method.training_step(batchdata)

    def target_intensity(self) -> dict[str, Any]:
        if self._target_intensity is None:
            self._target_intensity = self.data.target_intensity()
        return self._target_intensity

    def translation_model(self) -> TranslationModel:
        """The live A→B generator with the data's preprocessing and back-mapping, as inference needs it."""
        return self.method.translation_model(self.data.preprocessing_a, self.target_intensity(), self.inference_defaults)

    def export(self, path: str | Path) -> Path | None:
        """Write the A→B generator record (a bundle's ``models/model.pt``), atomically; rank 0 only."""
        if not _main_rank():
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_generator(path, self.translation_model())

    # -- handlers ---------------------------------------------------------------------------------------------------
    def _log(self, engine: Engine) -> None:
        out = engine.state.output or {}
        text = " ".join(f"{k}={v:.4g}" for k, v in out.items())
        self.logger.info(f"iteration {engine.state.iteration}: {text}")
        for name, value in out.items():
            if self._writer is not None:
                self._writer.add_scalar(f"train/{name}", value, engine.state.iteration)
            if self._mlflow is not None:
                self._mlflow.log_metric(name, value, step=engine.state.iteration)

    def _attach_tracking(self, tracking: str) -> None:
        if tracking == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
            self.add_event_handler(Events.COMPLETED, lambda _: self._writer.flush())
        elif tracking == "mlflow":
            try:
                import mlflow
            except ImportError as err:
                raise ImportError("tracking='mlflow' needs mlflow: pip install -c constraints.txt -e '.[tracking]'") from err
            mlflow.set_tracking_uri(f"sqlite:///{(self.output_dir / 'mlflow.db').resolve()}")
            mlflow.set_experiment("medtrans")
            self._mlflow = mlflow
            self.add_event_handler(Events.STARTED, lambda _: mlflow.start_run() and mlflow.log_params(
                {k: str(v)[:250] for k, v in self.config.items()}))
            self.add_event_handler(Events.COMPLETED, lambda _: mlflow.end_run())

    def _montage(self, engine: Engine) -> None:
        if not self.method.visuals:
            return
        image = tensor_montage(self.method.visuals)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_png(self.output_dir / f"montage_{engine.state.iteration:08d}.png", image)
        if self._writer is not None:
            self._writer.add_image("montage/" + "|".join(self.method.visuals), image[None], engine.state.iteration)

    def _validate(self, engine: Engine) -> None:
        cfg = self.validation
        settings = InferenceSettings(
            roi_size=tuple(cfg.get("roi_size", (96, 96, 96))), overlap=float(cfg.get("overlap", 0.25)), progress=False,
            device=str(self.method.device),
        )
        translator = Translator(self.translation_model(), settings)
        self.method.eval()
        scores: dict[str, list[float]] = {k: [] for k in VALIDATION_METRICS}
        for a_path, b_path, *rest in cfg["pairs"]:
            source, target = read_volume(a_path), read_volume(b_path)
            mask = read_volume(rest[0], allow_constant=True).data > 0 if rest and rest[0] else None
            result = translator.translate(source, mask)
            b_norm = fit_intensity(self.data.preprocessing_b.intensity, target.data, mask).forward(target.data)
            scores["psnr"].append(psnr(result.output_normalized, b_norm, 2.0, mask))
            scores["ssim"].append(ssim(result.output_normalized, b_norm, 2.0, mask))
            scores["mae"].append(mae(result.output_normalized, b_norm, mask))
        self.method.train()
        means = {k: float(np.mean(v)) for k, v in scores.items()}
        engine.state.metrics.update({f"val_{k}": v for k, v in means.items()})
        self.logger.info("validation at iteration %d: %s", engine.state.iteration, " ".join(f"{k}={v:.4f}" for k, v in means.items()))
        for k, v in means.items():
            if self._writer is not None:
                self._writer.add_scalar(f"val/{k}", v, engine.state.iteration)
        metric = cfg.get("metric", "psnr")
        value = means[metric]
        better = self.best is None or (value > self.best if VALIDATION_METRICS[metric] else value < self.best)
        if better and math.isfinite(value):
            self.best = value
            save_generator(self.output_dir / "best_generator.pt", self.translation_model())
