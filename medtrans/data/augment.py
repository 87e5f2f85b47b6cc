"""torchio augmentation of the training patches, reproducible batch by batch.

A training domain may carry a torchio transform: ``TrainStream(..., transform_a=tio.Compose([...]))``, a bundle's
``transform_a`` (``_target_: torchio.RandomAffine``...) or ``medtrans train --augment-a JSON``. It runs in the loader,
on each patch as it is cut (in the prefetch thread when ``prefetch > 0``).

**Where it applies: the patch cut with a margin, transformed, and cropped back.** A rotation, scaling, translation,
elastic deformation or motion of the bare patch pulls in voxels from outside it, which the patch does not hold: torchio
fills them with the patch's minimum, so rotated patches would carry dark wedges in their corners and straight
artificial edges across the anatomy, which a discriminator picks up at once. So each patch is cut with a margin just
wide enough for the transform drawn for it, computed from its drawn parameters (for an affine map ``x → A x + t`` of
the patch's half extent ``h``, ``|A - I| h + |t|`` per axis, plus one voxel for interpolation; the largest control
point displacement for an elastic deformation; the largest of the rigid motions for motion), transformed whole, and
cropped back: every voxel of the patch is what the transform makes of the volume itself (only voxels beyond the
volume's edge are filled, with the region's minimum). The region shrinks after each transform to what the next ones
need, so intensity transforms after the last spatial one work on the patch alone; motion, ghosting and spikes are
simulated over the field of view they are given. The alternative, transforming the bare patch, is cheaper by the
margin's volume (about 2.4 times the patch for ``RandomAffine(scales=0.1, degrees=10, translation=4)`` on 64³
patches): benchmarks/augment.py measures the cost (docs/training.md#augmentation).

**Intensities.** The transforms see the patch as ``(x + 1) / 2``, the normalised intensities as a non-negative
signal with the background at 0 (torchio's transforms assume one: a bias field multiplies the signal, a gamma raises
it), and the result is mapped back and, when the patch lay in [-1, 1] (every mapping but plain z-scoring), clipped to
it. Lengths torchio takes in mm (translations, displacements, blur widths) are voxels of the training grid.

**Reproducibility.** torchio draws its random parameters from torch's global generator, and its ``Transform.__call__``
draws from it even for ``p=1``; the training step draws from the same generator at the same time in the main thread,
so calling torchio's random transforms in the prefetch thread would make both the batches and the training step depend
on thread timing. Instead, each supported random transform's parameters are drawn here with torchio's distributions
from a NumPy generator spawned from the batch's generator (spawning does not advance it, so the patches are cut where
the same stream without augmentation cuts them), and applied with torchio's deterministic counterpart (``RandomAffine``
→ ``Affine``, ``RandomGamma`` → ``Gamma``...) through its ``apply_transform``. Noise is drawn from a private
``torch.Generator``. Nothing here touches a global generator, so batch ``i`` stays a function of ``(seed, rank, i)``.

**Paired data** (pix2pix): spatial transforms (``Affine``, ``ElasticDeformation``, ``Flip`` and their random versions)
of either domain's recipe move A and B together, with one draw; intensity transforms apply to their own domain.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio

from medtrans import defaults
from medtrans.errors import InputError, all_finite

__all__ = ["Augment", "parse_augment"]

_SPATIAL = (tio.Affine, tio.ElasticDeformation, tio.Flip)
_FIXED = (*_SPATIAL, tio.Motion, tio.Ghosting, tio.Spike, tio.BiasField, tio.Blur, tio.Gamma)
_RAS = tio.ScalarImage(tensor=torch.zeros(1, 1, 1, 1))  # identity affine: resolves axis names such as "LR"


class _Noise(tio.IntensityTransform):
    """Additive Gaussian noise from a private generator (torchio's ``Noise`` seeds torch's global one)."""

    def __init__(self, mean: float, std: float, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean, self.std, self.seed = mean, std, seed

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        generator = torch.Generator().manual_seed(self.seed)
        for image in self.get_images(subject):
            image.set_data(image.data + torch.randn(image.data.shape, generator=generator) * self.std + self.mean)
        return subject


class _BiasField(tio.BiasField):
    """torchio's bias field, summed axis by axis (torchio evaluates every polynomial term on the whole grid)."""

    @staticmethod
    def generate_bias_field(data: Any, order: int, coefficients: Sequence[float]) -> np.ndarray:
        powers = []
        for n in data.shape[1:]:
            coordinates = np.arange(-n / 2, n / 2) + 0.5  # torchio's grid, in [-1, 1]
            coordinates = coordinates / coordinates.max() if coordinates.max() > 0 else coordinates
            powers.append(coordinates[:, None] ** np.arange(order + 1))
        terms = np.zeros((order + 1,) * 3)
        exponents = [(x, y, z) for x in range(order + 1) for y in range(order + 1 - x)
                     for z in range(order + 1 - x - y)]
        for (x, y, z), coefficient in zip(exponents, coefficients):
            terms[x, y, z] = coefficient
        return np.exp(np.einsum("ijk,ai,bj,ck->abc", terms, *powers, optimize=True)).astype(np.float32)


