"""Tiny per-method configurations shared by the method, engine and bundle tests."""

from __future__ import annotations

import pytest

RESNET = {"channels": 8, "num_res_blocks": 2}
UNET = {"_target_": "medtrans.networks.UNetGenerator", "channels": (8, 16, 32), "strides": (2, 2)}
PATCHGAN = {"channels": 8, "num_layers": 2}
MULTISCALE = {"channels": 8, "num_layers": 2, "num_scales": 2}

# method -> (tiny constructor arguments, the structure/cycle term the method must lower on a fixed batch)
TINY: dict[str, tuple[dict, str]] = {
    "pix2pix": ({"generator": UNET, "discriminator": {"_target_": "medtrans.networks.patchgan", **PATCHGAN}}, "g_l1"),
    "cyclegan": ({"generator": RESNET, "discriminator": PATCHGAN}, "cycle"),
    "cycle_medgan": ({"generator": RESNET, "discriminator": PATCHGAN}, "cycle_perceptual"),
    "cut": ({"generator": RESNET, "discriminator": PATCHGAN, "num_patches": 64}, "nce"),
    "fastcut": ({"variant": "fastcut", "generator": RESNET, "discriminator": PATCHGAN, "num_patches": 64}, "nce"),
    # NGF's gradient vanishes on the almost flat output of an untrained tiny U-Net (the loss is quadratic in
    # n_ε(G(a))), so within 12 steps its decrease is only visible when it outweighs the GAN term
    "nec": ({"generator": UNET, "discriminator": MULTISCALE, "lambda_ngf": 100.0}, "ngf"),
    "fsesim": ({"generator": RESNET, "discriminator": PATCHGAN, "feature_channels": (8, 16), "num_patches": 64}, "spatial"),
    "lsesim": ({"variant": "lsesim", "generator": RESNET, "discriminator": PATCHGAN, "feature_channels": (8, 16),
                "num_patches": 64}, "features"),
    "unit": ({"generator": {"channels": 8, "num_res_blocks": 2}, "discriminator": MULTISCALE}, "recon"),
    "unit_gmm": ({"prior_type": "gaussian_mixture", "generator": {"channels": 8, "num_res_blocks": 2, "num_components": 4},
                  "discriminator": MULTISCALE}, "recon"),
}
METHOD_OF = {"fastcut": "cut", "fsesim": "sesim", "lsesim": "sesim", "unit_gmm": "unit"}


@pytest.fixture
def tiny():
    """``tiny(variant) -> (method name, kwargs, term)``."""

    def get(variant: str) -> tuple[str, dict, str]:
        kwargs, term = TINY[variant]
        return METHOD_OF.get(variant, variant), dict(kwargs), term

    return get
