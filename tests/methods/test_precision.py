"""Every method trains under every autocast precision, with the ops CUDA autocast refuses failing here too."""

import pytest
import torch

from medtrans.methods import build_method
from medtrans.precision import BF16_MIN_VOXELS, resolve_precision
from medtrans.utils import seed_everything
from tests.losses.test_adversarial import CudaAutocastRules
from tests.methods.conftest import TINY


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("variant", sorted(TINY))
def test_training_step_is_safe_under_autocast(variant, dims, precision, tiny):
    name, kwargs, _ = tiny(variant)
    seed_everything(0)
    method = build_method(name, spatial_dims=dims, precision=precision, **kwargs).setup("cpu")
    assert method.amp == precision
    shape = (2, 1, 32, 32) if dims == 2 else (1, 1, 24, 24, 24)
    batch = {"a": torch.rand(shape) * 2 - 1, "b": torch.rand(shape) * 2 - 1}
    with CudaAutocastRules():
        losses = method.training_step(batch)
    assert losses and all(isinstance(v, float) and v == v for v in losses.values()), losses


def test_auto_precision_rule():
    assert resolve_precision("auto", "cpu", 10**9) == "fp32"
    assert resolve_precision("bf16", "cpu", 1) == "bf16"
    assert BF16_MIN_VOXELS == 96**3
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("tf32", "cpu")


@pytest.mark.slow
def test_compiled_step_trains_and_checkpoints_like_the_eager_one(tiny):
    name, kwargs, _ = tiny("nec")
    batch = {"a": torch.rand(2, 1, 32, 32) * 2 - 1, "b": torch.rand(2, 1, 32, 32) * 2 - 1}
    states = {}
    for compile_type in ("none", "default"):
        seed_everything(0)
        method = build_method(name, spatial_dims=2, compile_type=compile_type, **kwargs).setup("cpu")
        losses = [method.training_step(batch) for _ in range(3)]
        states[compile_type] = (losses, method.state_dict())
    (eager, eager_state), (compiled, compiled_state) = states["none"], states["default"]
    assert eager_state.keys() == compiled_state.keys()  # compiled in place: checkpoints keep their keys
    for a, b in zip(eager, compiled):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-3 * max(1.0, abs(a[k])) for k in a), (a, b)
    with pytest.raises(ValueError, match="compile_type must be one of"):
        build_method(name, spatial_dims=2, compile_type="fast", **kwargs)


@pytest.mark.parametrize("compile_type", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_compile_modes_are_refused_up_front(tiny, compile_type):
    name, kwargs, _ = tiny("cyclegan")
    with pytest.raises(ValueError, match=f"'{compile_type}' captures CUDA graphs.*use 'default'"):
        build_method(name, spatial_dims=3, compile_type=compile_type, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("variant", sorted(TINY))
def test_every_method_trains_compiled(tiny, monkeypatch, variant, spatial_dims):
    """Every method's compiled step is traced by dynamo and AOT autograd (the inductor backend's front end: the
    graph breaks, guards and backward graphs of the real path; its C++ code generation is the test above) and gives
    the eager step's losses."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="aot_eager", **kw))
    name, kwargs, _ = tiny(variant)
    side = (24, 24, 24) if spatial_dims == 3 else (32, 32)
    batch = {"a": torch.rand(2, 1, *side) * 2 - 1, "b": torch.rand(2, 1, *side) * 2 - 1}
    losses = {}
    for compile_type in ("none", "default"):
        seed_everything(0)
        method = build_method(name, spatial_dims=spatial_dims, compile_type=compile_type, **kwargs).setup("cpu")
        losses[compile_type] = [method.training_step(batch) for _ in range(2)]
    for eager, compiled in zip(losses["none"], losses["default"]):
        assert eager.keys() == compiled.keys()
        assert all(abs(eager[k] - compiled[k]) < 1e-3 * max(1.0, abs(eager[k])) for k in eager), (eager, compiled)
