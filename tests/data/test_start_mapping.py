"""The start mapping: the global intensity relation between two domains, chosen from unpaired volumes alone."""

from __future__ import annotations

import numpy as np
import pytest

from medtrans.data import ImageRecord, TrainStream
from medtrans.data.start import StartMapping, estimate_start
from tests.conftest import shared_file

LESJAK = {"t1": "T1", "t2": "T2", "flair": "FLAIR"}
SUBJECTS = {"lesjak": ("patient07", "patient19", "patient26"), "tcga": ("TCGA-DU-7294", "TCGA-FG-6692"),
            "brats": ("brats_2013_pat0003_1", "brats_2013_pat0004_1", "brats_2013_pat0005_1", "brats_2013_pat0006_1")}


def _files(contrast: str, datasets: tuple[str, ...]) -> list[str]:
    out = []
    for dataset in datasets:
        for subject in SUBJECTS[dataset]:
            if dataset == "lesjak":
                out.append(str(shared_file(f"lesjak-ms-mni/{subject}/{LESJAK[contrast]}.nii.gz")))
            elif dataset == "tcga":
                out.append(str(shared_file(f"tcga-lgg-brainles/{subject}/{contrast}.nii.gz")))
            else:
                out.append(str(shared_file(f"brats2015-deepmedic/{subject}/{contrast}.nii.gz")))
    return out


@pytest.fixture(scope="module")
def volumes():
    """Each contrast's training volumes as the stream holds them (read, checked, preprocessed, foreground)."""
    cache: dict[tuple, list] = {}

    def get(contrast: str, datasets: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
        key = (contrast, datasets)
        if key not in cache:
            records = [ImageRecord(f"s{i}", f) for i, f in enumerate(_files(contrast, datasets))]
            stream = TrainStream(records, records[:1], {"patch_size": (32, 32, 32), "num_workers": 1})
            cache[key] = stream.foreground_volumes("a")
        return cache[key]

    return get


@pytest.mark.parametrize("source,target,datasets,expected", [
    ("t1", "t2", ("lesjak", "tcga"), "inverted"),
    ("t2", "t1", ("lesjak", "tcga"), "inverted"),
    ("t1", "flair", ("lesjak", "tcga"), "same"),
    ("t1c", "flair", ("brats",), "same"),
    ("flair", "t1c", ("brats",), "same"),
])
def test_the_choice_is_right_unaided(source, target, datasets, expected, volumes):
    """Unpaired (every subject's A beside every subject's B, no pairing used), the better of the two candidates — by
    correlation with the real co-registered target, measured on these subjects — is chosen."""
    mapping = estimate_start(volumes(source, datasets), volumes(target, datasets))
    assert mapping.type == expected, mapping.evidence
    assert len(mapping.knots) == 34 and mapping.knots[0] == mapping.values[0] == -1.0 and mapping(np.array([-1.0])) == -1
    assert np.all(np.diff(mapping.knots) > 0)
    other = "same" if expected == "inverted" else "inverted"
    assert mapping.evidence[expected] < 0.9 * mapping.evidence[other]
    truth = []
    for (a, mask_a), (b, mask_b) in zip(volumes(source, datasets), volumes(target, datasets)):
        inside = mask_a & mask_b
        truth.append(np.corrcoef(mapping(a[inside]), b[inside])[0, 1])
    assert np.mean(truth) > 0.15, truth


@pytest.mark.parametrize("source,target", [("A", "B"), ("B", "A")])
def test_the_choice_on_the_synthetic_brains(source, target, synthetic_brains):
    """The embedded dataset the demo trains on (T1w of some subjects, T2w of others): inverted either way, and the
    mapping correlates with the held-out subjects' co-registered target (measured 0.92; the real data's test above
    keeps the harder cases)."""

    def foreground(folder: str) -> list[tuple[np.ndarray, np.ndarray]]:
        records = [ImageRecord(p.name.split(".")[0], p) for p in sorted((synthetic_brains / folder).glob("*.nii.gz"))]
        return TrainStream(records, records[:1], {"patch_size": (32, 32, 32), "num_workers": 1}).foreground_volumes("a")

    mapping = estimate_start(foreground(source), foreground(target))
    assert mapping.type == "inverted", mapping.evidence
    assert mapping.evidence["inverted"] < 0.9 * mapping.evidence["same"]
    truth = [np.corrcoef(mapping(a[mask_a & mask_b]), b[mask_a & mask_b])[0, 1]
             for (a, mask_a), (b, mask_b) in zip(foreground(f"test/{source}"), foreground(f"test/{target}"))]
    assert min(truth) > 0.8, truth


def _blobs(seed: int, invert: bool) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic 'brain': a dark core, a bright rim (or the reverse), background -1."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij")) - 20
    radius = np.sqrt((grid**2).sum(0))
    mask = radius < 16 + seed
    image = np.where(radius < 10, -0.6, 0.7) + rng.normal(0, 0.05, radius.shape)
    image = -image if invert else image
    return np.where(mask, image, -1.0).astype(np.float32), mask


def test_synthetic_polarity_and_forced_types():
    a = [_blobs(s, False) for s in range(3)]
    b = [_blobs(s, True) for s in range(3)]
    assert estimate_start(a, b).type == "inverted"
    assert estimate_start(a, a).type == "same"
    forced = estimate_start(a, b, "same")
    assert forced.type == "same" and forced.evidence == {}
    assert estimate_start(a, b, "none").type == "none"
    with pytest.raises(ValueError, match="start must be one of"):
        estimate_start(a, b, "flipped")


def test_the_mapping_and_its_inverse():
    a = [_blobs(s, False) for s in range(2)]
    b = [_blobs(s, True) for s in range(2)]
    mapping = estimate_start(a, b, "inverted")
    assert np.all(np.diff(mapping.knots) > 0) and mapping.knots[0] == -1.0 and mapping.values[0] == -1.0
    x = np.array([-1.0, -0.6, 0.7])
    y = mapping(x)
    assert y[0] == -1.0 and y[1] > 0.5 and y[2] < -0.5  # the background stays, the tissues swap
    back = mapping.inverse()
    assert np.all(np.diff(back.knots) > 0)
    assert np.allclose(back(mapping(np.array([-0.6, 0.7]))), [-0.6, 0.7], atol=0.05)
    assert StartMapping("none").inverse().type == "none"
