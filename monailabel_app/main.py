"""MONAI Label app serving medtrans translators (image-to-image, float32 NIfTI results).

    <label venv>/bin/python -m monailabel.main start_server --app monailabel_app --studies STUDIES \\
        --conf models NAME[,NAME...]

Each NAME is a checkpoint ``model/NAME.pt``, a bundle folder ``model/NAME`` or a path; without ``--conf models`` every
checkpoint and bundle in ``model/`` is served. See docs/monailabel.md.
"""

from __future__ import annotations

import logging

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

from medtrans.integrations.monailabel import TranslationInferTask, find_models

logger = logging.getLogger(__name__)


class MedtransApp(MONAILabelApp):
    """One ``others`` infer task per medtrans model; no training, strategies or scoring (translation has no labels)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.models = find_models(app_dir, conf.get("models"))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="medtrans",
                         description="medtrans image-to-image translation", version="1")

    def init_infers(self) -> dict[str, InferTask]:
        tasks = {}
        for name, path in self.models.items():
            logger.info(f"medtrans: serving {path} as model {name!r}")
            tasks[name] = TranslationInferTask(path)
        return tasks

    def init_strategies(self) -> dict:
        return {}
