"""lib.data.fetch: the registry, downloads from a real http.server on 127.0.0.1 (resume, retries, offline), hash
checks before every extraction, safe extraction of good and malicious zip / tar archives, the lock file, the
command line and ``resolve_data_root``. Nothing here touches the internet."""

import hashlib
import http.server
import importlib
import io
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib import data
from lib.core.paths import REPO
from lib.data import Archive, DatasetError, DatasetInfo, FetchError, HashMismatchError, OfflineError, UnsafeArchiveError

fetch_module = importlib.import_module("lib.data.fetch")   # lib.data.fetch is also the function's name


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Requests to 127.0.0.1 never go through a proxy configured on the machine."""
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ----------------------------------------------------------------------------------
# A tiny MVTec-layout category and archives of it
# ----------------------------------------------------------------------------------

def _tree(folder: Path) -> Path:
    """folder/widget/{train/good, test/good, test/scratch, ground_truth/scratch} with 8x8 images."""
    rng = np.random.default_rng(0)
    for rel in ("train/good/000.png", "train/good/001.png", "test/good/000.png", "test/scratch/000.png"):
        p = folder / "widget" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(p)
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 255
    (folder / "widget" / "ground_truth" / "scratch").mkdir(parents=True)
    Image.fromarray(m).save(folder / "widget" / "ground_truth" / "scratch" / "000_mask.png")
    return folder


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("tree") / "src")


def _pack(tree: Path, kind: str) -> bytes:
    """The tree as a zip or a tar ("tar", "tar.gz", "tar.xz"), its files under a top folder ``tiny/``."""
    buf = io.BytesIO()
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            for p in files:
                z.write(p, f"tiny/{p.relative_to(tree).as_posix()}")
    else:
        with tarfile.open(fileobj=buf, mode={"tar": "w", "tar.gz": "w:gz", "tar.xz": "w:xz"}[kind]) as t:
            for p in files:
                t.add(p, f"tiny/{p.relative_to(tree).as_posix()}")
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _info(url: str | None, filename: str, sha256: str | None, layout: str = "mvtec", name: str = "tiny"):
    return DatasetInfo(name, "Tiny test set", "http://127.0.0.1/", "test licence (non-commercial)", True,
                       Archive(filename, (url,) if url else (), sha256,
                               "the test" if sha256 else "no published hash", 1234, "about 1 kB"), layout)


# ----------------------------------------------------------------------------------
# A real HTTP server on 127.0.0.1
# ----------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        srv.requests.append((name, rng))
        data_, mode = srv.files.get(name), srv.modes.get(name, "ok")
        if data_ is None:
            self.send_error(404)
            return
        if mode == "503-once" and name not in srv.done:
            srv.done.add(name)
            self.send_error(503)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng and mode != "no-range" else 0
        if start >= len(data_) > 0:
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data_) - 1}/{len(data_)}")
        body = data_[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode in ("drop", "no-range") and name not in srv.done:    # send half, then hang up
            srv.done.add(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.modes, srv.requests, srv.done = {}, {}, [], set()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# ----------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------

def test_registry_entries_are_complete():
    assert set(data.DATASETS) == {"mvtec_ad", "visa", "ksdd2", "mpdd", "dagm2007", "btad"}
    for name, info in data.DATASETS.items():
        a = info.archive
        assert info.name == name and info.licence and info.homepage.startswith("http") and a.filename
        assert info.layout in data.CONVERTERS
        assert a.sha256 is None or (len(a.sha256) == 64 and int(a.sha256, 16) >= 0), name
        assert ("no published hash" in a.hash_source) == (a.sha256 is None), name
        assert all(u.startswith("https://") for u in a.urls), name
        assert info.non_commercial == ("non-commercial" in info.licence), name
    assert data.DATASETS["mvtec_ad"].non_commercial and "anomalib" in data.DATASETS["mvtec_ad"].archive.hash_source
    with pytest.raises(FetchError, match="not a registered dataset"):
        data.dataset_info("mvtec")


# ----------------------------------------------------------------------------------
# Downloads: resume, restart, retries, offline
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, resumed", [("drop", True), ("no-range", False)])
def test_download_resumes_or_restarts_after_a_dropped_connection(server, tmp_path, mode, resumed):
    blob = os.urandom(300_000)
    server.files["a.bin"], server.modes["a.bin"] = blob, mode
    out = data.download(f"{server.url}/a.bin", tmp_path / "a.bin", sha256=_sha(blob), backoff=0, progress=False)
    assert out.read_bytes() == blob and not (tmp_path / "a.bin.part").exists()
    assert len(server.requests) == 2 and server.requests[0][1] is None
    assert server.requests[1][1] == "bytes=150000-"   # asked to resume; "no-range" ignores it and starts again
    assert resumed == (mode == "drop")


def test_download_retries_transient_errors_and_refuses_a_wrong_hash(server, tmp_path):
    blob = b"x" * 5000
    server.files["b.bin"], server.modes["b.bin"] = blob, "503-once"
    data.download(f"{server.url}/b.bin", tmp_path / "b.bin", sha256=_sha(blob), backoff=0, progress=False)
    assert len(server.requests) == 2
    with pytest.raises(HashMismatchError, match=r"c\.bin\.part.*has sha256 " + _sha(blob) + ".*" + "0" * 64):
        server.files["c.bin"] = blob
        data.download(f"{server.url}/c.bin", tmp_path / "c.bin", sha256="0" * 64, backoff=0, progress=False)
    assert not (tmp_path / "c.bin").exists() and not (tmp_path / "c.bin.part").exists()


def test_download_offline_and_not_found(server, tmp_path):
    with pytest.raises(OfflineError, match="404"):
        data.download(f"{server.url}/missing.bin", tmp_path / "m.bin", retries=3, backoff=0, progress=False)
    assert len(server.requests) == 1     # a 404 is not retried
    with pytest.raises(OfflineError, match="after 1 retries"):
        data.download(f"{_closed_port()}/x.bin", tmp_path / "x.bin", retries=1, backoff=0, progress=False)


# ----------------------------------------------------------------------------------
# fetch: good archives end to end, hashes before every extraction, offline drop
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tar.xz"])
def test_fetch_good_archive_gives_a_loadable_category(server, tree, tmp_path, kind, capsys):
    blob = _pack(tree, kind)
    server.files[f"tiny.{kind}"] = blob
    info = _info(f"{server.url}/tiny.{kind}", f"tiny.{kind}", _sha(blob))
    out = data.fetch(info, tmp_path, backoff=0, progress=False)
    assert "test licence (non-commercial)" in capsys.readouterr().err
    assert out == tmp_path / "tiny" / "raw" / "tiny"
    cat = data.load_category(out, "widget")
    assert len(cat.train) == 2 and cat.test.labels.tolist() == [0, 1] and cat.test.masks[1].sum() == 9
    assert data.read_marker(tmp_path / "tiny" / "raw", data.MARKER)["sha256"] == _sha(blob)
    marker_time = (tmp_path / "tiny" / "raw" / data.MARKER).stat().st_mtime_ns
    assert data.fetch(info, tmp_path, progress=False) == out        # second time: no download, no extraction
    assert len(server.requests) == 1 and (tmp_path / "tiny" / "raw" / data.MARKER).stat().st_mtime_ns == marker_time
    assert data.converted_root(info, tmp_path) == out


def test_existing_archive_is_verified_before_every_extraction(server, tree, tmp_path):
    blob = _pack(tree, "tar.gz")
    info = _info(f"{server.url}/tiny.tar.gz", "tiny.tar.gz", _sha(blob))
    archive = tmp_path / "tiny" / "downloads" / "tiny.tar.gz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(blob[:-10] + b"0123456789")     # a dropped archive with the wrong bytes
    with pytest.raises(HashMismatchError) as e:
        data.fetch(info, tmp_path, progress=False)
    msg = str(e.value)
    assert str(archive) in msg and _sha(blob) in msg and _sha(archive.read_bytes()) in msg and "delete it" in msg
    assert not (tmp_path / "tiny" / "raw").exists() and server.requests == []
    archive.write_bytes(blob)
    data.fetch(info, tmp_path, progress=False)
    archive.write_bytes(blob + b"tampered")            # already extracted, but the archive changed: refused again
    with pytest.raises(HashMismatchError):
        data.fetch(info, tmp_path, progress=False)


def test_no_published_hash_is_recorded_in_the_lock_file_and_then_enforced(server, tree, tmp_path):
    blob = _pack(tree, "zip")
    server.files["tiny.zip"] = blob
    info = _info(f"{server.url}/tiny.zip", "tiny.zip", None)
    with pytest.warns(UserWarning, match="publishes no sha256"):
        data.fetch(info, tmp_path, progress=False)
    assert data.pinned_hash("tiny", tmp_path) == _sha(blob) and (tmp_path / data.LOCK_FILE).is_file()
    archive = tmp_path / "tiny" / "downloads" / "tiny.zip"
    archive.write_bytes(_pack(tree, "tar"))
    with pytest.raises(HashMismatchError, match="hashes.lock.json"):
        data.fetch(info, tmp_path, progress=False)
    out = data.fetch(info, tmp_path, sha256=_sha(archive.read_bytes()), progress=False)   # the user pins it
    assert data.load_category(out, "widget").test.labels.sum() == 1
    assert data.pinned_hash("tiny", tmp_path) == _sha(archive.read_bytes())
    assert data.fetch(info, tmp_path, progress=False) == out                 # later plain fetches use the pin


def test_a_pinned_hash_takes_precedence_over_the_published_one(server, tree, tmp_path):
    blob = _pack(tree, "tar")
    server.files["tiny.tar"] = blob
    info = _info(f"{server.url}/tiny.tar", "tiny.tar", "0" * 64)     # the published hash does not match the file
    with pytest.raises(HashMismatchError, match="--sha256 " + _sha(blob)):
        data.fetch(info, tmp_path, progress=False)
    out = data.fetch(info, tmp_path, sha256=_sha(blob), progress=False)
    with pytest.warns(UserWarning, match="pinned"):
        assert data.fetch(info, tmp_path, progress=False) == out


def test_offline_message_then_a_dropped_archive_is_verified_and_extracted(tree, tmp_path):
    blob = _pack(tree, "tar.gz")
    url = f"{_closed_port()}/tiny.tar.gz"
    info = _info(url, "tiny.tar.gz", _sha(blob))
    with pytest.raises(OfflineError) as e:
        data.fetch(info, tmp_path, retries=0, progress=False)
    msg, folder = str(e.value), tmp_path / "tiny" / "downloads"
    for part in (url, "tiny.tar.gz", "about 1 kB", _sha(blob), str(folder), f"fetch tiny --root {tmp_path}`"):
        assert part in msg
    (folder / "tiny.tar.gz").write_bytes(blob)
    assert data.load_category(data.fetch(info, tmp_path, retries=0, progress=False), "widget")


def test_manual_datasets_say_where_to_get_them_without_network(tmp_path):
    with pytest.raises(OfflineError) as e:
        data.fetch("mpdd", tmp_path, progress=False)
    msg = str(e.value)
    assert "MPDD.zip" in msg and "github.com/stepanje/MPDD" in msg and str(tmp_path / "mpdd" / "downloads") in msg
    assert "CC BY-NC-SA 4.0" in msg


# ----------------------------------------------------------------------------------
# Malicious and broken archives
# ----------------------------------------------------------------------------------

def _tar_with(path: Path, *infos: tuple) -> Path:
    with tarfile.open(path, "w") as t:
        for info, payload in infos:
            t.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _ti(name: str, kind=tarfile.REGTYPE, payload: bytes | None = b"evil", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(payload) if kind == tarfile.REGTYPE and payload is not None else 0
    return info, payload if kind == tarfile.REGTYPE else None


def _zip_with(path: Path, *members: tuple) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, payload, mode in members:
            zi = zipfile.ZipInfo(name)
            if mode:
                zi.external_attr = mode << 16
            z.writestr(zi, payload)
    return path


def _huge_tar(path: Path) -> Path:
    info = tarfile.TarInfo("big.bin")
    info.size = 10 ** 13                                 # declares 10 TB, holds nothing
    path.write_bytes(info.tobuf() + b"\0" * 1024)
    return path


def _huge_zip(path: Path) -> Path:
    """20 one-byte members whose central directory declares 4 GB each (80 GB in all)."""
    with zipfile.ZipFile(path, "w") as z:
        for i in range(20):
            z.writestr(f"f{i}.bin", b"x")
    blob = bytearray(path.read_bytes())
    at = blob.find(b"PK\x01\x02")
    while at >= 0:                                      # uncompressed size: offset 24 of a central header
        blob[at + 24:at + 28] = (0xFFFFFFF0).to_bytes(4, "little")
        at = blob.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(blob))
    return path


def _secret(t: Path) -> Path:
    (t / "secret.txt").write_bytes(b"secret")      # what a hostile archive would copy out of the user's files
    return t


MALICIOUS = {
    # d/u -> .. is harmless alone (it is the target itself); the hard link goes through it twice and climbs out
    "tar hard link through a symlink": lambda p, t: _secret(t) and _tar_with(
        p, _ti("d/f.txt", payload=b"fine"), _ti("d/u", tarfile.SYMTYPE, link=".."),
        _ti("h", tarfile.LNKTYPE, link="d/u/d/u/../../secret.txt")),
    # a -> b/../secret.txt is inside while b does not exist; b -> d/u (the target) then makes a lead outside
    "tar symlink chain": lambda p, t: _secret(t) and _tar_with(
        p, _ti("d/f.txt", payload=b"fine"), _ti("d/u", tarfile.SYMTYPE, link=".."),
        _ti("a", tarfile.SYMTYPE, link="b/../secret.txt"), _ti("b", tarfile.SYMTYPE, link="d/u")),
    "zip huge declared size": lambda p, t: _huge_zip(p),
    "tar traversal": lambda p, t: _tar_with(p, _ti("ok.txt", payload=b"fine"), _ti("../evil.txt")),
    "tar absolute path": lambda p, t: _tar_with(p, _ti(str(t / "abs_evil.txt"))),
    "tar symlink escape": lambda p, t: _tar_with(p, _ti("link", tarfile.SYMTYPE, link="../../outside"),
                                                 _ti("link/evil.txt")),
    "tar absolute symlink": lambda p, t: _tar_with(p, _ti("etc", tarfile.SYMTYPE, link="/etc")),
    "tar hard link escape": lambda p, t: _tar_with(p, _ti("hard", tarfile.LNKTYPE, link="../outside.txt")),
    "tar device file": lambda p, t: _tar_with(p, _ti("dev", tarfile.CHRTYPE)),
    "tar huge declared size": lambda p, t: _huge_tar(p),
    "zip traversal": lambda p, t: _zip_with(p, ("a/../../evil.txt", b"evil", 0)),
    "zip absolute path": lambda p, t: _zip_with(p, ("/abs_evil.txt", b"evil", 0)),
    "zip backslash traversal": lambda p, t: _zip_with(p, ("..\\evil.txt", b"evil", 0)),
    "zip symlink escape": lambda p, t: _zip_with(p, ("link", b"../../outside", stat.S_IFLNK | 0o777)),
}


def _snapshot(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_refused_and_write_nothing(tmp_path, case):
    archive = MALICIOUS[case](tmp_path / "bad.archive", tmp_path)
    target = tmp_path / "x" / "raw"
    target.parent.mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        data.safe_extract(archive, target)
    assert _snapshot(tmp_path) == before          # no target, no temporary folder, nothing outside


def test_a_malicious_archive_served_over_http_is_refused_by_fetch(server, tmp_path):
    archive = MALICIOUS["tar symlink chain"](tmp_path / "bad.tar", tmp_path)
    server.files["bad.tar"] = blob = archive.read_bytes()
    archive.unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        data.fetch(_info(f"{server.url}/bad.tar", "bad.tar", _sha(blob)), tmp_path / "ds", progress=False)
    # only the verified download is left; no raw/ folder, nothing elsewhere
    assert _snapshot(tmp_path) - before == {Path(p) for p in ("ds", "ds/tiny", "ds/tiny/downloads",
                                                              "ds/tiny/downloads/bad.tar")}


@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz", "zip"])
def test_truncated_archives_are_refused(tree, tmp_path, kind):
    archive = tmp_path / f"cut.{kind}"
    archive.write_bytes(_pack(tree, kind)[:-200])
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="truncated"):
        data.safe_extract(archive, tmp_path / "raw")
    assert _snapshot(tmp_path) == before


def test_declared_size_above_the_limit_is_refused(tree, tmp_path):
    archive = tmp_path / "t.zip"
    archive.write_bytes(_pack(tree, "zip"))
    with pytest.raises(UnsafeArchiveError, match="max_bytes=100"):
        data.safe_extract(archive, tmp_path / "raw", max_bytes=100)
    assert not (tmp_path / "raw").exists()


def test_links_inside_the_target_are_kept(tmp_path):
    archive = _tar_with(tmp_path / "ok.tar", _ti("d/file.txt", payload=b"hello"),
                        _ti("d/sym", tarfile.SYMTYPE, link="file.txt"), _ti("hard", tarfile.LNKTYPE, link="d/file.txt"))
    out = data.safe_extract(archive, tmp_path / "raw")
    assert (out / "d" / "sym").is_symlink() and (out / "d" / "sym").read_bytes() == b"hello"
    assert (out / "hard").read_bytes() == b"hello"


_KILLED = """
import sys, time
import importlib
fetch = importlib.import_module("lib.data.fetch")
copy = fetch._copy
def slow(*args):
    copy(*args)
    print("STARTED", flush=True)
    time.sleep(60)
