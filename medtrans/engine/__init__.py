"""Training engine: data stream, trainer, checkpoints, image pool, random streams."""

from medtrans.engine.checkpoint import CheckpointHandler, latest_checkpoint
from medtrans.engine.data import TrainStream
from medtrans.engine.pool import ImagePool
from medtrans.engine.trainer import TranslationTrainer

__all__ = ["CheckpointHandler", "ImagePool", "TrainStream", "TranslationTrainer", "latest_checkpoint"]