# -- parameters drawn as torchio draws them, from a NumPy generator ------------------------------------------------
def _uniform3(gen: np.random.Generator, sextet: Sequence[float]) -> list[float]:
    return [float(gen.uniform(a, b)) for a, b in zip(sextet[::2], sextet[1::2])]


def _axes(axes: Sequence[int | str]) -> list[int]:
    return sorted({3 + _RAS.axis_name_to_index(a) if isinstance(a, str) else int(a) for a in axes})


def _affine(t: tio.RandomAffine, gen: np.random.Generator, thin: int | None) -> tio.Transform:
    scales, degrees, translation = _uniform3(gen, t.scales), _uniform3(gen, t.degrees), _uniform3(gen, t.translation)
    if t.isotropic:
        scales = [scales[0]] * 3
    if thin is not None:  # 2D slices: rotation about the slice normal, scaling and translation within the slice
        degrees = [d if i == thin else 0.0 for i, d in enumerate(degrees)]
        scales[thin], translation[thin] = 1.0, 0.0
    return tio.Affine(scales, degrees, translation, default_pad_value=t.default_pad_value,
                      image_interpolation=t.image_interpolation)


def _elastic(t: tio.RandomElasticDeformation, gen: np.random.Generator, thin: int | None) -> tio.Transform:
    field = (gen.random((*t.num_control_points, 3)) - 0.5) * 2 * np.asarray(t.max_displacement, dtype=float)
    for i in range(t.num_locked_borders):  # the borders torchio locks (on its first two axes)
        field[i, :] = field[-1 - i, :] = 0
        field[:, i] = field[:, -1 - i] = 0
    largest = list(t.max_displacement)
    if thin is not None:
        field[..., thin], largest[thin] = 0, 0.0
    return tio.ElasticDeformation(control_points=field, max_displacement=tuple(largest),
                                  image_interpolation=t.image_interpolation)


def _flip(t: tio.RandomFlip, gen: np.random.Generator, thin: int | None) -> tio.Transform | None:
    hits = gen.random(3) < t.flip_probability
    axes = tuple(a for a in _axes(t.axes) if hits[a])
    return tio.Flip(axes=axes) if axes else None


def _motion(t: tio.RandomMotion, gen: np.random.Generator, thin: int | None) -> tio.Transform:
    n = t.num_transforms
    degrees, translation = gen.uniform(*t.degrees_range, (n, 3)), gen.uniform(*t.translation_range, (n, 3))
    if thin is not None:
        degrees[:, [i for i in range(3) if i != thin]] = 0
        translation[:, thin] = 0
    step = 1 / (n + 1)
    times = np.arange(1, n + 1) * step + gen.uniform(-0.3 * step, 0.3 * step, n)
    return tio.Motion(degrees=degrees, translation=translation, times=times, image_interpolation=t.image_interpolation)


