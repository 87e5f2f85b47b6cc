"""torchio augmentation of the training patches: applied where the plain stream cuts, reproducible whatever the threads
do, one spatial draw for both images of a pair, a margin that makes the patch what the transform makes of the volume,
and one-line refusals of what cannot be applied."""

import itertools

import numpy as np
import pytest
import torch
import torchio as tio

from medtrans.data import ImageRecord, TrainStream
from medtrans.data.augment import Augment, parse_augment
from medtrans.errors import InputError

GAMMA = float(np.exp(0.5))
RECIPE = [tio.RandomAffine(scales=0.1, degrees=10, translation=2), tio.RandomBiasField(coefficients=0.3),
          tio.RandomGamma(log_gamma=0.3), tio.RandomNoise(std=(0, 0.02))]


@pytest.fixture(scope="module")
def records(synthetic_brains):
    return {"t1": ImageRecord("t1", synthetic_brains / "A/a00.nii.gz"),
            "t2": ImageRecord("t2", synthetic_brains / "B/b00.nii.gz")}


def _stream(records, patch=(24, 24, 24), seed=0, prefetch=0, paired=False, **transforms):
    b = ImageRecord("t1", records["t1"].image) if paired else records["t2"]
    return TrainStream([records["t1"]], [b], {"patch_size": patch, "num_workers": 0, "prefetch": prefetch},
                       batch_size=2, seed=seed, paired=paired, **transforms)


def _take(stream, n, between=lambda: None):
    out = []
    for batch in itertools.islice(stream, n):
        out.append(batch)
        between()
    return out


def _same(x, y):
    return all(torch.equal(a[k], b[k]) for a, b in zip(x, y) for k in "ab")


def test_batches_stay_a_function_of_the_seed_while_the_step_draws(records):
    """The prefetch thread augments while the main thread draws from torch's generator: neither disturbs the other."""
    plain = _take(_stream(records, transform_a=RECIPE, transform_b=RECIPE), 4)
    torch.manual_seed(1)
    threaded = _stream(records, prefetch=4, transform_a=RECIPE, transform_b=RECIPE)
    step_draws = _take(threaded, 4, between=lambda: [torch.rand(1000) for _ in range(50)])
    threaded.close()
    after_stream = torch.get_rng_state()
    torch.manual_seed(1)
    for _ in range(4 * 50):
        torch.rand(1000)
    assert _same(plain, step_draws)
    assert torch.equal(after_stream, torch.get_rng_state())  # the step's draws are its own
    other = _take(_stream(records, seed=1, transform_a=RECIPE, transform_b=RECIPE), 4)
    assert not _same(plain, other)


def test_batches_touch_no_global_generator(records):
    stream = _stream(records, transform_a=RECIPE + [tio.RandomMotion(), tio.RandomFlip()], transform_b=RECIPE)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    stream.batch(0)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert all(np.array_equal(a, b) for a, b in zip(numpy_state, np.random.get_state()))


def test_resume_at_is_exact(records):
    one_go = _take(_stream(records, transform_a=RECIPE), 6)
    resumed = _stream(records, transform_a=RECIPE)
    _take(resumed, 2)
    resumed.resume_at(4)
    assert _same(one_go[4:], _take(resumed, 2))


def test_patches_are_cut_where_the_plain_stream_cuts_then_transformed(records):
    """A fixed gamma (torchio's RandomGamma with a one-point range) on the patch seen as (x + 1) / 2."""
    plain = _take(_stream(records), 3)
    gamma = _take(_stream(records, transform_a=tio.RandomGamma(log_gamma=(0.5, 0.5))), 3)
    for x, y in zip(plain, gamma):
        assert torch.equal(x["b"], y["b"])  # domain B carries no transform
        assert not torch.allclose(x["a"], y["a"], atol=1e-2)
        assert torch.allclose(y["a"], 2 * ((x["a"] + 1) / 2) ** GAMMA - 1, atol=1e-5)


