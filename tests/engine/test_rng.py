import random

import torch

from medtrans.engine.rng import get_rng_state, set_rng_state


def test_state_round_trip_is_weights_only_loadable(tmp_path):
    state = get_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = [torch.rand(1).item(), random.random()]
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert [torch.rand(1).item(), random.random()] == expected
