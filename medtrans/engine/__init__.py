"""Training engine: the trainer, its checkpoints, and the training random state."""

from medtrans.engine.checkpoint import CheckpointHandler, latest_checkpoint
from medtrans.engine.trainer import TranslationTrainer

__all__ = ["CheckpointHandler", "TranslationTrainer", "latest_checkpoint"]
