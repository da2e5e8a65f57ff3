"""Fetching a published file: download, the publisher's checksum before anything unpickles it,
zip extraction of the one named member, and the cache folders.

* Hub files (``hub``/``filename``/``revision``) go through ``huggingface_hub.hf_hub_download`` into
  its cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``); a cached file is found with no network.
* URL files are streamed by one downloader (``urllib`` with a tqdm progress bar, no retry loop) to
  a temporary file, checked, then renamed into ``<cache>/sources/`` (``NASNETZOO_CACHE``, else
  ``$XDG_CACHE_HOME/nasnetzoo``, else ``~/.cache/nasnetzoo``).
* Network calls get ``NASNETZOO_DOWNLOAD_TIMEOUT`` seconds (default 15) and one try: a refused or
  silent host fails fast with one line that names the URL and the exact path to put the file at.
  ``HF_HUB_OFFLINE=1`` gives the same line without trying.
* A file that fails its checksum is deleted (if nasnetzoo or the hub cache put it there), so it
  can never pass as valid later; a truncated or interrupted download never reaches its final name.
* A write that fails (full disk, read-only cache) is the disk's fault: :class:`CacheWriteError`
  says so and nothing downloaded is deleted.  Temporaries of a killed process are cleaned under
  the file's lock; a lock file planted as a link is refused (FileLock would truncate its target).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, Optional

from .._version import __version__
from ..errors import NasNetZooError, describe_os_error
from ..safe_paths import env_float, refuse_link, remove_stale_temporaries
from .format import ChecksumError, WeightsUnavailableError
from .sources import WeightsSource

_TRUE = {"1", "ON", "YES", "TRUE"}
MAX_MEMBER_BYTES = 4 << 30   # the largest published member is 356 MB; refuse zip bombs early
CHUNK = 1 << 20


# ---------------------------------------------------------------------------- places
def cache_root() -> Path:
    """nasnetzoo's own cache (downloaded URL sources and converted files), read at call time."""
    if os.environ.get("NASNETZOO_CACHE"):
        return Path(os.path.expanduser(os.environ["NASNETZOO_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.path.expanduser(base)) / "nasnetzoo"


def hub_cache_dir() -> Path:
    """The hub cache huggingface_hub uses, read from the environment at call time."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it at import."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value is not None and value.strip():
            return value.strip().upper() in _TRUE
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def timeout_s() -> float:
    return env_float("NASNETZOO_DOWNLOAD_TIMEOUT", 15.0, 1.0, 3600.0)


# A write that fails for one of these is the disk's fault, never the download's.
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}


class CacheWriteError(NasNetZooError, OSError):
    """The cache cannot be written (full disk, read-only or not ours); what was downloaded is kept."""

    def __str__(self) -> str:
        return str(self.strerror)


def _disk_error(err: OSError, where: Path, what: str, kept: str = "") -> CacheWriteError:
    return CacheWriteError(err.errno, f"cannot write {what} in {str(where)!r}: {describe_os_error(err)}"
                                      f"{'; ' + kept if kept else ''}. Free space there, or point NASNETZOO_CACHE "
                                      "(HF_HOME for hub files) at a writable disk with room.")


def local_path(source: WeightsSource) -> Path:
    """Where the downloaded file lives (and where to put it by hand on a machine without network)."""
    if source.hub:
        folder = hub_cache_dir() / ("models--" + source.hub.replace("/", "--"))
        return folder / "snapshots" / source.revision / source.filename
    return cache_root() / "sources" / source.file_name


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An inter-process lock beside ``path``: two processes fetching one file take turns."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = refuse_link(path.with_name(path.name + ".lock"), "lock file")  # FileLock would truncate a link's target
    with FileLock(str(lock)):
        for written in (path, path.with_name(path.name + ".sha256")):   # the file and its digest
            remove_stale_temporaries(written)   # what a killed writer of them left (we hold the lock)
        _remove_stale_work_dirs(path.parent)   # extraction folders of dead processes
        yield


# ---------------------------------------------------------------------------- checksums
def file_digest(path: Path, kind: str) -> str:
    digest = hashlib.sha1() if kind == "sha1" else hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(actual: str, source: WeightsSource) -> bool:
    return actual.startswith(source.checksum) if source.weak_checksum else actual == source.checksum


def _owned(path: Path) -> bool:
    """True for files nasnetzoo or the hub put in a cache (a user's own file is never deleted)."""
    resolved = path.resolve()
    return any(root.resolve() in resolved.parents for root in (cache_root(), hub_cache_dir()))


def _discard(path: Path) -> bool:
    """Delete a cached file (and the hub blob a snapshot link points to); True if anything went."""
    if not _owned(path):
        return False
    target = path.resolve()
    removed = False
    for item in (path, target):
        if item.is_symlink() or item.exists():
            item.unlink()
            removed = True
    return removed


def verify(path: Path, source: WeightsSource, *, shown: Optional[Path] = None, discard: Optional[Path] = None
           ) -> Path:
    """Raise ChecksumError (after deleting ``discard``, default ``path``) unless the digest matches."""
    actual = file_digest(path, "sha1" if source.checksum_kind == "sha1" else "sha256")
    if _matches(actual, source):
        return path
    removed = _discard(discard or path)
    fate = ("it was removed from the cache, so it will not be used again" if removed
            else "the file was left in place")
    kind = source.checksum_kind.replace("_prefix", " prefix")
    raise ChecksumError(
        f"{source.model}: checksum mismatch for {(shown or path).name} ({describe_file(source)}): {kind} is "
        f"{actual}, expected {source.checksum} (the publisher's); {fate}. The download was corrupted or the "
        f"file changed: run `nasnetzoo download {source.model}` to fetch it again; if the mismatch persists, "
        "the published file differs from the registry entry (report it).")


# ---------------------------------------------------------------------------- download
def describe_file(source: WeightsSource) -> str:
    if source.hub:
        return f"the weights file {source.filename} (hub repo {source.hub}, revision {source.revision})"
    return f"the weights file {source.file_name} ({source.url})"


def _unavailable(source: WeightsSource, reason: str) -> WeightsUnavailableError:
    """One line: what is missing, why, the URL, and the exact path to put the file at."""
    what = source.member if source.archive else source.file_name
    local = f"nasnetzoo.load({source.model!r}, weights='path/to/{what}')" if source.layout == "nasnetzoo" \
        else f"`nasnetzoo convert --from {source.layout} {what} -o file.safetensors --arch {source.model}`"
    file = describe_file(source) if source.hub else f"the weights file {source.file_name}"
    return WeightsUnavailableError(
        f"{source.model}: {file} {reason}. Fetch {source.where} on a machine with network "
        f"(`nasnetzoo download {source.model}` there) and put the file at {local_path(source)} (the cache is "
        f"set by {'HF_HUB_CACHE or HF_HOME' if source.hub else 'NASNETZOO_CACHE'}); or use a local copy with {local}.")


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    inner = getattr(err, "reason", err)
    if isinstance(inner, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout_s():g} s"
    text = str(inner).strip().splitlines()
    return text[0] if text else type(inner).__name__


def download_url(source: WeightsSource, dest: Path) -> None:
    """Stream ``source.url`` into a temporary file beside ``dest``; verified, then renamed to ``dest``."""
    from tqdm.auto import tqdm

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    if tmp.is_symlink() or tmp.exists():   # a reused PID's leftover (we hold dest's lock)
        tmp.unlink()
    request = urllib.request.Request(source.url, headers={"User-Agent": f"nasnetzoo/{__version__}"})
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout_s())
        except (urllib.error.URLError, OSError) as err:
            raise _unavailable(source, f"could not be downloaded ({_reason(err)}); check the network") from None
        with response, open(tmp, "xb") as handle:
            expected = int(response.headers.get("Content-Length") or 0) or None
            written = 0
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=source.file_name,
                      leave=False, disable=None) as bar:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, urllib.error.URLError) as err:
                        raise _unavailable(source, f"could not be downloaded (it broke off after {written} "
                                                   f"bytes: {_reason(err)}); nothing was kept") from None
                    if not block:
                        break
                    try:
                        handle.write(block)
                    except OSError as err:
                        raise _disk_error(err, dest.parent, f"the download of {source.file_name}",
                                          f"the partial file was removed after {written} bytes") from None
                    written += len(block)
                    bar.update(len(block))
        if expected is not None and written != expected:
            raise _unavailable(source, f"could not be downloaded (it stopped at {written} of {expected} bytes);"
                                       " nothing was kept")
        check_payload(tmp, source, shown=dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fetch_hub(source: WeightsSource, force: bool) -> Path:
    from huggingface_hub import hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    kwargs = dict(revision=source.revision, cache_dir=str(hub_cache_dir()), library_name="nasnetzoo",
                  library_version=__version__)
    if not force:
        with contextlib.suppress(LocalEntryNotFoundError, OSError):
            return Path(hf_hub_download(source.hub, source.filename, local_files_only=True, **kwargs))
    if is_offline():
        raise _unavailable(source, "is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE is set)")
    probe(hf_hub_url(source.hub, source.filename, revision=source.revision), source)
    try:
        return Path(hf_hub_download(source.hub, source.filename, force_download=force, local_files_only=False,
                                    etag_timeout=timeout_s(), **kwargs))
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise _disk_error(err, hub_cache_dir(), f"the hub file {source.filename}",
                              "the hub cache is not writable") from None
        raise _unavailable(source, f"is not cached and could not be downloaded ({_reason(err)}); check the "
                                   "network or proxy settings") from None
    except (HfHubHTTPError, LocalEntryNotFoundError) as err:
        raise _unavailable(source, f"is not cached and could not be downloaded ({_reason(err)}); check the "
                                   "network or proxy settings") from None


def probe(url: str, source: WeightsSource) -> None:
    """One HEAD request with the short timeout before handing over to huggingface_hub, which
    retries a refused or silent host with back-off for minutes."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s()).close()
    except urllib.error.HTTPError:
        return  # the host answers: huggingface_hub reports what it says
    except (urllib.error.URLError, OSError) as err:
        raise _unavailable(source, f"is not cached and could not be downloaded ({_reason(err)}); check the "
                                   "network or proxy settings") from None


def fetch(source: WeightsSource, *, force: bool = False) -> Path:
    """The local, checksum-verified copy of ``source`` (downloaded when missing)."""
    if source.hub:
        path = _fetch_hub(source, force)
        check_payload(path, source)
        return path
    dest = local_path(source)
    with locked(dest):
        if dest.is_file() and not force:
            check_payload(dest, source)
            return dest
        if is_offline():
            raise _unavailable(source, "is not downloaded yet and downloads are off (HF_HUB_OFFLINE is set)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        download_url(source, dest)
    return dest


# ---------------------------------------------------------------------------- archives
def check_payload(path: Path, source: WeightsSource, *, shown: Optional[Path] = None) -> None:
    """Verify the checksum of what will be read: the file, or its archive member."""
    if not source.archive:
        verify(path, source, shown=shown)
        return
    with extracted(path, source) as member:
        verify(member, source, shown=Path(source.member), discard=path)


@contextlib.contextmanager
def extracted(archive: Path, source: WeightsSource) -> Iterator[Path]:
    """The archive's one named member, copied to a temporary file (never ``extractall``: no path
    from the archive is ever written to), removed afterwards."""
    import tempfile

    _remove_stale_work_dirs(archive.parent)
    try:
        work = Path(tempfile.mkdtemp(prefix=f"nasnetzoo-{os.getpid()}-", dir=archive.parent))
    except OSError as err:
        raise _disk_error(err, archive.parent, f"the member {source.member}", "the archive was kept") from None
    try:
        target = work / "member"
        try:
            with zipfile.ZipFile(archive) as bundle:
                try:
                    info = bundle.getinfo(source.member)
                except KeyError:
                    names = ", ".join(bundle.namelist()[:5])
                    raise ChecksumError(f"{source.model}: {archive.name} from {source.where} holds no "
                                        f"{source.member!r} (it holds {names}); the file was deleted.") from None
                if info.file_size > MAX_MEMBER_BYTES:
                    raise ChecksumError(f"{source.model}: {source.member} in {archive.name} claims "
                                        f"{info.file_size} bytes, over the {MAX_MEMBER_BYTES} limit; refused.")
                with bundle.open(info) as src, open(target, "wb") as dst:
                    _copy_member(src, dst, archive, source)
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, zlib.error) as err:
            removed = _discard(archive)
            raise ChecksumError(f"{source.model}: {archive.name} from {source.where} is not a readable zip "
                                f"({_reason(err)}), probably a truncated download; "
                                f"{'it was deleted' if removed else 'the file was left in place'}. Run "
                                f"`nasnetzoo download {source.model} --force`.") from None
        except ChecksumError:
            _discard(archive)
            raise
        yield target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_member(src, dst, archive: Path, source: WeightsSource) -> None:
    """Copy an archive member; a failed write (full disk: a zip bomb on a small disk too) is the
    disk's fault and keeps the archive; a failed read is an unreadable archive."""
    written = 0
    while True:
        block = src.read(CHUNK)   # BadZipFile / zlib.error / EOFError: the archive's fault
        if not block:
            return
        try:
            dst.write(block)
        except OSError as err:
            raise _disk_error(err, archive.parent, f"{source.member} extracted from {archive.name} "
                                                    f"({written} bytes written)",
                              f"{archive.name} was kept (its checksum was not found wrong)") from None
        written += len(block)


def _remove_stale_work_dirs(folder: Path) -> None:
    """Extraction folders (``nasnetzoo-PID-*``) whose process is gone: left by a kill."""
    from ..safe_paths import _pid_alive

    if not folder.is_dir():
        return
    for item in folder.glob("nasnetzoo-*-*"):
        pid = item.name.split("-")[1]
        if pid.isdigit() and not _pid_alive(int(pid)) and item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