def _ghosting(t: tio.RandomGhosting, gen: np.random.Generator, thin: int | None) -> tio.Transform | None:
    axes = [a for a in _axes(t.axes) if a != thin]
    if not axes:
        return None
    low, high = (int(v) for v in t.num_ghosts_range)
    num_ghosts, axis = int(gen.integers(low, high + 1)), axes[int(gen.integers(len(axes)))]
    intensity = float(gen.uniform(*t.intensity_range))
    restore = None if t.restore is None else float(gen.uniform(*t.restore))
    return tio.Ghosting(num_ghosts=num_ghosts, axis=axis, intensity=intensity, restore=restore)


def _spike(t: tio.RandomSpike, gen: np.random.Generator, thin: int | None) -> tio.Transform:
    low, high = (int(v) for v in t.num_spikes_range)
    count = int(gen.integers(low, high + 1))
    return tio.Spike(spikes_positions=gen.random((count, 3)), intensity=float(gen.uniform(*t.intensity_range)))


def _bias_field(t: tio.RandomBiasField, gen: np.random.Generator, thin: int | None) -> tio.Transform:
    order = t.order
    terms = sum(order + 1 - x - y for x in range(order + 1) for y in range(order + 1 - x))
    return _BiasField(coefficients=gen.uniform(*t.coefficients_range, terms).tolist(), order=order)


def _blur(t: tio.RandomBlur, gen: np.random.Generator, thin: int | None) -> tio.Transform:
    return tio.Blur(std=tuple(_uniform3(gen, t.std_ranges)))


def _gamma(t: tio.RandomGamma, gen: np.random.Generator, thin: int | None) -> tio.Transform:
    return tio.Gamma(gamma=float(np.exp(gen.uniform(*t.log_gamma_range))))


def _noise(t: tio.RandomNoise, gen: np.random.Generator, thin: int | None) -> tio.Transform:
    return _Noise(float(gen.uniform(*t.mean_range)), float(gen.uniform(*t.std_range)), int(gen.integers(2**63)))


_DRAW = {tio.RandomAffine: _affine, tio.RandomElasticDeformation: _elastic, tio.RandomFlip: _flip,
         tio.RandomMotion: _motion, tio.RandomGhosting: _ghosting, tio.RandomSpike: _spike,
         tio.RandomBiasField: _bias_field, tio.RandomBlur: _blur, tio.RandomGamma: _gamma, tio.RandomNoise: _noise}


def _draw(t: tio.Transform, gen: np.random.Generator, thin: int | None) -> list[tio.Transform]:
    """The deterministic transforms one application of ``t`` amounts to (its probability ``p`` included)."""
    if not gen.random() < t.probability:
        return []
    if isinstance(t, tio.Compose):
        return [op for child in t.transforms for op in _draw(child, gen, thin)]
    if isinstance(t, tio.OneOf):
        weights = np.array(list(t.transforms_dict.values()), dtype=float)
        return _draw(list(t.transforms_dict)[gen.choice(len(weights), p=weights / weights.sum())], gen, thin)
    draw = _DRAW.get(type(t))
    op = draw(t, gen, thin) if draw is not None else copy.copy(t)
    return [op] if op is not None else []


def _check(t: Any, option: str) -> None:
    """Refuse, naming ``option``, what this module cannot apply reproducibly."""
    if type(t) in (tio.Compose, tio.OneOf):
        for child in t.transforms if isinstance(t, tio.Compose) else t.transforms_dict:
            _check(child, option)
    elif type(t) not in _DRAW and type(t) not in _FIXED:
        names = ", ".join(defaults.AUGMENT_TRANSFORMS)
        raise InputError(option, f"{type(t).__module__}.{type(t).__name__} is not supported; medtrans applies "
                                 f"torchio's {names}, in Compose and OneOf")
    name = type(t).__name__
    if t.include or t.exclude or t.keep:
        raise InputError(option, f"{name}: include, exclude and keep are not used here (a domain's transform "
                                 "applies to that domain's image)")
    if getattr(t, "center", "image") != "image":
        raise InputError(option, f"{name}: center must be 'image' (rotations and scalings about the patch centre)")
    if isinstance(t, _FIXED) and any(isinstance(getattr(t, a, None), dict) for a in t.args_names):
        raise InputError(option, f"{name}: parameters per image name (dicts) are not used here")


