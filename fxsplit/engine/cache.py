"""The content-addressed cache: entries, manifests, verification, commit, discard.

Layout (see the package docstring)::

    cache_dir/<key>/{work/, job.log, manifest.json}    complete, verified entries
    cache_dir/.tmp/                                    entries being built or unpacked
    cache_dir/_failed/<job id>/                        the last failed attempt of a job

manifest.json: ``format``, ``key``, ``id``, ``partition``, ``step``, ``fxsplit`` (source digest)
and ``tools`` (name -> version) the key was computed for, ``meta``, ``seconds``, ``start``,
``end``, ``worker``, ``created``, ``files`` (relative path -> [size, sha256] or ["L", target]).

Also the tar helpers that carry artifacts to and from remote workers, and
:func:`copy_artifacts` (an entry -> the user's output directory).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterable

from .jobs import ENGINE_FORMAT, safe_name

TAIL_LINES = 30
MANIFEST = "manifest.json"
WORK = "work"
LOG = "job.log"
TMP = ".tmp"
FAILED = "_failed"
STALE_TMP_SECONDS = 24 * 3600


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/fxsplit/<parts>`` (default ``~/.cache/fxsplit/<parts>``): what fxsplit keeps per user and
    host across builds (precompiled headers, Yosys' cell libraries)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "fxsplit", *parts)


# ----------------------------------------------------------------------------- manifest / verify

def scan(root: Path) -> dict[str, list]:
    """size + sha256 of every file under root (symlinks recorded by target)."""
    out: dict[str, list] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if os.path.islink(p):
                out[rel] = ["L", os.readlink(p)]
                continue
            with open(p, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            out[rel] = [os.path.getsize(p), digest]
    return out


def read_manifest(entry: Path) -> dict | None:
    try:
        with open(entry / MANIFEST, "rb") as f:
            m = json.loads(f.read())
        if not isinstance(m, dict) or m.get("format") != ENGINE_FORMAT or not isinstance(m.get("files"), dict):
            return None
        return m
    except (OSError, ValueError):
        return None


def verify_entry(entry: str | Path, key: str | None = None) -> dict | None:
    """Return the manifest of a complete, unmodified cache entry, else None.

    Checks the manifest parses, names ``key``, and that ``work/`` holds exactly the files it
    lists with the same sizes (a cheap stat pass first) and sha256 digests.
    """
    entry = Path(entry)
    m = read_manifest(entry)
    if m is None or (key is not None and m.get("key") != key):
        return None
    work = entry / WORK
    files: dict = m["files"]
    # cheap pass: the set of names and sizes
    seen = 0
    try:
        for dirpath, dirnames, filenames in os.walk(work):
            rel_dir = os.path.relpath(dirpath, work)
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                rec = files.get(rel)
                if rec is None:
                    return None
                p = os.path.join(dirpath, name)
                if rec[0] == "L":
                    if not os.path.islink(p) or os.readlink(p) != rec[1]:
                        return None
                elif os.path.islink(p) or os.path.getsize(p) != rec[0]:
                    return None
                seen += 1
    except OSError:
        return None
    if seen != len(files) or not work.is_dir():
        return None
    # full pass: contents
    try:
        for rel, rec in files.items():
            if rec[0] == "L":
                continue
            with open(work / rel, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != rec[1]:
                    return None
    except OSError:
        return None
    return m


def manifest_matches(manifest: dict, env: dict) -> bool:
    """Does an entry's manifest record the fxsplit digest and tool versions of ``env``?"""
    return (manifest.get("fxsplit") == env.get("fxsplit")
            and (manifest.get("tools") or {}) == (env.get("tools") or {}))


def discard(path: Path, cache_dir: Path) -> None:
    """Remove a directory, first renaming it into .tmp so a half-removed tree is never looked up."""
    if not path.exists():
        return
    trash = cache_dir / TMP / f"trash-{uuid.uuid4().hex}"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


def tail(path: Path | None, n: int = TAIL_LINES) -> str | None:
    """The last ``n`` lines of a log (read from its last 64 KiB)."""
    if path is None or not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        data = f.read()
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:])


# ----------------------------------------------------------------------------- tar helpers

