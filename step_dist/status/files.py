"""Small readers over storage for `step-dist status`: a missing or half-written file is an answer, never an error."""
from __future__ import annotations

import json
from typing import Any

from step_dist import storage


def fs_of(uri: str):
    """(fsspec filesystem, path) with listings fresh: s3fs caches them per instance, and a run that is being
    watched changes between two calls."""
    fs, path = storage.fsspec_filesystem(uri)
    fs.invalidate_cache()
    return fs, path


def join(uri: str, *parts: str) -> str:
    return storage.parse_uri(uri).join(*parts).uri


def children(uri: str) -> dict[str, str]:
    """Direct children of a folder or prefix: name -> "directory" or "file" ({} when it does not exist)."""
    fs, path = fs_of(uri)
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for e in entries:
        name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
        if name and str(e["name"]).rstrip("/") != path.rstrip("/"):
            out[name] = "directory" if e.get("type") == "directory" else "file"
    return out


def read_text(uri: str) -> str | None:
    try:
        return storage.read_bytes(uri).decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return None


def read_json(uri: str) -> Any:
    text = read_text(uri)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:  # being written, or damaged: the caller reports it as absent
        return None


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a last line cut off mid-write (a run killed while logging) is skipped."""
    text = read_text(uri)
    rows = []
    for line in (text or "").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def mtime(uri: str) -> float | None:
    """Last modification time (seconds since the epoch) of a file, None when unknown."""
    fs, path = fs_of(uri)
    try:
        m = fs.modified(path)
    except (FileNotFoundError, NotImplementedError, OSError):
        return None
    return m.timestamp() if m is not None else None