# -- the margin a transform needs --------------------------------------------------------------------------------
def _linear_reach(transform: sitk.Transform, half: np.ndarray) -> np.ndarray:
    """Per axis, how far beyond a box of half extent ``half`` (about the origin) ``transform`` samples, plus one
    voxel for interpolation: ``|A - I| half + |t| + 1`` for ``x → A x + t``."""
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.stack([np.array(transform.TransformPoint(tuple(e))) - origin for e in np.eye(3).tolist()], axis=1)
    return np.abs(matrix - np.eye(3)) @ half + np.abs(origin) + 1


def _reach(op: tio.Transform, half: np.ndarray) -> np.ndarray:
    """How far (voxels, per axis) beyond a centred box of half extent ``half`` ``op`` reads to fill that box."""
    if isinstance(op, tio.Affine):  # the map torchio resamples with: the inverse of scaling then rotation
        scaling = tio.Affine._get_scaling_transform(op.scales)
        rotation = tio.Affine._get_rotation_transform(op.degrees, op.translation)
        return _linear_reach(sitk.CompositeTransform([scaling, rotation]).GetInverse(), half)
    if isinstance(op, tio.Motion):
        reach = np.zeros(3)
        for degrees, translation in zip(np.asarray(op.degrees, float), np.asarray(op.translation, float)):
            motion = sitk.Euler3DTransform()
            motion.SetRotation(*np.radians(degrees).tolist())
            motion.SetTranslation(translation.tolist())
            reach = np.maximum(reach, _linear_reach(motion, half))
        return reach
    if isinstance(op, tio.ElasticDeformation):
        return np.abs(np.asarray(op.control_points, float)).reshape(-1, 3).max(0) + 1
    return np.zeros(3)


def _cut(image: Any, region: Sequence[slice], margin: Sequence[int]) -> torch.Tensor:
    """``image[region]`` widened by ``margin`` voxels each side, as a float32 copy; voxels beyond the volume's edge
    take the minimum of those within. ``image`` is a tensor or an array-like that slicing reads (e.g. from disk)."""
    low = [s.start - m for s, m in zip(region, margin)]
    size = [s.stop - s.start + 2 * m for s, m in zip(region, margin)]
    inside = tuple(slice(max(lo, 0), min(lo + n, dim)) for lo, n, dim in zip(low, size, image.shape))
    data = image[inside]
    if isinstance(data, torch.Tensor):
        data = data.to(torch.float32, copy=True)
    else:
        data = torch.tensor(np.asarray(data, dtype=np.float32))
    if list(data.shape) == size:
        return data
    out = torch.full(size, float(data.min()))
    out[tuple(slice(s.start - lo, s.stop - lo) for s, lo in zip(inside, low))] = data
    return out


