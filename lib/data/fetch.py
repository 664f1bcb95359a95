"""Verified fetchers for the real inspection datasets: MVTec AD, VisA, KSDD2, MPDD, DAGM 2007 and BTAD.

``fetch(name, root)`` (or ``python -m lib.data fetch NAME [--root DIR]``) shows the dataset's licence, downloads its
archive (or takes one dropped into the downloads folder), verifies its sha256 *before every extraction*, extracts it
safely and converts it into the MVTec AD layout ``lib.data.loader`` reads::

    <root>/<name>/downloads/<archive>        the archive (``<archive>.part`` while downloading)
    <root>/<name>/raw/                       the extracted archive, with .extracted.json (the archive's sha256)
    <root>/<name>/mvtec/                     the MVTec-layout copy (MVTec AD and MPDD: the layout inside raw/)
    <root>/hashes.lock.json                  sha256 recorded on first download where none is published

``root`` defaults to ``<data dir>/datasets`` (``default_data_dir()``, i.e. ``$KIT_DATA_DIR`` or ``data/``).

Downloads go to a ``.part`` file, resume with an HTTP Range request when the server allows it, retry transient
errors with exponential back-off, and are renamed only after the hash matches. Extraction (zip and tar) refuses
absolute paths, ``..`` components, links that point outside the target, device files and archives whose declared
size exceeds a limit or the free disk space; it extracts into a temporary folder and renames it into place, so a
killed extraction never leaves a folder that looks complete. Without a network the error names the URL, the file,
its size and hash and the folder to drop it into; ``fetch`` then verifies and extracts the dropped file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import lzma
import os
import shutil
import socket
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, Sequence, Union

from tqdm.auto import tqdm

from .benchmark import default_data_dir
from .convert import CONVERTED_MARKER, MARKER, atomic_folder, convert_dataset, find_layout_root, read_marker
from .loader import DatasetError

__all__ = ["Archive", "DatasetInfo", "DATASETS", "FetchError", "HashMismatchError", "UnsafeArchiveError",
           "OfflineError", "default_datasets_dir", "dataset_info", "fetch", "download", "verify", "sha256_file",
           "safe_extract", "pinned_hash", "pin_hash", "converted_root", "resolve_data_root", "LOCK_FILE"]

PathLike = Union[str, os.PathLike]

LOCK_FILE = "hashes.lock.json"
MAX_EXTRACT_BYTES = 64 * 2**30   # refuse archives that declare more than 64 GiB (the largest here is ~6 GB)
MAX_MEMBERS = 500_000


# ----------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------

class FetchError(ValueError):
    """A dataset could not be fetched, verified or extracted; the message names the file and says what to do."""


class HashMismatchError(FetchError):
    """An archive's sha256 is not the expected one (the message names the file and both hashes)."""


class UnsafeArchiveError(FetchError):
    """An archive is corrupt, truncated, too large, or holds a member that would land outside the target."""


class OfflineError(FetchError):
    """The archive is not on disk and cannot be downloaded; the message says where to get it and where to put it."""


# ----------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Archive:
    """One downloadable archive: its file name, URLs (empty: a manual download from the dataset's page), sha256
    (None: not published), where the hash comes from, and its size in bytes (None: not published) or a hint."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    hash_source: str
    size: int | None = None
    size_hint: str = "size not published"

    @property
    def size_text(self) -> str:
        """``"5,264,982,680 bytes (4.9 GiB; ...)"``, or the hint alone where no size is published."""
        return f"{self.size:,} bytes ({self.size_hint})" if self.size else self.size_hint


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: name, title, home page, licence line (shown before download), whether the licence is
    non-commercial, the archive, the layout its converter reads (a key of ``lib.data.convert.CONVERTERS``)
    and the citation."""

    name: str
    title: str
    homepage: str
    licence: str
    non_commercial: bool
    archive: Archive
    layout: str
    citation: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


