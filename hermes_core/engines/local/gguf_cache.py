"""A crash-safe on-disk cache of GGUF files converted to safetensors (model + tokenizer).

De-quantising a GGUF through transformers is slow (~13 s for 135M params), so it is done once per
GGUF file. Each entry is built in a private temp dir inside the cache and renamed into place in
one atomic step, so a crash leaves at most an unused temp dir and concurrent writers cannot
corrupt an entry (the first rename wins; later writers use the winner's entry).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "HERMES_CACHE_DIR"
APP_NAME = "hermes-function-calling"
GGUF_SUBDIR = "gguf"
MARKER = "hermes-cache.json"
TMP_PREFIX = ".tmp-"
CACHE_FORMAT = 1
# Temp dirs untouched this long are leftovers of a crashed writer and are removed.
STALE_TMP_SECONDS = 24 * 3600


def cache_base(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The library's cache directory: ``cache_dir``, else $HERMES_CACHE_DIR, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def gguf_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where converted GGUF models live (one sub-directory per GGUF file identity)."""
    return cache_base(cache_dir) / GGUF_SUBDIR


def cache_key(gguf_path: Path) -> str:
    """A cheap identity for a GGUF file: its name, size and mtime, plus the converter's version."""
    import transformers

    stat = gguf_path.stat()
    identity = f"{gguf_path.name}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_FORMAT}|{transformers.__version__}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", gguf_path.stem)[:80] or "model"
    return f"{stem}-{digest}"


def is_complete(entry: Path) -> bool:
    """Whether ``entry`` is a finished, intact cache entry: its marker (written last) lists every file
    with its size, so a truncated or deleted file makes the entry incomplete."""
    try:
        info = json.loads((entry / MARKER).read_text())
        files = info["files"]
        return bool(files) and all((entry / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def discard(entry: Path) -> None:
    """Remove a cache entry: first renamed aside (atomic) so no reader sees it half-deleted."""
    if not entry.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}discard-", dir=entry.parent))
    try:
        os.rename(entry, aside / entry.name)
    except OSError:
        pass
    shutil.rmtree(aside, ignore_errors=True)


def remove_stale_temps(root: Path, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete temp dirs of crashed writers that nobody has touched for ``max_age`` seconds."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for child in root.iterdir():
        if not child.name.startswith(TMP_PREFIX) or not child.is_dir():
            continue
        try:
            newest = max([child.stat().st_mtime] + [p.stat().st_mtime for p in child.rglob("*")])
        except OSError:
            continue
        if now - newest > max_age:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def cached_conversion(gguf_path: Path, root: Path, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return the cache entry for ``gguf_path``, calling ``build(tmp_dir)`` to create it if missing.

    Returns ``(entry_dir, built)``; ``built`` is False when an existing entry was reused.
    """
    entry = root / cache_key(gguf_path)
    if is_complete(entry):
        return entry, False
    if entry.exists():  # not ours to trust: never finished (or tampered with)
        discard(entry)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{entry.name}-", dir=root))
    try:
        build(tmp)
        stat = gguf_path.stat()
        info = {
            "format": CACHE_FORMAT,
            "gguf_path": str(gguf_path),
            "gguf_size": stat.st_size,
            "gguf_mtime_ns": stat.st_mtime_ns,
            "created": time.time(),
            "files": {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()},
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        try:
            os.rename(tmp, entry)
        except OSError:
            if not is_complete(entry):  # not a lost race with another writer: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry, True
