import pytest
import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from torch.overrides import TorchFunctionMode

from medtrans.losses import AdversarialLoss


class CudaAutocastRules(TorchFunctionMode):
    """Fails like CUDA autocast does: binary_cross_entropy on probabilities is refused inside an autocast region.

    CPU autocast allows it, which is how the bug reached a GPU untested; under this mode a CPU run fails the same way.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.binary_cross_entropy and torch.is_autocast_enabled("cpu"):
            raise RuntimeError("torch.nn.functional.binary_cross_entropy is unsafe to autocast (as on CUDA)")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("criterion", ["least_squares", "bce", "hinge"])
@pytest.mark.parametrize("real,for_discriminator", [(True, True), (False, True), (True, False)])
def test_values_equal_monai_in_fp32(criterion, real, for_discriminator):
    torch.manual_seed(0)
    logits = [torch.randn(2, 1, 6, 6) * 3, torch.randn(2, 1, 3, 3) * 3]  # two scales
    ours = AdversarialLoss(criterion)(logits, target_is_real=real, for_discriminator=for_discriminator)
    monai = PatchAdversarialLoss(criterion=criterion, no_activation_leastsq=True)(
        logits, target_is_real=real, for_discriminator=for_discriminator)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, monai, rtol=1e-6, atol=1e-6)


def test_the_guard_catches_monai_bce_and_passes_ours_under_autocast():
    logits = torch.randn(2, 1, 6, 6, requires_grad=True)
    with CudaAutocastRules(), torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            PatchAdversarialLoss(criterion="bce")(logits, target_is_real=True, for_discriminator=True)
        loss = AdversarialLoss("bce")(logits.bfloat16(), target_is_real=True)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


def test_unknown_criterion():
    with pytest.raises(ValueError, match="criterion must be one of"):
        AdversarialLoss("wasserstein")
