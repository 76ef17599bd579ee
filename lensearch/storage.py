"""Storage locations that are URIs: object storage (``s3://bucket/prefix``, any S3-compatible server) or any other
filesystem ``pyarrow.fs`` opens from a URI, next to plain paths (a local or shared filesystem).

Everything here is the bottom layer: the search (its store), the training loop (a trial's checkpoints, the
data file) and the export use it; it imports nothing from lensearch but :mod:`lensearch.errors`.

- :func:`is_uri` tells a URI (``scheme://...``, not ``file://``) from a path; plain paths never reach the rest.
- The filesystem of a URI is ``pyarrow.fs.FileSystem.from_uri``: for S3 the endpoint, region and credentials
  come from the standard AWS settings (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for an S3-compatible
  server such as MinIO or moto, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, or a
  profile / instance role). The endpoint and region (never credentials) are carried to trials on other nodes
  (:func:`carried_env`, :func:`apply_env`).
- :func:`upload`, :func:`download` (atomic: a temporary name, then a rename), :func:`upload_tree`,
  :func:`download_tree`, :func:`read_bytes`, :func:`write_bytes`, :func:`exists`, :func:`list_names`.
- :func:`fetch`: a node-local copy of a remote file, downloaded once per node into the cache and keyed by the
  URI, size and modification time (so a replaced object is fetched again, an unchanged one never).
- :func:`cache_root`: ``$LENSEARCH_CACHE``, else ``$XDG_CACHE_HOME/lensearch``, else ``~/.cache/lensearch``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from lensearch.errors import UserError

__all__ = ["apply_env", "cache_root", "carried_env", "download", "download_tree", "exists", "fetch", "is_uri",
           "join", "list_names", "parent", "read_bytes", "upload", "upload_tree", "write_bytes"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# settings that say *where* the object store is (carried to trials on other nodes); never credentials
CARRIED = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
_CHUNK = 8 << 20


def is_uri(location: Any) -> bool:
    """Whether ``location`` is a storage URI (``s3://...``, ``gs://...``), not a local or shared path.
    ``file://`` URIs count as paths (use :func:`local_path`)."""
    if not isinstance(location, str):
        return False
    match = _SCHEME.match(location)
    return bool(match) and match.group(1).lower() != "file"


def join(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended, one ``/`` between each."""
    out = uri.rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out += "/" + part
    return out


def parent(uri: str) -> str:
    """The URI one level up (``s3://b/a/c`` -> ``s3://b/a``)."""
    head, _, _ = uri.rstrip("/").rpartition("/")
    return head


def name(uri: str) -> str:
    return uri.rstrip("/").rpartition("/")[2]


def carried_env() -> dict[str, str]:
    """The object-store settings of this process that trials on other nodes need too (endpoint, region)."""
    return {k: os.environ[k] for k in CARRIED if os.environ.get(k)}


def apply_env(env: dict[str, str] | None) -> None:
    """Take over ``env`` (from :func:`carried_env` on the driver) where this process has no setting of its own."""
    for key, value in (env or {}).items():
        if key in CARRIED and not os.environ.get(key):
            os.environ[key] = value
            _FS.clear()


_FS: dict[tuple, Any] = {}


def _resolve(uri: str):
    """``(filesystem, path inside it)`` for ``uri``; one filesystem object per bucket and settings per process."""
    import pyarrow.fs as pafs

    match = _SCHEME.match(uri)
    if not match:
        raise UserError(f"{uri}: not a storage URI")
    scheme = match.group(1).lower()
    rest = uri[match.end():]
    bucket = rest.split("/", 1)[0]
    key = (scheme, bucket, tuple(os.environ.get(k, "") for k in CARRIED))
    if key not in _FS:
        try:
            fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}")
        except Exception as err:  # unknown scheme, no such bucket/region, bad settings
            raise UserError(f"{uri}: cannot open this storage ({type(err).__name__}: {err})") from None
        _FS[key] = fs
    return _FS[key], rest.rstrip("/")


def filesystem(uri: str):
    """``(pyarrow filesystem, path)`` of ``uri`` (for Ray Tune's ``storage_filesystem``)."""
    return _resolve(uri)


def _info(uri: str):
    fs, path = _resolve(uri)
    return fs.get_file_info(path)


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    return _info(uri).type != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    import pyarrow.fs as pafs

    return _info(uri).type == pafs.FileType.File


def list_names(uri: str) -> list[str]:
    """The names directly under ``uri`` (files and folders; empty when there is nothing)."""
    import pyarrow.fs as pafs

    fs, path = _resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted(i.base_name for i in infos)


def _files_under(uri: str) -> list[tuple[str, Any]]:
    """``(relative path, FileInfo)`` of every file under ``uri``."""
    import pyarrow.fs as pafs

    fs, path = _resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return [(i.path[len(path):].lstrip("/"), i) for i in infos if i.type == pafs.FileType.File]


def read_bytes(uri: str) -> bytes | None:
    """The object's contents, or ``None`` when there is none."""
    if not is_file(uri):
        return None
    fs, path = _resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = _resolve(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def upload(local: str | os.PathLike, uri: str) -> None:
    """Copy the local file ``local`` to ``uri`` (an object appears whole or not at all)."""
    fs, path = _resolve(uri)
    with open(local, "rb") as src, fs.open_output_stream(path) as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def download(uri: str, local: str | os.PathLike) -> bool:
    """Copy ``uri`` to the local file ``local`` (written to a temporary name and renamed, so readers never see
    half a file); ``False`` when ``uri`` does not exist."""
    if not is_file(uri):
        return False
    fs, path = _resolve(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.part")
    try:
        with fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def upload_tree(local_dir: str | os.PathLike, uri: str, *, skip: tuple[str, ...] = ()) -> int:
    """Upload every file under ``local_dir`` to the same relative path under ``uri``, leaving out top-level
    entries named in ``skip`` and hidden lock files; returns the number of files."""
    root = Path(local_dir)
    count = 0
    if not root.is_dir():
        return 0
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in skip or path.name.endswith((".lock", ".tmp", ".part")):
            continue
        upload(path, join(uri, rel.as_posix()))
        count += 1
    return count


def download_tree(uri: str, local_dir: str | os.PathLike, *, only: tuple[str, ...] | None = None,
                  skip: tuple[str, ...] = (), missing_only: bool = False) -> int:
    """Download the files under ``uri`` into ``local_dir`` (``only``: just these relative paths or top-level
    folders; ``skip``: not these top-level entries; ``missing_only``: keep local files that exist); returns
    the number of files downloaded."""
    root = Path(local_dir)
    count = 0
    for rel, _ in _files_under(uri):
        top = rel.split("/", 1)[0]
        if top in skip or (only is not None and rel not in only and top not in only):
            continue
        if missing_only and (root / rel).exists():
            continue
        download(join(uri, rel), root / rel)
        count += 1
    return count


def cache_root() -> Path:
    """Where node-local copies live (data files, checkpoints, a driver's working copy of a remote search)."""
    if os.environ.get("LENSEARCH_CACHE"):
        return Path(os.environ["LENSEARCH_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "lensearch").resolve()


def slug(uri: str) -> str:
    """A short, stable folder name for ``uri``: readable tail + hash."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", uri.rstrip("/").rpartition("/")[2])[:40] or "root"
    return f"{tail}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def fetch(uri: str, kind: str = "files") -> Path:
    """A local copy of the remote file ``uri``, downloaded once per node: ``<cache>/<kind>/<key>/<name>`` where
    the key is the URI with the object's size and modification time (a replaced object is a new key). Processes
    on one node share the download (a lock file)."""
    info = _info(uri)
    import pyarrow.fs as pafs

    if info.type != pafs.FileType.File:
        raise UserError(f"{uri}: no such file")
    stamp = f"{uri}|{info.size}|{info.mtime_ns}"
    folder = cache_root() / kind / hashlib.sha256(stamp.encode()).hexdigest()[:20]
    target = folder / (name(uri) or "file")
    if target.is_file() and target.stat().st_size == info.size:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target.is_file() and target.stat().st_size == info.size):
            download(uri, target)
    return target


def local_copy(location: str | os.PathLike) -> Path:
    """``location`` as a local path: a path as it is, a URI through :func:`fetch`."""
    return fetch(location) if is_uri(location) else Path(location)
