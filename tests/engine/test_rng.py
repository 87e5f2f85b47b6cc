import random

import torch

from medtrans.engine.rng import RNGStream, get_rng_state, set_rng_state


def test_stream_is_independent_of_draws_outside_it():
    def draws(extra: int) -> list[float]:
        stream = RNGStream(7)
        out = []
        for _ in range(3):
            with stream.active():
                out.append(torch.rand(1).item())
            torch.rand(extra)  # the training step drawing a varying amount
            random.random()
        return out

    assert draws(1) == draws(50)


def test_state_round_trip_is_weights_only_loadable(tmp_path):
    state = get_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = [torch.rand(1).item(), random.random()]
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert [torch.rand(1).item(), random.random()] == expected
