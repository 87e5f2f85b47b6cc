"""A training run's folder: what a run that fails before its first checkpoint leaves behind (nothing it created)."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["removed_on_failure"]


@contextlib.contextmanager
def removed_on_failure(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Run the body; if it raises (an error, Ctrl-C, SIGTERM), remove what it created in ``folder`` — all of the
    outermost folder it made, or the new entries of an existing one — unless it saved a checkpoint or a generator
    there, which a new run resumes from. ``enabled=False`` (the other ranks of a torchrun job) only runs the body."""
    created, before = _missing_ancestor(folder), _entries(folder)
    try:
        yield
    except BaseException:
        if enabled:
            _remove_failed_run(folder, created, before)
        raise


def _missing_ancestor(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (``None`` when ``folder`` exists)."""
    missing = None
    for path in [folder, *folder.parents]:
        if os.path.lexists(path):
            break
        missing = path
    return missing


def _entries(folder: Path) -> set[str] | None:
    try:
        return set(os.listdir(folder))
    except OSError:
        return None


def _remove_failed_run(folder: Path, created: Path | None, before: set[str] | None) -> None:
    """After a failed run: remove what it created in ``folder`` (all of ``created``, the outermost folder it made),
    unless it saved a checkpoint or a generator there, which a new run resumes from."""
    now = _entries(folder)
    if now is None:
        if created is not None and created.is_dir():
            with contextlib.suppress(OSError):
                for path in [folder, *folder.parents]:  # empty parents made before the run folder itself
                    if path.is_dir():
                        path.rmdir()
                    if path == created:
                        break
        return
    new = sorted(now - (before or set()))
    if any(fnmatch.fnmatchcase(name, "checkpoint_*.pt") or name in ("generator.pt", "best_generator.pt") for name in new):
        return
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for name in new:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