class Augment:
    """Cuts a patch and applies its domain's torchio transform, reproducibly (see the module's description).

    Args:
        transform_a: domain A's torchio transform (a ``Compose``, ``OneOf`` or single transform, or a list of them),
            or ``None``.
        transform_b: domain B's.

    Raises:
        InputError: naming ``transform_a`` or ``transform_b``, for a transform this module does not apply.
    """

    def __init__(self, transform_a: Any = None, transform_b: Any = None) -> None:
        self.recipes: dict[str, tio.Transform] = {}
        for key, transform in (("a", transform_a), ("b", transform_b)):
            if transform is not None:
                recipe = tio.Compose(list(transform)) if isinstance(transform, (list, tuple)) else transform
                _check(recipe, f"transform_{key}")
                self.recipes[key] = recipe

    def __call__(self, images: Mapping[str, Any], region: Sequence[slice],
                 rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """The patches ``images[key][region]`` (one subject's images: one key, or ``"a"`` and ``"b"`` when paired),
        transformed with parameters drawn from a generator spawned from ``rng`` (which is not advanced)."""
        gen = rng.spawn(1)[0]
        size = np.array([s.stop - s.start for s in region])
        thin = int(np.argmin(size)) if size.min() == 1 else None
        plan = []
        for key, recipe in self.recipes.items():
            if key in images:
                for op in _draw(recipe, gen, thin):
                    op.include, op.exclude = [k for k in images if k == key or isinstance(op, _SPATIAL)], None
                    plan.append(op)
        extents = [size / 2]  # the box each transform must fill, from the patch back to the first transform's input
        for op in reversed(plan):
            extents.insert(0, extents[0] + _reach(op, extents[0]))
        margins = [np.ceil(e - size / 2 - 1e-6).astype(int) for e in extents]
        for margin in margins if thin is not None else ():
            margin[thin] = 0  # 2D slices: transforms within the slice
        cut = {k: _cut(t, region, margins[0]) for k, t in images.items()}
        if not plan:
            return cut
        subject = tio.Subject({k: tio.ScalarImage(tensor=((v + 1) / 2)[None]) for k, v in cut.items()})
        for op, before, after in zip(plan, margins, margins[1:]):
            subject = op.apply_transform(subject)
            if (before != after).any():  # what the next transforms need: the rest work on less
                crop = (slice(None), *(slice(b - a, b + a + n) for b, a, n in zip(before, after, size.tolist())))
                for image in subject.get_images(intensity_only=False):
                    image.set_data(image.data[crop].contiguous())
        out = {}
        for key, source in cut.items():
            patch = subject[key].data[0].to(torch.float32) * 2 - 1
            out[key] = (patch.clamp(-1, 1) if source.min() >= -1 and source.max() <= 1 else patch).contiguous()
        return out


def parse_augment(text: str | None, option: str) -> tio.Compose | None:
    """A domain's transform from the command line: a JSON list of torchio transforms, each a name (``"RandomGamma"``)
    or an object with a name and keyword arguments (``{"name": "RandomAffine", "degrees": 10}``); ``None`` for none.

    Only the torchio classes named in :data:`medtrans.defaults.AUGMENT_TRANSFORMS` are built (a name is looked up in
    that list, never imported), with the keyword arguments their constructor takes, and ``p``.

    Raises:
        InputError: naming ``option``, in one line, for broken JSON, an unknown name or argument, or a value torchio
            refuses.
    """
    if text is None:
        return None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(option, f"{text!r} is not valid JSON ({err.msg} at character {err.pos})") from None
    items = [items] if isinstance(items, (str, dict)) else items
    if not isinstance(items, list) or not items or not all_finite(items):
        raise InputError(option, "expected a JSON list of torchio transforms of finite values, such as "
                                 f"'[{{\"name\": \"RandomAffine\", \"degrees\": 10}}, \"RandomGamma\"]', got {text!r}")
    transforms = []
    for item in items:
        spec = {"name": item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InputError(option, f"each transform is a name or an object with a \"name\", got {json.dumps(item)}")
        name, kwargs = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        if name not in defaults.AUGMENT_TRANSFORMS:
            close = difflib.get_close_matches(name, defaults.AUGMENT_TRANSFORMS, n=1)
            names = ", ".join(defaults.AUGMENT_TRANSFORMS)
            hint = f"did you mean {close[0]!r}?" if close else f"medtrans applies {names}"
            raise InputError(option, f"{name!r} is not a supported torchio transform; {hint}")
        cls = getattr(tio, name)
        known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")] + ["p"]
        for key in kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(known)}"
                raise InputError(option, f"{name} has no argument {key!r}; {hint}")
        try:
            transforms.append(cls(**kwargs))
        except (TypeError, ValueError, AssertionError) as err:
            raise InputError(option, f"{name}: {' '.join(str(err).split())}") from None
    recipe = tio.Compose(transforms)
    _check(recipe, option)
    return recipe
