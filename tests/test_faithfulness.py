import pytest
import torch

from medtrans.faithfulness import faithfulness_maps
from medtrans.losses import NGFLoss


def test_zero_for_faithful_outputs_including_contrast_inversion(brain_t1_t2):
    t1, _ = brain_t1_t2
    for output in (t1, -t1, 0.5 - t1):
        maps = faithfulness_maps(t1, output)
        assert maps["invented"].abs().max() < 1e-5 and maps["erased"].abs().max() < 1e-5
    assert torch.allclose(faithfulness_maps(t1, t1)["ngf"], NGFLoss(3, reduction="none")(t1, t1), atol=1e-6)


def test_a_painted_blob_shows_as_invented_not_erased(brain_t1_t2):
    t1, t2 = brain_t1_t2
    zz, yy, xx = torch.meshgrid(*(torch.arange(48.0),) * 3, indexing="ij")
    r = ((zz - 24) ** 2 + (yy - 20) ** 2 + (xx - 26) ** 2).sqrt()
    rim = (r > 4.5) & (r < 6.5)
    blob = t2 + 0.8 * (r < 5.5).float()  # a bright "hallucinated lesion" added to the real T2
    real, fake = faithfulness_maps(t1, t2), faithfulness_maps(t1, blob)
    gain_invented = fake["invented"][0, 0][rim].mean() - real["invented"][0, 0][rim].mean()
    gain_erased = fake["erased"][0, 0][rim].mean() - real["erased"][0, 0][rim].mean()
    # measured at ε = 0.15 on the rim: invented 0.133 → 0.413, erased 0.042 → 0.148 (the blob's edge masks the source's);
    # on lesjak patient07's block: invented 0.157 → 0.409, erased 0.174 → 0.270
    assert gain_invented > 0.15 and gain_invented > 2 * gain_erased


def test_a_blurred_region_shows_as_erased(brain_t1_t2):
    t1, _ = brain_t1_t2
    flat = t1.clone()
    flat[..., 14:34, 14:34, 14:34] = t1[..., 14:34, 14:34, 14:34].mean()  # structure wiped out
    maps = faithfulness_maps(t1, flat)
    inside = (..., slice(16, 32), slice(16, 32), slice(16, 32))
    assert maps["erased"][inside].mean() > 0.2
    assert maps["invented"][inside].mean() < 1e-3


def test_maps_are_bounded(brain_t1_t2):
    t1, t2 = brain_t1_t2
    for m in faithfulness_maps(t1, t2).values():
        assert m.min() >= 0 and m.max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="shapes differ"):
        faithfulness_maps(t1, t2[..., :40])
