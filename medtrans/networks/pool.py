"""CycleGAN's image history buffer (Shrivastava et al. 2017): discriminators see a mix of current and past fakes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ImagePool"]


class ImagePool(nn.Module):
    """Stores up to ``pool_size`` generated images; ``query`` returns, per image, either it or (p = ½, once full) a
    stored one that it replaces. ``pool_size = 0`` returns the input unchanged (CUT). Draws from torch's RNG, and its
    contents travel in the owning module's ``state_dict`` so a resumed run continues exactly.

    Args:
        pool_size: number of images kept (50 in CycleGAN).
    """

    def __init__(self, pool_size: int = 50) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1).item() > 0.5:
                i = int(torch.randint(len(self.images), (1,)).item())
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def get_extra_state(self) -> Any:
        return {"images": [t.cpu() for t in self.images]}

    def set_extra_state(self, state: Any) -> None:
        device = next((t.device for t in self.images), torch.device("cpu"))
        self.images = [t.to(device) for t in state["images"]]