def tar_dir(root: Path, names: Iterable[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        for n in names:
            if (root / n).exists() or (root / n).is_symlink():
                tf.add(root / n, arcname=n)
    return buf.getvalue()


def untar(data: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        tf.extractall(dest, filter="data")


# ----------------------------------------------------------------------------- the cache of one run

class Cache:
    """``cache_dir`` as one run of the engine sees it: look up, commit, keep failed attempts.

    A build happens in a *root* directory under ``.tmp`` (``work/`` + ``job.log``); commit
    writes the manifest into it and renames it to ``cache_dir/<key>``.
    """

    def __init__(self, cache_dir: str | Path, log_dir: str | Path | None = None):
        self.dir = Path(cache_dir).resolve()
        self.tmp = self.dir / TMP
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(log_dir).resolve() if log_dir is not None else None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._tars: dict[str, bytes] = {}

    def new_root(self, key: str) -> Path:
        """A fresh (not yet created) build directory under .tmp for ``key``."""
        return self.tmp / f"{key[:16]}-{uuid.uuid4().hex[:12]}"

    @staticmethod
    def unpack_into(root: Path, data: bytes) -> Path:
        """A remote worker's tar of ``work/`` + ``job.log`` -> the build directory ``root`` (under .tmp)."""
        untar(data, root)
        (root / WORK).mkdir(exist_ok=True)
        return root

    def tar_of(self, key: str) -> bytes:
        """The committed entry ``key``'s ``work/`` as tar bytes (for a remote dependent; memoized)."""
        if key not in self._tars:
            self._tars[key] = tar_dir(self.dir / key, [WORK])
        return self._tars[key]

    def lookup(self, key: str, env: dict | None = None) -> dict | None:
        """The manifest of the sound entry ``key``, else None.

        An entry that does not verify, or whose manifest records another fxsplit digest or
        other tool versions than ``env`` (``{"fxsplit": ..., "tools": {...}}``, what the key
        was computed for), is discarded: the job is rebuilt.
        """
        entry = self.dir / key
        if not entry.exists():
            return None
        m = verify_entry(entry, key)
        if m is not None and env is not None and not manifest_matches(m, env):
            m = None
        if m is None:
            discard(entry, self.dir)
        return m

    def commit(self, key: str, root: Path, record: dict) -> Path:
        """Write the manifest (``record`` + the files' digests) into ``root``, rename it to
        ``cache_dir/<key>``; returns the entry. If a sound entry appeared meanwhile, keep it.

        ``record`` holds ``fxsplit`` and ``tools`` (what the key was computed for), the job's
        identity, ``meta`` and timings."""
        manifest = {"format": ENGINE_FORMAT, "key": key, **record, "created": time.time(),
                    "files": scan(root / WORK)}
        with open(root / MANIFEST, "w") as f:
            json.dump(manifest, f)
        dest = self.dir / key
        try:
            os.rename(root, dest)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # somebody else committed the same key meanwhile; keep theirs if it is sound
            theirs = verify_entry(dest, key)
            if theirs is None or not manifest_matches(theirs, record):
                discard(dest, self.dir)
                os.rename(root, dest)
            else:
                shutil.rmtree(root, ignore_errors=True)
        return dest

    def keep_failed(self, job_id: str, root: Path | None) -> Path | None:
        """Move a failed attempt's build directory to ``_failed/<job id>`` (replacing the last one)."""
        if root is None or not root.exists():
            return None
        dst = self.dir / FAILED / safe_name(job_id)
        discard(dst, self.dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if (root / "inputs").exists():
            shutil.rmtree(root / "inputs", ignore_errors=True)
        (root / "worker.pid").unlink(missing_ok=True)
        os.rename(root, dst)
        return dst

    def log_copy(self, job_id: str, src: Path) -> Path:
        """Copy a job's log to ``log_dir`` if one was given; returns the path to report."""
        if self.log_dir is None or not src.exists():
            return src
        dst = self.log_dir / f"{safe_name(job_id)}.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(src, dst)
            return dst
        return src

    def sweep_tmp(self) -> None:
        """Remove leftovers of runs that died more than a day ago."""
        now = time.time()
        with contextlib.suppress(OSError):
            for e in os.scandir(self.tmp):
                with contextlib.suppress(OSError):
                    if now - e.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS:
                        shutil.rmtree(e.path, ignore_errors=True)


# ----------------------------------------------------------------------------- output directory

def copy_artifacts(src: Path, dest: Path, key: str) -> Path:
    """Atomically copy a cache entry to ``dest`` (skipped when ``dest`` already holds that key)."""
    stamp = dest / ".fxsplit-key"
    if stamp.exists() and stamp.read_text() == key:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    shutil.copytree(src, tmp / "x", symlinks=True)
    (tmp / "x" / ".fxsplit-key").write_text(key)
    old = dest.parent / f".{dest.name}-old-{os.getpid()}"
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp / "x", dest)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return dest