_NO_HASH = "no published hash: the first download records it in hashes.lock.json"

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo(
        "mvtec_ad", "MVTec AD", "https://www.mvtec.com/company/research/datasets/mvtec-ad",
        "CC BY-NC-SA 4.0 (non-commercial use only; share alike)", True,
        Archive("mvtec_anomaly_detection.tar.xz",
                ("https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
                 "mvtec_anomaly_detection.tar.xz",),
                "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
                "openvinotoolkit/anomalib, src/anomalib/data/datamodules/image/mvtecad.py (DOWNLOAD_INFO.hashsum)",
                5_264_982_680, "4.9 GiB; the byte count is recorded beside this sha256 in public download scripts"),
        "mvtec", "Bergmann et al., MVTec AD, CVPR 2019 and IJCV 2021"),
    DatasetInfo(
        "visa", "VisA (Visual Anomaly)", "https://github.com/amazon-science/spot-diff",
        "CC BY 4.0 per the authors' README (anomalib's docs say CC BY-NC-SA 4.0: check before commercial use)", False,
        Archive("VisA_20220922.tar", ("https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",),
                "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
                "openvinotoolkit/anomalib, src/anomalib/data/datamodules/image/visa.py (DOWNLOAD_INFO.hashsum)",
                1_929_840_640, "1.8 GiB; the S3 object's Content-Length, recorded beside this sha256 in public notes"),
        "visa", "Zou et al., SPot-the-Difference, ECCV 2022",
        ("converted with split_csv/1cls.csv; candle, capsules, macaroni1, macaroni2 hold several objects per image",)),
    DatasetInfo(
        "ksdd2", "KolektorSDD2", "https://www.vicos.si/resources/kolektorsdd2/",
        "CC BY-NC-SA 4.0 (non-commercial use only; share alike)", True,
        Archive("KolektorSDD2.zip", ("https://go.vicos.si/kolektorsdd2",
                                     "https://data.vicos.si/datasets/KSDD/KolektorSDD2.zip"),
                None, _NO_HASH, None, "about 850 MB"),
        "ksdd2", "Bozic, Tabernik, Skocaj, Computers in Industry 2021",
        ("training positives are kept in ksdd2/positives_train/ (train/ holds negatives only)",)),
    DatasetInfo(
        "mpdd", "MPDD (Metal Parts Defect Detection)", "https://github.com/stepanje/MPDD",
        "CC BY-NC-SA 4.0 (non-commercial use only; share alike)", True,
        Archive("MPDD.zip", (), None, _NO_HASH, None,
                "size not published; a manual download: the authors share a OneDrive folder linked from "
                "https://github.com/stepanje/MPDD (download it as MPDD.zip)"),
        "mvtec", "Jezek et al., ICUMT 2021"),
    DatasetInfo(
        "dagm2007", "DAGM 2007", "https://zenodo.org/records/12750201",
        "CC BY 4.0 (see the Zenodo record)", False,
        Archive("DAGM_2007.zip", (), None, _NO_HASH, None,
                "size not published; a manual download: fetch the class archives from "
                "https://zenodo.org/records/12750201 and zip the Class1 ... Class10 folders as DAGM_2007.zip"),
        "dagm", "Wieler, Hahn, DAGM 2007 competition",
        ("weak labels: ellipses around the defects, not pixel-accurate masks",)),
    DatasetInfo(
        "btad", "BTAD (beanTech Anomaly Detection)", "https://github.com/pankajmishra000/VT-ADL",
        "CC BY-SA 4.0 (share alike)", False,
        Archive("btad.zip", ("https://avires.dimi.uniud.it/papers/btad/btad.zip",),
                "461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
                "openvinotoolkit/anomalib, src/anomalib/data/datamodules/image/btech.py (DOWNLOAD_INFO.hashsum)",
                None, "about 1.2 GB"),
        "btad", "Mishra et al., VT-ADL, ISIE 2021"),
)}
"""The registry: one entry per dataset (``python -m lib.data list`` prints it)."""


