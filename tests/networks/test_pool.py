import torch

from medtrans.networks import ImagePool


def test_pool_fills_then_mixes_history_and_round_trips_state():
    torch.manual_seed(0)
    pool = ImagePool(pool_size=4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returns the input
    seen_old = False
    for step in range(20):
        out = pool.query(torch.full((2, 1, 1, 1), 100.0 + step))
        seen_old |= bool((out < 100).any())
    assert seen_old and len(pool.images) == 4
    clone = ImagePool(pool_size=4)
    clone.load_state_dict(pool.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(clone.images, pool.images))
    assert torch.equal(ImagePool(0).query(first), first)