@pytest.mark.parametrize("patch", [(24, 24, 24), (40, 32, 1)])
def test_paired_images_share_the_spatial_draw(records, patch):
    """A and B are one volume: after an affine map of both and a gamma of A only, A is B's gamma."""
    spatial = tio.RandomAffine(scales=0.15, degrees=20, translation=3)
    plain = _take(_stream(records, patch, paired=True), 2)
    batches = _take(_stream(records, patch, paired=True,
                            transform_a=tio.Compose([spatial, tio.RandomGamma(log_gamma=(0.5, 0.5))])), 2)
    for x, y in zip(plain, batches):
        assert y["a"].shape == x["a"].shape == (2, 1, *[s for s in patch if s > 1])
        assert not torch.allclose(x["b"], y["b"], atol=1e-2)  # moved
        assert torch.allclose(y["a"], 2 * ((y["b"] + 1) / 2) ** GAMMA - 1, atol=1e-5)


def test_the_margin_makes_the_patch_what_the_transform_makes_of_the_volume():
    volume = torch.rand(60, 70, 64) * 2 - 1
    region = (slice(20, 36), slice(25, 41), slice(20, 36))
    rng = np.random.default_rng(0)
    shifted = Augment(tio.Affine(1, 0, (0, 5, 0)))({"a": volume}, region, rng)["a"]
    assert torch.equal(shifted, volume[20:36, 20:36, 20:36])  # five voxels from beyond the patch, not padding
    rotation = tio.Affine((0.9, 1.0, 1.1), (10, 15, 30), (2, -3, 1))
    out = Augment(rotation)({"a": volume}, region, rng)["a"]
    wide = tio.Subject(a=tio.ScalarImage(tensor=((volume[5:51, 10:56, 5:51] + 1) / 2)[None]))  # 15 voxels of margin
    reference = (rotation.apply_transform(wide)["a"].data[0][15:31, 15:31, 15:31] * 2 - 1).clamp(-1, 1)
    assert torch.equal(out, reference)
    bare = rotation.apply_transform(tio.Subject(a=tio.ScalarImage(tensor=((volume[region] + 1) / 2)[None])))
    assert not torch.allclose(bare["a"].data[0] * 2 - 1, reference, atol=0.1)  # corners padded: what the margin avoids
    again = Augment(tio.RandomAffine(degrees=20))({"a": volume}, region, np.random.default_rng(1))["a"]
    assert not torch.equal(again, Augment(tio.RandomAffine(degrees=20))({"a": volume}, region, rng)["a"])


def test_the_bias_field_is_torchios():
    """Drawn bias fields are summed axis by axis; the field is torchio's own."""
    from medtrans.data.augment import _BiasField

    coefficients = np.random.default_rng(0).uniform(-0.5, 0.5, 20).tolist()
    for shape in ((1, 9, 12, 7), (1, 16, 1, 10)):
        ours = _BiasField.generate_bias_field(torch.zeros(shape), 3, coefficients)
        assert np.allclose(ours, tio.BiasField.generate_bias_field(torch.zeros(shape), 3, coefficients), rtol=1e-6)


@pytest.mark.parametrize("text, names", [
    ('[{"name": "RandomAfine"}]', ("--augment-a", "'RandomAfine' is not a supported torchio", "'RandomAffine'")),
    ('[{"name": "RandomAffine", "degree": 3}]', ("--augment-a", "no argument 'degree'", "did you mean 'degrees'")),
    ('["RandomGamma", {"name": "RandomGamma", "log_gamma": "x"}]', ("--augment-a", "RandomGamma:")),
    ('["Lambda"]', ("'Lambda' is not a supported", "RandomMotion")),
    ('[{"name": "RandomAffine", "center": "origin"}]', ("center must be 'image'",)),
    ('{"name": "RandomAffine"', ("not valid JSON",)),
    ("[]", ("expected a JSON list",)),
])
def test_bad_recipes_are_refused_in_one_line(text, names):
    with pytest.raises(InputError) as err:
        parse_augment(text, "--augment-a")
    assert "\n" not in str(err.value) and all(n in str(err.value) for n in names), str(err.value)


def test_python_refuses_before_reading():
    with pytest.raises(InputError, match="transform_a: torchio.transforms.lambda_transform.Lambda is not supported"):
        TrainStream("missing_a", "missing_b", transform_a=tio.Compose([tio.Lambda(lambda x: x)]))
    recipe = parse_augment('[{"name": "RandomAffine", "degrees": [-5, 5], "p": 0.5}, "RandomBiasField"]', "--augment-a")
    assert [type(t).__name__ for t in recipe.transforms] == ["RandomAffine", "RandomBiasField"]
    assert recipe.transforms[0].probability == 0.5