def dataset_info(name: str | DatasetInfo) -> DatasetInfo:
    """The registry entry of ``name`` (a ``DatasetInfo`` is returned as it is)."""
    if isinstance(name, DatasetInfo):
        return name
    if name not in DATASETS:
        raise FetchError(f"name={name!r} is not a registered dataset; choose one of {sorted(DATASETS)} "
                         "(python -m lib.data list)")
    return DATASETS[name]


def default_datasets_dir() -> Path:
    """``<data dir>/datasets``: where ``fetch`` puts the real datasets unless given a root."""
    return default_data_dir() / "datasets"


def _root(root: PathLike | None) -> Path:
    return Path(root) if root is not None else default_datasets_dir()


# ----------------------------------------------------------------------------------
# Hashes: verification and the lock file
# ----------------------------------------------------------------------------------

def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_hex(value: str | None, parameter: str) -> str | None:
    if value is None:
        return None
    v = str(value).strip().lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise FetchError(f"{parameter}={value!r} is not a sha256 (64 hexadecimal digits)")
    return v


def verify(path: PathLike, sha256: str, *, name: str = "NAME", source: str = "") -> str:
    """Check that ``path`` has the sha256 ``sha256``; returns it, raises HashMismatchError naming the file, both
    hashes and what to do."""
    expected = _check_hex(sha256, "sha256")
    path = Path(path)
    if not path.is_file():
        raise FetchError(f"cannot verify {path}: no such file")
    actual = sha256_file(path)
    if actual != expected:
        raise HashMismatchError(
            f"{path} has sha256 {actual}, but {expected} is expected{f' ({source})' if source else ''}. The file "
            f"is corrupt, truncated or another version: delete it and run `python -m lib.data fetch {name}` again "
            f"to download it afresh; if you trust this file, pin its hash with "
            f"`python -m lib.data fetch {name} --sha256 {actual}`.")
    return actual


