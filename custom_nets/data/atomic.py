"""Crash-safe file writes for the data pipeline.

Every file that the demo generator or the preprocessing cache produces is first written to a
temporary file in the *same* folder and then moved into place with ``os.replace``. A rename
within one file system is atomic, so a crash (or a killed worker) leaves either the old file,
the new file, or a stray temporary file, but never a half-written file under the final name.
Temporary names start with a dot so that folder scans (which skip hidden files) ignore them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import nibabel as nib

__all__ = ["atomic_save_nifti", "atomic_torch_save", "atomic_write_text", "temporary_sibling"]


def temporary_sibling(path: str | os.PathLike) -> Path:
    """Return a unique hidden path in the folder of ``path`` that keeps its extension.

    The temporary name ends like the final name (e.g. ``.nii.gz``) because nibabel picks
    gzip compression from the extension; the process id and a random token keep concurrent
    writers (several workers or ranks) from sharing a temporary file.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.name}.{token}.tmp{suffix}")


def _replace_or_cleanup(tmp: Path, path: Path, write) -> None:
    """Run ``write(tmp)`` and move ``tmp`` onto ``path``; remove ``tmp`` if anything fails."""
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save_nifti(image: nib.Nifti1Image, path: str | os.PathLike) -> None:
    """Save a NIfTI image to ``path`` atomically (compressed when ``path`` ends in ``.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_or_cleanup(temporary_sibling(path), path, lambda tmp: nib.save(image, str(tmp)))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (used for JSON and CSV side files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def _write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    _replace_or_cleanup(temporary_sibling(path), path, _write)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a hidden temporary file in the same folder, then rename: readers never see a partial
    checkpoint (a crash leaves the previous file or a stray temporary one). Returns the final path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_or_cleanup(temporary_sibling(path), path, lambda tmp: torch.save(obj, tmp))
    return path
