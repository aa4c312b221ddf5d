"""Download released bundles the MONAI way, with checks that turn broken downloads into clear errors.

``monai.bundle.download`` does the work (``--url``, ``--source github --repo owner/repo/tag``,
``--source huggingface_hub --repo owner/name``); ``download_bundle`` wraps it so that a corrupt or truncated
zip, a URL that returns an error page, or a bundle whose metadata is of another version raises a ValueError
that says what happened and what to do, and a damaged zip is not left behind to be reused (MONAI skips the
download when the file already exists).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path, PurePosixPath

from custom_nets.export.metadata import validate_metadata

__all__ = ["ZIP_NAME", "check_bundle_zip", "check_bundle_folder", "download_bundle"]

#: ``<name>_v<version>.zip``, the release asset name ``monai.bundle.download --source github`` asks for.
ZIP_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_]+)_v(?P<version>\d+\.\d+\.\d+)\.zip$")


def _bad_zip(path: Path, detail: str) -> ValueError:
    return ValueError(
        f"{path} is not a valid bundle zip ({detail}): the file is corrupt or truncated, or the URL returned an "
        "error page instead of the release asset. Delete it and download again; check the URL, repo and tag."
    )


def check_bundle_zip(path: str | os.PathLike, name: str | None = None, version: str | None = None) -> dict:
    """Check a bundle zip before extracting or publishing it; returns its metadata.

    Args:
        path: the zip.
        name: expected bundle name (its single top-level folder). Defaults to the name in ``<name>_v<ver>.zip``.
        version: expected version. Defaults to the version in the file name, if it has one.

    Raises:
        ValueError: not a zip, a damaged member, not exactly one top-level folder, no ``configs/metadata.json``,
            or metadata that fails the schema or carries another version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle zip {path} does not exist.")
    match = ZIP_NAME.match(path.name)
    name = name or (match.group("name") if match else None)
    version = version or (match.group("version") if match else None)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            if damaged is not None:
                raise _bad_zip(path, f"member {damaged} fails its CRC check")
            names = [n for n in archive.namelist() if not n.endswith("/")]
            tops = sorted({PurePosixPath(n).parts[0] for n in names})
            if len(tops) != 1 or (name is not None and tops != [name]):
                raise ValueError(
                    f"{path} must hold one folder named after the bundle ({name or '<name>'}/configs, models, ...), "
                    f"found top-level entries {tops[:5]}; zip the bundle folder itself (custom_nets.export.zip_bundle)."
                )
            meta_name = f"{tops[0]}/configs/metadata.json"
            if meta_name not in names:
                raise ValueError(f"{path} has no {meta_name}: it is not a MONAI bundle.")
            meta = json.loads(archive.read(meta_name))
    except zipfile.BadZipFile as error:
        raise _bad_zip(path, str(error)) from error
    validate_metadata(meta, f"{path}:{meta_name}", version)
    return meta


def check_bundle_folder(folder: str | os.PathLike, version: str | None = None) -> dict:
    """Check an extracted bundle (metadata schema and version, ``models/model.pt``); returns its metadata."""
    folder = Path(folder)
    meta_file = folder / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise ValueError(f"{folder} has no configs/metadata.json: the download did not produce a MONAI bundle.")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    validate_metadata(meta, str(meta_file), version)
    if not (folder / "models" / "model.pt").is_file():
        raise ValueError(f"{folder} has no models/model.pt. {_large_file_hint(folder, 'models/model.pt')}")
    return meta


def _large_file_hint(folder: Path, path: str) -> str:
    """How to get a model file that is missing from an extracted bundle, from its ``large_files.yml``."""
    import yaml

    listing = folder / "large_files.yml"
    entries = yaml.safe_load(listing.read_text(encoding="utf-8")).get("large_files", []) if listing.is_file() else []
    url = next((e.get("url") for e in entries if e.get("path") == path), None)
    if url:
        return f"Fetch it from {url} with python -m monai.bundle download_large_files --bundle_path {folder}."
    return (
        "The bundle declares no download URL for it (large_files.yml): download the release zip again, which "
        "contains it."
    )


def download_bundle(
    name: str,
    bundle_dir: str | os.PathLike,
    version: str | None = None,
    url: str | None = None,
    source: str = "github",
    repo: str | None = None,
    progress: bool = False,
) -> Path:
    """``monai.bundle.download`` plus checks; returns ``<bundle_dir>/<name>``.

    Args:
        name: bundle name.
        bundle_dir: where bundles are extracted.
        version: the release version; also checked against the downloaded metadata.
        url: a direct URL of the zip (``https://``, ``http://`` or ``file://``); overrides source/repo.
        source: "github" (``repo`` = owner/repo/tag) or "huggingface_hub" (``repo`` = owner/name).
        repo: see ``source``.
        progress: show a progress bar.
    """
    from monai.bundle import download

    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    candidates = [bundle_dir / f"{name}.zip", bundle_dir / f"{name}_v{version}.zip"]
    try:
        download(name=name, version=version, bundle_dir=str(bundle_dir), url=url, source=source, repo=repo, progress=progress)
    except zipfile.BadZipFile as error:
        for path in candidates:
            if path.is_file():
                path.unlink()  # MONAI would reuse it next time instead of downloading again
        where = url or f"{source}:{repo}"
        raise ValueError(
            f"the bundle downloaded from {where} is not a valid zip ({error}): the file is corrupt or truncated, or "
            "the address returned an error page instead of the release asset. The damaged file was deleted; check "
            "the URL (or repo/tag and version) and download again."
        ) from error
    check_bundle_folder(bundle_dir / name, version)
    return bundle_dir / name