def _read_lock(root: Path) -> dict:
    try:
        value = json.loads((root / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def pinned_hash(name: str, root: PathLike | None = None) -> str | None:
    """The sha256 recorded for ``name``'s archive in ``<root>/hashes.lock.json``, or None."""
    entry = _read_lock(_root(root)).get(name)
    return entry.get("sha256") if isinstance(entry, dict) else None


def pin_hash(name: str, sha256: str, filename: str, root: PathLike | None = None, size: int | None = None) -> Path:
    """Record ``sha256`` for ``name``'s archive in ``<root>/hashes.lock.json`` (atomically); returns the lock file."""
    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = _read_lock(root)
    lock[name] = {"filename": filename, "sha256": _check_hex(sha256, "sha256"), "size": size,
                  "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = root / f".{LOCK_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, root / LOCK_FILE)
    return root / LOCK_FILE


# ----------------------------------------------------------------------------------
# Download: .part file, Range resume, retries with back-off
# ----------------------------------------------------------------------------------

_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


def _transient(e: BaseException) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code in _TRANSIENT_HTTP
    return isinstance(e, (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
                          socket.timeout, _Incomplete))


class _Incomplete(OSError):
    """The server closed the connection before the whole file arrived."""


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, label: str) -> None:
    """One request: continue ``part`` from its current size with a Range request (restart if the server ignores
    it); raise _Incomplete when the body ends before its declared length."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "diffusion-inspection-kit"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:    # the part already holds the whole file
            return
        raise
    with response:
        if offset and response.status != 206:
            offset = 0                  # the server ignored Range: start again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                     disable=not progress, leave=False) as bar:
            while True:
                try:
                    block = response.read(1 << 16)
                except http.client.IncompleteRead as e:
                    out.write(e.partial)
                    raise _Incomplete(f"connection closed after {out.tell()} bytes") from e
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
            if total is not None and out.tell() < total:
                raise _Incomplete(f"connection closed after {out.tell()} of {total} bytes")


def _try_url(url: str, part: Path, retries: int, backoff: float, timeout: float, progress: bool,
             label: str) -> str | None:
    """Fetch ``url`` into ``part``, retrying transient errors with back-off; None on success, else the error."""
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, progress, label)
            return None
        except Exception as e:  # noqa: BLE001 - sorted into transient (retried) and final below
            if not _transient(e):
                return f"{url}: {e}"
            if attempt == retries:
                return f"{url}: {e} (after {retries} retries)"
            time.sleep(backoff * 2 ** attempt)
    return f"{url}: no attempt made (retries={retries})"


def download(urls: str | Sequence[str], dest: PathLike, *, sha256: str | None = None, retries: int = 5,
             backoff: float = 1.0, timeout: float = 60.0, progress: bool = True, name: str = "NAME") -> Path:
    """Download the first URL that answers into ``dest``: via ``dest.part`` (resumed with HTTP Range), retrying
    transient errors ``retries`` times with back-off ``backoff · 2^k`` seconds, renamed to ``dest`` only after its
    sha256 matches ``sha256`` (None: not checked). Raises OfflineError when no URL can be reached."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    sha256 = _check_hex(sha256, "sha256")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        error = _try_url(url, part, retries, backoff, timeout, progress, dest.name)
        if error is not None:
            errors.append(error)
            continue
        if sha256 is not None:
            try:
                verify(part, sha256, name=name, source="the registry's hash")
            except HashMismatchError as e:
                part.unlink()
                raise HashMismatchError(f"downloaded from {url}: {e} The download ({part.name}) was deleted.") \
                    from None
        os.replace(part, dest)
        return dest
    raise OfflineError("; ".join(errors) or "no URL to download from")


# ----------------------------------------------------------------------------------
# Safe extraction (zip and tar)
# ----------------------------------------------------------------------------------

@dataclass
class _Member:
    name: str              # a clean relative POSIX path
    kind: str              # "file", "dir", "symlink", "hardlink"
    size: int
    link: str = ""
    handle: object = None  # the ZipInfo / TarInfo


def _clean(name: str, archive: Path) -> str:
    """A member name as a relative POSIX path, refused if absolute or if it holds ``..``."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or raw.startswith("//"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract the "
                                 "archive (it is not one of the kit's datasets, or it was tampered with).")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} climbs out of the target with '..'; refusing to "
                                 "extract the archive (tampered with, or not one of the kit's datasets).")
    return "/".join(parts)


def _link_inside(member: str, link: str, hard: bool) -> bool:
    """Whether a link's target, read lexically from the member's folder (symlink) or the root (hard link), stays
    inside the extraction root."""
    if link.startswith("/") or link.replace("\\", "/").startswith("/") or (len(link) > 1 and link[1] == ":"):
        return False
    base = [] if hard else list(PurePosixPath(member).parts[:-1])
    for p in PurePosixPath(link.replace("\\", "/")).parts:
        if p == "..":
            if not base:
                return False
            base.pop()
        elif p not in ("", "."):
            base.append(p)
    return bool(base) or not hard


def _members(archive: Path, opened) -> Iterator[_Member]:
    if isinstance(opened, zipfile.ZipFile):
        for info in opened.infolist():
            mode = info.external_attr >> 16
            name = _clean(info.filename, archive)
            if stat.S_ISLNK(mode):
                yield _Member(name, "symlink", 0, opened.read(info).decode("utf-8", "replace"), info)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a device or pipe; refusing.")
            elif info.is_dir():
                yield _Member(name, "dir", 0, handle=info)
            else:
                yield _Member(name, "file", info.file_size, handle=info)
        return
    for info in opened:
        name = _clean(info.name, archive)
        if info.isdir():
            yield _Member(name, "dir", 0, handle=info)
        elif info.isreg():
            yield _Member(name, "file", info.size, handle=info)
        elif info.issym():
            yield _Member(name, "symlink", 0, info.linkname, info)
        elif info.islnk():
            yield _Member(name, "hardlink", 0, info.linkname, info)
        else:
            raise UnsafeArchiveError(f"{archive}: member {info.name!r} is a device file or pipe; refusing to "
                                     "extract the archive.")


def _open_archive(archive: Path):
    if zipfile.is_zipfile(archive):
        return zipfile.ZipFile(archive)
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UnsafeArchiveError(f"{archive} is neither a zip nor a readable tar archive ({e}); it is truncated or "
                                 "not an archive. Delete it and download it again.") from e


def _copy(src: BinaryIO, dst: BinaryIO, limit: int, name: str) -> None:
    """Copy at most ``limit`` bytes (a member's declared size); more is an error."""
    left = limit
    while block := src.read(min(1 << 20, left + 1)):
        left -= len(block)
        if left < 0:
            raise UnsafeArchiveError(f"member {name!r} holds more data than it declares; refusing.")
        dst.write(block)


def _within(path: Path, tmp_real: str) -> bool:
    real = os.path.realpath(path)
    return real == tmp_real or real.startswith(tmp_real + os.sep)


def _write_member(opened, m: _Member, dest: Path, tmp_real: str) -> None:
    if not _within(dest.parent, tmp_real) or dest.is_symlink():
        raise UnsafeArchiveError(f"member {m.name!r} would be written through a link; refusing.")
    src = opened.open(m.handle) if isinstance(opened, zipfile.ZipFile) else opened.extractfile(m.handle)
    with src, open(dest, "wb") as out:
        _copy(src, out, m.size, m.name)


def safe_extract(archive: PathLike, target: PathLike, *, sha256: str | None = None,
                 max_bytes: int = MAX_EXTRACT_BYTES, max_members: int = MAX_MEMBERS) -> Path:
    """Extract a zip or tar ``archive`` into ``target`` safely and atomically; returns ``target``.

    Every member is checked before anything is written: absolute paths, ``..`` components, symbolic and hard links
    whose target lies outside, device files and pipes, more than ``max_members`` members or a declared total above
    ``max_bytes`` or the free disk space raise UnsafeArchiveError. Members are written into a temporary sibling of
    ``target`` (links last, so no file is written through one), which is renamed to ``target`` with a marker
    ``.extracted.json`` recording ``sha256`` (the archive's, computed when None) only when all succeeded."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise FetchError(f"archive {archive} does not exist")
    sha256 = _check_hex(sha256, "sha256") or sha256_file(archive)
    try:
        with _open_archive(archive) as opened:
            members, declared = [], 0
            for m in _members(archive, opened):     # checked as listed, before the next header is read
                members.append(m)
                declared += m.size
                if len(members) > max_members:
                    raise UnsafeArchiveError(f"{archive} has more than {max_members} members; refusing.")
                if declared > max_bytes:
                    raise UnsafeArchiveError(f"{archive} declares more than max_bytes={max_bytes} bytes of content "
                                             f"(member {m.name!r}: {m.size}); refusing (a damaged or hostile archive).")
            _check_links(archive, members)
            target.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(target.parent).free
            if declared > free:
                raise UnsafeArchiveError(f"{archive} declares {declared} bytes of content but only {free} bytes are "
                                         f"free under {target.parent}; free some space and run fetch again.")
            with atomic_folder(target, MARKER, {"archive": archive.name, "sha256": sha256}) as tmp:
                _extract_all(opened, members, tmp)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as e:
        raise UnsafeArchiveError(f"{archive} is corrupt or truncated ({type(e).__name__}: {e}); delete it and "
                                 "download it again.") from e
    return target


def _check_links(archive: Path, members: list[_Member]) -> None:
    for m in members:
        if m.kind in ("symlink", "hardlink") and not _link_inside(m.name, m.link, m.kind == "hardlink"):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a {m.kind} to {m.link!r}, outside the "
                                     "target; refusing to extract the archive.")


def _extract_all(opened, members: list[_Member], tmp: Path) -> None:
    tmp_real = os.path.realpath(tmp)
    for m in members:
        dest = tmp.joinpath(*m.name.split("/")) if m.name else tmp
        if m.kind == "dir":
            dest.mkdir(parents=True, exist_ok=True)
        elif m.kind == "file":
            dest.parent.mkdir(parents=True, exist_ok=True)
            _write_member(opened, m, dest, tmp_real)
    for m in members:   # links last: no member is ever written through one
        if m.kind not in ("symlink", "hardlink"):
            continue
        dest = tmp.joinpath(*m.name.split("/"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not _within(dest.parent, tmp_real) or dest.exists() or dest.is_symlink():
            raise UnsafeArchiveError(f"link member {m.name!r} would replace another member or be written through "
                                     "a link; refusing.")
        if m.kind == "hardlink":
            source = tmp.joinpath(*PurePosixPath(m.link.replace("\\", "/")).parts)
            # resolved, not read lexically: a path through a symlink of the archive may lead outside
            if not _within(source, tmp_real) or not source.is_file() or source.is_symlink():
                raise UnsafeArchiveError(f"hard link {m.name!r} points to {m.link!r}, which is not a file of the "
                                         "archive inside the target; refusing to extract the archive.")
            shutil.copyfile(source, dest)
        elif m.kind == "symlink":
            os.symlink(m.link, dest)
            if not _within(dest, tmp_real):
                raise UnsafeArchiveError(f"symlink {m.name!r} -> {m.link!r} resolves outside the target; refusing.")
    for m in members:   # again once all exist: a chain of links, each harmless when made, may now lead outside
        if m.kind == "symlink" and not _within(tmp.joinpath(*m.name.split("/")), tmp_real):
            raise UnsafeArchiveError(f"symlink {m.name!r} -> {m.link!r} resolves outside the target through the "
                                     "archive's other links; refusing to extract the archive.")


# ----------------------------------------------------------------------------------
# fetch: licence, archive (downloaded or dropped), verification, extraction, conversion
# ----------------------------------------------------------------------------------

def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _offline_message(info: DatasetInfo, archive: Path, expected: str | None, reason: str, root: Path) -> str:
    a = info.archive
    size = a.size_text
    where = ("\n".join(f"  URL:       {u}" for u in a.urls) if a.urls
             else f"  page:      {info.homepage} (a manual download)")
    hash_line = (f"  sha256:    {expected} ({a.hash_source if expected == a.sha256 else 'pinned'})" if expected
                 else f"  sha256:    not published; the first fetch records it in {root / LOCK_FILE}")
    return (f"cannot download {info.title}: {reason}.\nDownload it yourself (licence: {info.licence}):\n{where}\n"
            f"  file:      {a.filename} ({size})\n{hash_line}\n  put it in: {archive.parent}/\n"
            f"then run `python -m lib.data fetch {info.name}"
            f"{'' if root == default_datasets_dir() else f' --root {root}'}` again: it verifies and extracts the file "
            "you dropped.")


def fetch(name: str | DatasetInfo, root: PathLike | None = None, *, sha256: str | None = None,
          convert_to_mvtec: bool = True, retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
          progress: bool = True) -> Path:
    """Fetch a registered dataset into ``<root>/<name>`` and return its MVTec-layout folder (``convert_to_mvtec``
    False: the extracted folder). Shows the licence first; takes an archive already in ``<root>/<name>/downloads``
    or downloads it; verifies its sha256 (``sha256``, else the registry's, else the lock file's; with none, the
    first download records one and warns) before every extraction; extracts and converts once. A ``sha256`` given
    here that matches is pinned in ``<root>/hashes.lock.json``, and a pinned hash takes precedence over the
    registry's (with a warning where they differ)."""
    info = dataset_info(name)
    root = _root(root)
    home = root / info.name
    archive = home / "downloads" / info.archive.filename
    pinned = pinned_hash(info.name, root)
    expected = _check_hex(sha256, "sha256") or pinned or info.archive.sha256
    source = ("--sha256" if sha256 else f"recorded in {root / LOCK_FILE}" if pinned else info.archive.hash_source)
    if pinned and not sha256 and info.archive.sha256 and pinned != info.archive.sha256:
        warnings.warn(f"{info.title}: verifying against the hash pinned in {root / LOCK_FILE} ({pinned}), not the "
                      f"published one ({info.archive.sha256}, {info.archive.hash_source}); delete the entry "
                      f"{info.name!r} from the lock file to go back to the published hash.", stacklevel=2)
    _say(f"{info.title}: licence {info.licence}. {info.homepage}")
    if not archive.is_file():
        if not info.archive.urls:
            raise OfflineError(_offline_message(info, archive, expected, "it is a manual download", root))
        _say(f"downloading {info.archive.filename} ({info.archive.size_text}) to {archive.parent}")
        try:
            download(info.archive.urls, archive, sha256=expected, retries=retries, backoff=backoff, timeout=timeout,
                     progress=progress, name=info.name)
        except OfflineError as e:
            raise OfflineError(_offline_message(info, archive, expected, f"no network or no answer ({e})", root)) \
                from None
    if expected is None:
        actual = sha256_file(archive)
        lock = pin_hash(info.name, actual, archive.name, root, archive.stat().st_size)
        warnings.warn(f"{info.title} publishes no sha256; recorded {actual} for {archive} in {lock}. Later fetches "
                      "verify against it; compare it with a colleague's copy, or pin another with --sha256.",
                      stacklevel=2)
        expected, source = actual, f"recorded in {lock}"
    else:
        verify(archive, expected, name=info.name, source=source)
        if sha256 and _check_hex(sha256, "sha256") != pinned:    # --sha256: later plain fetches verify against it
            lock = pin_hash(info.name, expected, archive.name, root, archive.stat().st_size)
            _say(f"pinned sha256 {expected} for {info.name} in {lock}")
    raw = home / "raw"
    done = read_marker(raw, MARKER)
    if not done or done.get("sha256") != expected:
        _say(f"extracting {archive.name} into {raw}")
        safe_extract(archive, raw, sha256=expected)
    if not convert_to_mvtec:
        return raw
    return convert_dataset(info.layout, raw, home / "mvtec")


def converted_root(name: str | DatasetInfo, root: PathLike | None = None) -> Path | None:
    """The MVTec-layout folder of a fetched dataset (``<root>/<name>/mvtec``, or for MVTec AD and MPDD the layout
    inside ``raw/``), or None when it has not been fetched and converted completely."""
    info = dataset_info(name)
    home = _root(root) / info.name
    if not read_marker(home / "raw", MARKER):
        return None
    if info.layout == "mvtec":
        try:
            return find_layout_root(home / "raw")
        except DatasetError:
            return None
    return home / "mvtec" if read_marker(home / "mvtec", CONVERTED_MARKER) else None


def resolve_data_root(value: str | os.PathLike | None, root: PathLike | None = None) -> Path | None:
    """A notebook's ``data_root`` parameter -> a folder: None stays None (the embedded benchmark), a registry name
    (``"mvtec_ad"``) -> its converted MVTec-layout folder under ``root`` (default ``<data dir>/datasets``), else an
    existing folder path. Raises DatasetError saying what to run when the dataset is not fetched."""
    if value is None:
        return None
    if isinstance(value, str) and value in DATASETS:
        found = converted_root(value, root)
        if found is None:
            raise DatasetError(f"data_root={value!r}: dataset {DATASETS[value].title} is not fetched under "
                               f"{_root(root)}; run `python -m lib.data fetch {value}"
                               f"{'' if root is None else f' --root {root}'}` first.")
        return found
    path = Path(value)
    if not path.is_dir():
        raise DatasetError(f"data_root={str(value)!r} is neither an existing folder nor a registered dataset "
                           f"({', '.join(sorted(DATASETS))}); pass an MVTec AD-layout folder, a dataset name, or None "
                           "for the embedded benchmark.")
    return path
