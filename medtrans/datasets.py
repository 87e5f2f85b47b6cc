"""An embedded default dataset: BrainWeb-style synthetic T1w/T2w subjects built from the ICBM152 anatomy in nilearn.

Real anatomy — the ICBM 2009a grey- and white-matter probability maps shipped inside the nilearn wheel — is turned into
T1- and T2-weighted images with the spin-echo signal equation per tissue class, partial-volume mixed:

    S = Σ_k p_k · PD_k · (1 − exp(−TR / T1_k)) · exp(−TE / T2_k)

with CSF as the rest of the brain envelope. Each synthetic subject gets its own smooth random deformation (a few mm),
tissue parameters jittered by a few percent, a smooth multiplicative bias field and Rician noise, so subjects differ
the way scans do. Brains are skull-stripped (background 0), like the lesjak-ms-mni data of the benchmarks.
"""

from __future__ import annotations

import importlib.resources
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medtrans.errors import MedtransError
from medtrans.io import atomic_write

__all__ = ["SEQUENCES", "TISSUES", "add_motion", "load_icbm152", "make_synthetic_brains", "make_synthetic_motion",
           "make_synthetic_mr_ct"]

# (PD, T1 ms, T2 ms) at 1.5 T, typical literature values
TISSUES = {"csf": (1.0, 4000.0, 2000.0), "gm": (0.8, 1000.0, 100.0), "wm": (0.65, 650.0, 80.0)}
SEQUENCES = {"t1": (500.0, 15.0), "t2": (4000.0, 100.0), "pd": (4000.0, 15.0)}  # (TR ms, TE ms)
_FILES = {"gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


def load_icbm152(voxel_mm: float = 2.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """ICBM152 2009a tissue probabilities (``gm``, ``wm``, ``csf``) resampled to ``voxel_mm``, and their affine.

    Raises:
        MedtransError: when nilearn (the ``demo`` extra) is not installed.
    """
    try:
        folder = importlib.resources.files("nilearn") / "datasets" / "data"
    except ModuleNotFoundError as err:
        raise MedtransError("the embedded demo data needs nilearn: pip install -c constraints.txt -e '.[demo]'") from err
    maps, affine = {}, None
    for tissue, name in _FILES.items():
        image = nib.load(str(folder / name))
        data = np.asarray(image.dataobj, dtype=np.float32) / 255.0
        zoom = float(image.header.get_zooms()[0]) / voxel_mm
        maps[tissue] = np.clip(ndimage.zoom(data, zoom, order=1), 0, 1)
        affine = image.affine.copy()
        affine[:3, :3] *= voxel_mm / float(image.header.get_zooms()[0])
    tissue_sum = maps["gm"] + maps["wm"]
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(tissue_sum > 0.2, iterations=2))
    brain = ndimage.binary_dilation(brain, iterations=1)
    maps["csf"] = np.clip(brain.astype(np.float32) - tissue_sum, 0, 1)
    return maps, affine


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, amplitude: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (np.abs(field).max() + 1e-12) * amplitude


def _subject(maps: dict[str, np.ndarray], rng: np.random.Generator, sequences: tuple[str, ...],
             deform_voxels: float, bias: float, noise: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    shape = maps["gm"].shape
    grid = np.indices(shape, dtype=np.float32)
    coords = grid + np.stack([_smooth_field(rng, shape, 6.0, deform_voxels) for _ in range(3)])
    warped = {k: ndimage.map_coordinates(v, coords, order=1, mode="constant") for k, v in maps.items()}
    brain = (warped["gm"] + warped["wm"] + warped["csf"]) > 0.5
    bias_field = np.exp(_smooth_field(rng, shape, 12.0, bias))
    images = {}
    for seq in sequences:
        tr, te = SEQUENCES[seq]
        signal = np.zeros(shape, np.float32)
        for tissue, (pd, t1, t2) in TISSUES.items():
            j = rng.uniform(0.95, 1.05, 3)
            signal += warped[tissue] * pd * j[0] * (1 - np.exp(-tr / (t1 * j[1]))) * np.exp(-te / (t2 * j[2]))
        signal = signal * bias_field
        sigma = noise * float(signal[brain].max())
        noisy = np.sqrt((signal + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
        images[seq] = np.where(brain, noisy * 1000.0, 0.0).astype(np.float32)
    return images, brain


def make_synthetic_brains(
    output: str | Path,
    num_a: int = 4,
    num_b: int = 4,
    num_test: int = 1,
    seed: int = 0,
    voxel_mm: float = 2.0,
    deform_voxels: float = 2.0,
    bias: float = 0.15,
    noise: float = 0.02,
) -> Path:
    """Write an unpaired T1w→T2w dataset: ``A/`` (T1w), ``B/`` (T2w, other subjects), and paired ``test/{A,B,mask}``.

    Args:
        output: folder to create.
        num_a: training subjects with a T1w volume.
        num_b: other training subjects with a T2w volume (disjoint from A's: truly unpaired).
        num_test: held-out subjects with T1w, T2w and brain mask (the ground truth for evaluation).
        seed: random seed.
        voxel_mm: isotropic voxel size.
        deform_voxels: maximum displacement of the random deformations, in voxels.
        bias: amplitude of the log bias field.
        noise: Rician noise σ as a fraction of the brightest brain signal.

    Returns:
        ``output``.
    """
    output = Path(output)
    maps, affine = load_icbm152(voxel_mm)
    rng = np.random.default_rng(seed)
    plan = [("A", "t1", f"a{i:02d}") for i in range(num_a)] + [("B", "t2", f"b{i:02d}") for i in range(num_b)]
    plan += [("test", None, f"test{i:02d}") for i in range(num_test)]
    for folder in ("A", "B", "test/A", "test/B", "test/mask"):
        (output / folder).mkdir(parents=True, exist_ok=True)

    def save(path: Path, data: np.ndarray) -> None:
        image = nib.Nifti1Image(data, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        atomic_write(path, lambda tmp: nib.save(image, tmp))

    for folder, sequence, name in plan:
        sequences = ("t1", "t2") if sequence is None else (sequence,)
        images, brain = _subject(maps, rng, sequences, deform_voxels, bias, noise)
        if sequence is not None:
            save(output / folder / f"{name}.nii.gz", images[sequence])
        else:
            save(output / "test" / "A" / f"{name}.nii.gz", images["t1"])
            save(output / "test" / "B" / f"{name}.nii.gz", images["t2"])
            save(output / "test" / "mask" / f"{name}.nii.gz", brain.astype(np.float32))
    return output


# -- MR -> CT: a head with skull and scalp, as T1w MR and as CT in HU --------------------------------------------------
HEAD_TISSUES = {"fat": (0.9, 260.0, 80.0), "bone": (0.1, 400.0, 5.0)}
"""(PD, T1 ms, T2 ms) of the scalp (fat: bright on T1w) and the skull (cortical bone: almost no signal)."""
CT_HU = {"air": -1000.0, "csf": 15.0, "gm": 40.0, "wm": 25.0, "fat": -100.0, "bone": 1000.0}
"""The CT numbers (HU) of the synthetic head's tissues."""
SKULL_MM = 6.0
"""The skull: from the brain's envelope out to this many mm; the scalp follows it out to :data:`SCALP_MM`."""
SCALP_MM = 11.0


def _head_subject(maps: dict[str, np.ndarray], voxel_mm: float, rng: np.random.Generator, deform_voxels: float,
                  bias: float, noise: float, ct_noise_hu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One subject's T1w MR, CT (HU) and head mask, on one grid: the warped ICBM152 brain inside a skull and a scalp
    grown around its envelope (the brain stem leaves the volume at its lower face, as a neck leaves a head CT)."""
    shape = maps["gm"].shape
    coords = np.indices(shape, dtype=np.float32) + np.stack([_smooth_field(rng, shape, 6.0, deform_voxels)
                                                            for _ in range(3)])
    warped = {k: ndimage.map_coordinates(v, coords, order=1, mode="constant") for k, v in maps.items()}
    brain = (warped["gm"] + warped["wm"] + warped["csf"]) > 0.5
    outside = ndimage.distance_transform_edt(~brain, sampling=voxel_mm)
    skull = (outside > 0) & (outside <= SKULL_MM)
    scalp = (outside > SKULL_MM) & (outside <= SCALP_MM)
    head = brain | skull | scalp
    fractions = {k: np.where(brain, warped[k], 0.0) for k in ("csf", "gm", "wm")}
    total = fractions["csf"] + fractions["gm"] + fractions["wm"]
    fractions["csf"] += np.where(brain, np.maximum(1.0 - total, 0.0), 0.0)  # the envelope is all tissue or CSF
    fractions["bone"], fractions["fat"] = skull.astype(np.float64), scalp.astype(np.float64)

    tr, te = SEQUENCES["t1"]
    signal = np.zeros(shape, np.float64)
    for tissue, (pd, t1, t2) in {**TISSUES, **HEAD_TISSUES}.items():
        j = rng.uniform(0.95, 1.05, 3)
        signal += fractions[tissue] * pd * j[0] * (1 - np.exp(-tr / (t1 * j[1]))) * np.exp(-te / (t2 * j[2]))
    signal *= np.exp(_smooth_field(rng, shape, 12.0, bias))
    sigma = noise * float(signal[head].max())
    noisy = np.sqrt((signal + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
    mr = np.where(head, noisy * 1000.0, 0.0).astype(np.float32)

    hu = np.full(shape, CT_HU["air"])  # air outside the head, where every fraction is 0
    for tissue, fraction in fractions.items():
        hu += fraction * (CT_HU[tissue] * rng.uniform(0.95, 1.05) - CT_HU["air"])
    ct = np.maximum(hu + rng.normal(0, ct_noise_hu, shape), -1024.0).astype(np.float32)  # clipped as scanners store
    return mr, ct, head


def make_synthetic_mr_ct(
    output: str | Path,
    num_train: int = 4,
    num_test: int = 1,
    seed: int = 0,
    voxel_mm: float = 2.0,
    deform_voxels: float = 2.0,
    bias: float = 0.15,
    noise: float = 0.02,
    ct_noise_hu: float = 10.0,
) -> Path:
    """Write a paired MR → CT dataset of synthetic heads: ``A/`` (T1w MR), ``B/`` (CT in HU) of the same training
    subjects on the same grid (registered, as SynthRAD's pairs), and held-out ``test/{A,B,mask}`` (the mask is the
    head).

    Each head is the ICBM152 brain (see :func:`make_synthetic_brains`), deformed per subject, inside a 6 mm skull and a
    5 mm scalp. The MR follows the spin-echo equation with the tissues of :data:`TISSUES` and :data:`HEAD_TISSUES`
    (scalp fat bright, bone dark), a bias field and Rician noise, 0 outside the head; the CT gives each tissue its
    :data:`CT_HU` (jittered by up to 5 % per subject), partial-volume mixed in the brain, air -1000 HU outside, Gaussian
    noise of ``ct_noise_hu``, clipped below at -1024 HU.

    Args:
        output: folder to create.
        num_train: training subjects (each has an MR in ``A/`` and a CT in ``B/``, both ``sNN.nii.gz``).
        num_test: held-out subjects (``test/A``, ``test/B``, ``test/mask``, ``testNN.nii.gz``).
        seed: random seed.
        voxel_mm: isotropic voxel size.
        deform_voxels: maximum displacement of the random deformations, in voxels.
        bias: amplitude of the MR's log bias field.
        noise: the MR's Rician noise σ as a fraction of the brightest head signal.
        ct_noise_hu: the CT's noise σ in HU.

    Returns:
        ``output``.
    """
    output = Path(output)
    maps, affine = load_icbm152(voxel_mm)
    rng = np.random.default_rng(seed)
    for folder in ("A", "B", "test/A", "test/B", "test/mask"):
        (output / folder).mkdir(parents=True, exist_ok=True)

    def save(path: Path, data: np.ndarray) -> None:
        image = nib.Nifti1Image(data, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        atomic_write(path, lambda tmp: nib.save(image, tmp))

    plan = [("", f"s{i:02d}") for i in range(num_train)] + [("test/", f"test{i:02d}") for i in range(num_test)]
    for prefix, name in plan:
        mr, ct, head = _head_subject(maps, voxel_mm, rng, deform_voxels, bias, noise, ct_noise_hu)
        save(output / f"{prefix}A" / f"{name}.nii.gz", mr)
        save(output / f"{prefix}B" / f"{name}.nii.gz", ct)
        if prefix:
            save(output / "test" / "mask" / f"{name}.nii.gz", head.astype(np.float32))
    return output


# -- motion correction: T1w scans corrupted by rigid motion during the acquisition ------------------------------------
def add_motion(source: str | Path, target: str | Path, seed: int = 0, degrees: float = 10.0,
               translation: float = 10.0, num_transforms: int = 2) -> Path:
    """Write ``source`` as if the head had moved during its acquisition: torchio's ``RandomMotion`` (k-space filled
    from ``num_transforms + 1`` rigidly moved copies, each rotated by up to ``degrees`` and shifted by up to
    ``translation`` mm), drawn from ``seed``; ``target`` is written whole or not at all.

    Returns:
        ``target``.
    """
    import torch
    import torchio as tio

    torch.manual_seed(seed)
    moved = tio.RandomMotion(degrees=degrees, translation=translation, num_transforms=num_transforms)(tio.ScalarImage(source))
    target = Path(target)
    atomic_write(target, lambda tmp: moved.save(tmp))
    return target


def make_synthetic_motion(output: str | Path, num_a: int = 2, num_b: int = 2, num_test: int = 1, seed: int = 0,
                          voxel_mm: float = 2.0) -> Path:
    """Write an unpaired motion-correction dataset: ``A/`` (T1w volumes corrupted by :func:`add_motion`), ``B/``
    (clean T1w volumes of other subjects), and held-out ``test/A`` (corrupted), ``test/B`` (the same scan
    uncorrupted, the ground truth) and ``test/mask``.

    The subjects are :func:`make_synthetic_brains`' T1w brains; each corrupted volume gets its own motion.

    Returns:
        ``output``.
    """
    output = Path(output)
    for folder in ("A", "B", "test/A", "test/B", "test/mask"):
        (output / folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        brains = make_synthetic_brains(tmp, num_a=num_a + num_b, num_b=0, num_test=num_test, seed=seed, voxel_mm=voxel_mm)
        clean = sorted((brains / "A").glob("*.nii.gz"))
        for i, path in enumerate(clean[:num_a]):
            add_motion(path, output / "A" / path.name, seed=seed + i)
        for j, path in enumerate(clean[num_a:]):
            atomic_write(output / "B" / f"b{j:02d}.nii.gz", lambda tmp, p=path: shutil.copyfile(p, tmp))
        for i, path in enumerate(sorted((brains / "test" / "A").glob("*.nii.gz"))):
            add_motion(path, output / "test" / "A" / path.name, seed=seed + num_a + i)
            for folder in ("B", "mask"):
                source = brains / "test" / ("A" if folder == "B" else "mask") / path.name
                atomic_write(output / "test" / folder / path.name, lambda tmp, p=source: shutil.copyfile(p, tmp))
    return output