fetch._copy = slow
fetch.safe_extract(sys.argv[1], sys.argv[2])
"""


def test_a_killed_extraction_leaves_no_folder_the_loader_accepts(tree, tmp_path):
    archive = tmp_path / "tiny.tar"
    archive.write_bytes(_pack(tree, "tar"))
    target = tmp_path / "ds" / "raw"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(archive), str(target)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "STARTED", proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not target.exists() and any(p.name.startswith(".raw.tmp-") for p in target.parent.iterdir())
    with pytest.raises(DatasetError):
        data.list_categories(target)
    with pytest.raises(DatasetError):
        data.load_category(target / "tiny", "widget")
    data.safe_extract(archive, target)                # the next run cleans up and finishes
    assert [p.name for p in target.parent.iterdir()] == ["raw"]
    assert len(data.load_category(target / "tiny", "widget").train) == 2


# ----------------------------------------------------------------------------------
# resolve_data_root and the command line
# ----------------------------------------------------------------------------------

def test_resolve_data_root(tree, tmp_path):
    assert data.resolve_data_root(None) is None
    assert data.resolve_data_root(str(tree)) == tree
    with pytest.raises(DatasetError, match="neither an existing folder nor a registered dataset"):
        data.resolve_data_root(str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="python -m lib.data fetch mvtec_ad"):
        data.resolve_data_root("mvtec_ad", tmp_path)
    raw = tmp_path / "mvtec_ad" / "raw"                 # as a finished fetch leaves it
    data.safe_extract(_write(tmp_path / "m.tar", _pack(tree, "tar")), raw)
    assert data.resolve_data_root("mvtec_ad", tmp_path) == raw / "tiny"
    with pytest.raises(DatasetError, match="python -m lib.data fetch ksdd2"):
        data.resolve_data_root("ksdd2", tmp_path)


def _write(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


def test_command_line(tmp_path, capsys):
    main = importlib.import_module("lib.data.__main__").main
    assert main(["list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in data.DATASETS) and "not published" in out and "not fetched" in out
    assert main(["fetch", "dagm2007", "--root", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("DAGM 2007: licence") and "error: cannot download DAGM 2007" in err
    assert "DAGM_2007.zip" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["fetch", "imagenet"])
