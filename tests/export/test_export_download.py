"""Downloading a released bundle the MONAI way (file:// URL, a local HTTP server, the github source pointed at
it) and ``monai.bundle.load`` returning the network with the exported weights; broken downloads fail clearly."""

from __future__ import annotations

import functools
import json
import shutil
import sys
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import monai.bundle
import monai.bundle.scripts
import pytest
import torch

from custom_nets.export.download import check_bundle_folder, check_bundle_zip, download_bundle

NAME, VERSION = "s3d_tiny", "0.1.0"


@pytest.fixture
def release(exported, tmp_path):
    """A folder holding only the release zip, as a GitHub release or a web server would."""
    folder = tmp_path / "release"
    folder.mkdir()
    shutil.copy(exported.parent / f"{NAME}_v{VERSION}.zip", folder)
    return folder


@pytest.fixture
def http_server(release):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(release))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def bundle_scripts_on_path(monkeypatch):
    """``network_def`` imports the bundle's scripts/ package; forget it afterwards so bundles do not mix."""

    def add(folder):
        monkeypatch.syspath_prepend(str(folder))
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            monkeypatch.delitem(sys.modules, name)

    yield add
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]


def _assert_weights_equal(network, exported):
    expected = torch.load(exported / "models" / "model.pt", weights_only=True)
    got = network.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert torch.equal(got[key].cpu(), value), key


def _load(bundle_dir):
    return monai.bundle.load(name=NAME, bundle_dir=str(bundle_dir), workflow_type="inference", device="cpu",
                             progress=False)


def test_download_from_file_url_then_load(release, exported, tmp_path, bundle_scripts_on_path):
    bundles = tmp_path / "bundles"
    folder = download_bundle(NAME, bundles, version=VERSION, url=(release / f"{NAME}_v{VERSION}.zip").as_uri())
    assert folder == bundles / NAME and (folder / "models" / "model.ts").is_file()
    bundle_scripts_on_path(folder)
    network = _load(bundles)
    assert type(network).__name__ == "ResEncUNet" and type(network).__module__ == "scripts.resenc"
    _assert_weights_equal(network, exported)
    scripted, meta, _ = monai.bundle.load(name=NAME, bundle_dir=str(bundles), load_ts_module=True, device="cpu")
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), network.eval()(x))
    assert meta["version"] == VERSION


def test_download_from_local_http_server_and_github_source(http_server, exported, tmp_path, monkeypatch,
                                                           bundle_scripts_on_path):
    bundles = tmp_path / "bundles"
    download_bundle(NAME, bundles, version=VERSION, url=f"{http_server}/{NAME}_v{VERSION}.zip")
    bundle_scripts_on_path(bundles / NAME)
    _assert_weights_equal(_load(bundles), exported)
    # --source github --repo owner/repo/tag asks for <name>_v<version>.zip in that release; serve it locally
    asked = []

    def local_release(owner, repo, tag_name, filename):
        asked.append((owner, repo, tag_name, filename))
        return f"{http_server}/{filename}"

    monkeypatch.setattr(monai.bundle.scripts, "_get_git_release_url", local_release)
    github_dir = tmp_path / "from_github"
    download_bundle(NAME, github_dir, version=VERSION, source="github", repo="owner/s3d-monai/v0.1.0")
    assert asked == [("owner", "s3d-monai", "v0.1.0", f"{NAME}_v{VERSION}.zip")]
    check_bundle_folder(github_dir / NAME, VERSION)


def test_corrupt_zip_is_reported_and_removed(release, tmp_path):
    broken = tmp_path / "broken" / f"{NAME}_v{VERSION}.zip"
    broken.parent.mkdir()
    broken.write_bytes((release / f"{NAME}_v{VERSION}.zip").read_bytes()[:2000])  # truncated download
    bundles = tmp_path / "bundles"
    with pytest.raises(ValueError, match="not a valid zip.*download again"):
        download_bundle(NAME, bundles, version=VERSION, url=broken.as_uri())
    assert not (bundles / f"{NAME}.zip").exists()  # not reused by the next attempt
    with pytest.raises(ValueError, match="not a valid bundle zip.*Delete it and download again"):
        check_bundle_zip(broken)


def test_metadata_with_another_version_is_refused(release, tmp_path):
    good = release / f"{NAME}_v{VERSION}.zip"
    renamed = tmp_path / f"{NAME}_v0.2.0.zip"  # a zip whose name and metadata disagree
    shutil.copy(good, renamed)
    with pytest.raises(ValueError, match=r"says version '0.1.0' but '0.2.0' was expected"):
        check_bundle_zip(renamed)
    assert check_bundle_zip(good)["version"] == VERSION
    with pytest.raises(ValueError, match=r"says version '0.1.0' but '0.2.0' was expected"):
        download_bundle(NAME, tmp_path / "b", version="0.2.0", url=good.as_uri())
    edited = tmp_path / "edited" / f"{NAME}_v{VERSION}.zip"
    edited.parent.mkdir()
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(edited, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item.endswith("metadata.json"):
                meta = json.loads(data)
                meta["version"] = "1"
                del meta["authors"]
                data = json.dumps(meta).encode()
            target.writestr(item, data)
    with pytest.raises(ValueError, match="does not follow the model-zoo metadata schema.*'authors' is a required"):
        check_bundle_zip(edited)


def test_missing_weights_point_to_the_declared_url_or_the_zip(exported, tiny_run, tmp_path):
    copy = shutil.copytree(exported, tmp_path / "copy")
    (copy / "models" / "model.pt").unlink()
    with pytest.raises(ValueError, match=r"has no models/model.pt\. The bundle declares no download URL for it"):
        check_bundle_folder(copy)
    from custom_nets.export import export_bundle

    published = export_bundle(tiny_run, tmp_path / "zoo", name=NAME, make_zip=False,
                              large_files_url="https://example.org/releases/v0.1.0")
    (published / "models" / "model.pt").unlink()
    with pytest.raises(ValueError, match=r"Fetch it from https://example.org/releases/v0.1.0/model.pt with "
                                         r"python -m monai.bundle download_large_files --bundle_path"):
        check_bundle_folder(published)
