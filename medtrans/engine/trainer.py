"""One small ignite/MONAI trainer that drives any :class:`~medtrans.methods.base.TranslationMethod`.

MONAI's GanTrainer/AdversarialTrainer assume one generator, one discriminator and a "real" image that is the input;
translation methods have several networks and optimisers and own their step, so the engine only runs the loop:
batches from a :class:`~medtrans.engine.data.TrainStream` → ``method.training_step`` → handlers (checkpoints, stats,
TensorBoard or MLflow, progress bar, PNG montages, validation with the whole-volume inference path).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines import Trainer

from medtrans import defaults
from medtrans.data.intensity import fit_intensity
from medtrans.data.start import estimate_start
from medtrans.data.stream import TrainStream
from medtrans.distributed import is_main_rank
from medtrans.engine.checkpoint import CheckpointHandler
from medtrans.inference import InferenceSettings, Translator
from medtrans.io import read_volume
from medtrans.methods.base import TranslationMethod
from medtrans.metrics import mae, psnr, ssim
from medtrans.model import TranslationModel, save_generator
from medtrans.utils import resolve_device
from medtrans.visualize import save_png, tensor_montage

__all__ = ["TRACKING_TYPES", "TranslationTrainer"]

TRACKING_TYPES = defaults.TRACKING_TYPES
VALIDATION_METRICS = {"psnr": True, "ssim": True, "mae": False}  # name -> higher is better


class TranslationTrainer(Trainer):
    """Trains a translation method for exactly ``iterations`` iterations.

    The trained translator (:class:`~medtrans.model.TranslationModel`: the live generator, domain A's preprocessing,
    domain B's intensities, the inference defaults) is built once here, as :attr:`model`; checkpoints, validation and
    :meth:`export` all read it.

    Args:
        method: the method (networks already built; seed before building it for reproducible weights).
        data: the training stream.
        output_dir: checkpoints, montages, TensorBoard logs, best generator.
        iterations: total iterations (a resumed run continues up to this number).
        checkpoint_interval: iterations between checkpoints and validations; the last iteration is always saved.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        keep_last: checkpoints kept.
        resume: continue from the latest checkpoint in ``output_dir``.
        log_interval: iterations between log lines (losses, it/s, time waiting for data) / scalar records.
        montage_interval: iterations between PNG montages (0 = off).
        tracking: ``"tensorboard"`` (default), ``"mlflow"`` (needs the ``tracking`` extra) or ``"none"``.
        validation: ``{"pairs": [[a_path, b_path, mask_path_or_null], ...], "metric": "psnr", "roi_size": [..],
            "overlap": 0.25}``: at every checkpoint, whole-volume translation of each A, scored against its B in the
            network's intensity range ([-1, 1]; data range 2) inside the mask; the best generator is kept as
            ``best_generator.pt``.
        target_intensity: how the saved generator maps outputs back (default: domain B's per-dataset range).
        inference: inference defaults saved with the translator (e.g. ``{"roi_size": [96, 96, 96]}``).
        config: the resolved config, stored in checkpoints.
        progress: show a progress bar when the log goes to a terminal (log lines otherwise).
        handlers: extra MONAI/ignite handlers.
    """

    def __init__(
        self,
        method: TranslationMethod,
        data: TrainStream,
        output_dir: str | Path,
        iterations: int = defaults.ITERATIONS,
        checkpoint_interval: int = defaults.CHECKPOINT_INTERVAL,
        device: str = "auto",
        keep_last: int = 3,
        resume: bool = True,
        log_interval: int = defaults.LOG_INTERVAL,
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
        if iterations < 1 or checkpoint_interval < 1 or log_interval < 1:
            raise ValueError("iterations, checkpoint_interval and log_interval must be >= 1, got "
                             f"{iterations}, {checkpoint_interval}, {log_interval}")
        if data.spatial_dims != method.spatial_dims:
            raise ValueError(f"{method.spatial_dims}D method but the patches {data.config.patch_size} are {data.spatial_dims}D")
        if data.paired != method.paired:
            raise ValueError(f"method {method.name!r} needs {'paired' if method.paired else 'unpaired'} data (TrainStream paired={method.paired})")
        device = resolve_device(device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if method.start != "none":  # before setup(): the EMA copy and the broadcast across ranks include the mapping
            method.set_start(estimate_start(data.foreground_volumes("a"), data.foreground_volumes("b"), method.start))
        method.setup(device, batch_voxels=data.batch_size * math.prod(data.config.patch_size), iterations=iterations)
        epoch_length = min(checkpoint_interval, iterations)
        super().__init__(device=device, max_epochs=-(-iterations // epoch_length), data_loader=data,
                         epoch_length=epoch_length, handlers=list(handlers), decollate=False)
        self.method = method
        self.data = data
        self.iterations = iterations
        self.output_dir = Path(output_dir)
        self.model = TranslationModel.for_training(method, data, inference)
        if target_intensity is not None:
            self.model.target_intensity = dict(target_intensity)
        self.log_interval = log_interval
        self.logger = logging.getLogger("medtrans.train")
        self._writer = None
        self._mlflow = None
        self._timing = {"data": 0.0, "start": time.perf_counter(), "iteration": 0}
        CheckpointHandler(method, data, self.model, self.output_dir, checkpoint_interval, keep_last, resume,
                          config).attach(self)
        self.add_event_handler(Events.GET_BATCH_STARTED, self._batch_started)
        self.add_event_handler(Events.GET_BATCH_COMPLETED, self._batch_completed)
        self.add_event_handler(Events.STARTED, self._reset_timing)
        self.add_event_handler(Events.ITERATION_COMPLETED(every=log_interval), self._log)
        self.add_event_handler(Events.COMPLETED, lambda _: data.close())
        self.add_event_handler(Events.EXCEPTION_RAISED, self._stop)
        self.validation = dict(validation) if validation else None
        self.best: float | None = None
        if is_main_rank():
            self._attach_tracking(tracking, config or {})
            if montage_interval:
                self.add_event_handler(Events.ITERATION_COMPLETED(every=montage_interval), self._montage)
            if progress and sys.stderr.isatty():
                from ignite.handlers import ProgressBar

                ProgressBar(persist=False).attach(self, output_transform=lambda out: out)
            if self.validation:
                self.add_event_handler(Events.EPOCH_COMPLETED | Events.COMPLETED, self._validate)

    # -- the loop ---------------------------------------------------------------------------------------------------
    def run(self) -> None:  # type: ignore[override]
        """Train until iteration :attr:`iterations` (a resumed run continues from its checkpoint)."""
        self.state.max_epochs = None  # ignite counts iterations (max_iters), not epochs
        Engine.run(self, data=self.data_loader, max_iters=self.iterations, epoch_length=self.state.epoch_length)

    def _iteration(self, engine: Engine, batchdata: dict[str, torch.Tensor]) -> dict[str, float]:
        return self.method.training_step(batchdata)

    def _stop(self, engine: Engine, error: BaseException) -> None:
        self.data.close()
        raise error

    def export(self, path: str | Path) -> Path | None:
        """Write the trained translator's record (a bundle's ``models/model.pt``), atomically; rank 0 only."""
        if not is_main_rank():
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_generator(path, self.model)

    # -- handlers ---------------------------------------------------------------------------------------------------
    def _reset_timing(self, engine: Engine) -> None:
        self._timing = {"data": 0.0, "start": time.perf_counter(), "iteration": engine.state.iteration}

    def _batch_started(self, engine: Engine) -> None:
        self._timing["fetch"] = time.perf_counter()

    def _batch_completed(self, engine: Engine) -> None:
        self._timing["data"] += time.perf_counter() - self._timing["fetch"]

    def _log(self, engine: Engine) -> None:
        now, t = time.perf_counter(), self._timing
        done = engine.state.iteration - t["iteration"]
        rate = done / max(now - t["start"], 1e-9)
        waiting = t["data"] / max(now - t["start"], 1e-9)
        eta = (self.iterations - engine.state.iteration) / max(rate, 1e-9)
        self._timing = {"data": 0.0, "start": now, "iteration": engine.state.iteration}
        out = engine.state.output or {}
        text = " ".join(f"{k}={v:.4g}" for k, v in out.items())
        self.logger.info(f"iteration {engine.state.iteration}/{self.iterations}: {text} | {rate:.2f} it/s, "
                         f"{100 * waiting:.0f}% waiting for data, {eta / 60:.1f} min left")
        for name, value in out.items():
            if self._writer is not None:
                self._writer.add_scalar(f"train/{name}", value, engine.state.iteration)
            if self._mlflow is not None:
                self._mlflow.log_metric(name, value, step=engine.state.iteration)

    def _attach_tracking(self, tracking: str, config: Mapping[str, Any]) -> None:
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
                {k: str(v)[:250] for k, v in config.items()}))
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
        if engine.state.metrics.get("val_iteration") == engine.state.iteration:
            return  # the run ended on a checkpoint interval: validated already
        cfg = self.validation
        settings = InferenceSettings(**{**self.model.inference, **{k: cfg[k] for k in ("roi_size", "overlap") if k in cfg},
                                        "progress": False, "device": str(self.method.device)})
        translator = Translator(self.model, settings)
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
        engine.state.metrics.update({f"val_{k}": v for k, v in means.items()}, val_iteration=engine.state.iteration)
        self.logger.info("validation at iteration %d: %s", engine.state.iteration, " ".join(f"{k}={v:.4f}" for k, v in means.items()))
        for k, v in means.items():
            if self._writer is not None:
                self._writer.add_scalar(f"val/{k}", v, engine.state.iteration)
        metric = cfg.get("metric", "psnr")
        value = means[metric]
        better = self.best is None or (value > self.best if VALIDATION_METRICS[metric] else value < self.best)
        if better and math.isfinite(value):
            self.best = value
            save_generator(self.output_dir / "best_generator.pt", self.model)
