"""Ingest: raw files (local folders or object storage) -> validated records -> Parquet shards + manifest.

One Ray task per file reads and validates it where it lies (the task downloads remote objects itself), and
sends back an Arrow table of good rows plus the quarantine entries; the driver applies the labels file and
streams rows into the ShardWriter in file order, so the same inputs give the same shards. Nothing about a bad
file stops the run: it is set aside with its reason and the run goes on.
"""
from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pyarrow as pa

from step_dist import storage
from step_dist.signals.readers import ReaderError, ReaderOptions, extension, is_sidecar, read_records
from step_dist.signals.record import RECORD_SCHEMA
from step_dist.signals.shards import DEFAULT_SHARD_MB, ShardWriter
from step_dist.signals.validate import Quarantined, ValidationConfig, check


@dataclass
class IngestResult:
    manifest: dict[str, Any]
    n_files: int
    files_failed: int
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        return int(self.manifest["n_records"])


def read_and_check(uri: str, name: str, opts: ReaderOptions, vcfg: ValidationConfig) -> tuple[pa.Table, list[dict], bool]:
    """Read one file and validate its records: (good rows, quarantine entries, whole file failed?).

    Records read before a file breaks off (a truncated tail) are kept; the file is still reported."""
    rows: list[dict] = []
    bad: list[dict] = []
    failed = False
    try:
        for item in read_records(uri, opts, name=name):
            if isinstance(item, Quarantined):
                bad.append(item.to_dict())
                continue
            good, entry = check(item, vcfg)
            if entry:
                bad.append(entry.to_dict())
            else:
                rows.append(good.to_row())
    except (ReaderError, FileNotFoundError) as e:
        bad.append(Quarantined(uri=uri, reason=str(e)).to_dict())
        failed = not rows
    except Exception as e:  # noqa: BLE001 - format libraries raise anything on corrupt input
        where = f"after {len(rows) + len(bad)} record(s)" if rows or bad else "at the start"
        bad.append(Quarantined(
            uri=uri,
            reason=f"unreadable {extension(uri)} file, failed {where} ({type(e).__name__}: {e}); "
                   "it may be truncated or corrupt: re-export it or remove it from the source",
        ).to_dict())
        failed = not rows
    if not rows and not bad:  # a reader that found nothing to say about the file must not make it vanish
        bad.append(Quarantined(uri=uri, reason=f"holds no records (an empty or header-only {extension(uri)} file); "
                                               "remove it or re-export it with its samples").to_dict())
        failed = True
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), bad, failed


@dataclass
class Listing:
    """What ingest found under its SRCs: files to read, SRCs or files to quarantine, files skipped on purpose."""

    files: list[tuple[str, str, str]] = field(default_factory=list)  # (uri, name relative to its SRC, source)
    missing: list[Quarantined] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"uri", "kind", "reason"}


def _skip(uri: str, kind: str, reason: str) -> dict[str, str]:
    return {"uri": uri, "kind": kind, "reason": reason}


def _skip_reason(base: str, uri: str, siblings: set[str]) -> dict[str, str] | None:
    if base.startswith("."):
        return _skip(uri, "hidden", "hidden file (name starts with '.')")
    if base.startswith("_"):
        return _skip(uri, "underscore name", "name starts with '_' (job markers such as _SUCCESS, _manifest.json); rename it to ingest it")
    if is_sidecar(uri, siblings):
        return _skip(uri, "sidecar", f"JSON sidecar of {os.path.basename(uri[: -len('.json')])}, read with it")
    return None


def _utf8_problem(name: str) -> str | None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return f"file name {shown!r} is not valid UTF-8 (record ids and shards need UTF-8); rename the file"
    return None


def _walk_local(root: str, listing: Listing) -> list[str]:
    """Regular files under a local folder, without following links out of it. A symlinked folder is not
    entered (it could loop, or repeat files); a symlinked file is read only when its target is inside the
    folder; anything else is quarantined or skipped with its reason."""
    real_root = os.path.realpath(root)
    found: list[str] = []
    for here, dirs, names in os.walk(root, followlinks=False):
        for d in sorted(dirs):
            full = os.path.join(here, d)
            if d.startswith("."):
                listing.skipped.append(_skip(full, "hidden", "hidden folder, not read"))
            elif os.path.islink(full):
                listing.skipped.append(_skip(full, "folder link", "symbolic link to a folder, not followed; give its target as a SRC of its own"))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(here, d)))
        for n in sorted(names):
            full = os.path.join(here, n)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if os.path.exists(target) and os.path.commonpath([real_root, target]) != real_root:
                    listing.missing.append(Quarantined(uri=full, reason=(
                        f"{full} is a symbolic link to a file outside {root}; links out of a SRC are not followed "
                        "(copy the file in, or give its folder as a SRC)")))
                    continue
            found.append(full)
    return found


def list_sources(srcs: list[str]) -> Listing:
    """Every file under ``srcs``: to be read, quarantined (a missing SRC, a link out of its SRC, a name that
    is not UTF-8) or skipped with the reason (hidden files, names starting with '_' such as ``_SUCCESS``, JSON
    sidecars of a data file). Record names are paths relative to their SRC; where two SRCs give the same
    source and name (``a/x.npy`` and ``b/x.npy``), the names grow to the paths below the SRCs' common folder."""
    listing = Listing()
    for src in srcs:
        loc = storage.parse_uri(src)
        try:
            if loc.scheme == "file" and os.path.isdir(loc.path):
                found = _walk_local(loc.path, listing)
            else:
                found = storage.list_files(loc.uri)
        except FileNotFoundError as e:
            listing.missing.append(Quarantined(uri=loc.uri, reason=f"{e}"))
            continue
        single = len(found) == 1 and found[0].rstrip("/").endswith(loc.path.rstrip("/"))
        root = os.path.dirname(loc.path) if single else loc.path
        siblings = set(found)
        for uri in found:
            path = storage.parse_uri(uri).path
            rel = os.path.relpath(path, root) if loc.scheme == "file" else path[len(root):].lstrip("/")
            base = os.path.basename(rel)
            bad_name = _utf8_problem(uri)
            if bad_name:
                listing.missing.append(Quarantined(uri=uri.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), reason=bad_name))
                continue
            skip = _skip_reason(base, uri, siblings)
            if skip:
                listing.skipped.append(skip)
                continue
            listing.files.append((uri, rel, os.path.basename(loc.path.rstrip("/")) if not single else os.path.splitext(base)[0]))
    listing.files = _unique_names(listing.files)
    return listing


def _unique_names(files: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Record ids are ``source:name#index``: two different files must never share (source, name)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (_, rel, src) in enumerate(files):
        groups.setdefault((src, rel), []).append(i)
    out = list(files)
    for members in groups.values():
        if len(members) < 2:
            continue
        paths = [storage.parse_uri(files[i][0]).path for i in members]
        common = os.path.commonpath([os.path.dirname(p) for p in paths]) if all(p.startswith("/") for p in paths) \
            else os.path.dirname(os.path.commonprefix(paths))
        for i, p in zip(members, paths):
            uri, _, src = files[i]
            out[i] = (uri, os.path.relpath(p, common) if common else p, src)
    return out


def load_labels(uri: str) -> dict[str, str]:
    """A CSV of ``key,label`` rows; key is a record id or a file name (relative to its SRC, or bare)."""
    text = storage.read_bytes(uri).decode("utf-8-sig")
    out: dict[str, str] = {}
    for i, row in enumerate(csv.reader(io.StringIO(text))):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ValueError(f"labels file {uri}, line {i + 1}: expected 'id,label' or 'file,label', got {row}")
        key, label = row[0].strip(), row[1].strip()
        if i == 0 and key.lower() in ("id", "file", "filename", "path") and label.lower() in ("label", "class", "y"):
            continue  # header
        out[key] = label
    return out


def _label_for(row: dict, labels: dict[str, str], used: set[str]) -> str | None:
    rel = row["id"].split(":", 1)[-1].rsplit("#", 1)[0]
    for key in (row["id"], rel, os.path.basename(rel)):
        if key in labels:
            used.add(key)
            return labels[key]
    return None


def ensure_ray(num_cpus: int | None = None):
    """A Ray to run on: the one already initialised, the cluster at RAY_ADDRESS when the user set it, else a
    new local instance (never whatever cluster happens to run on this machine)."""
    from step_dist.ray_session import init_ray

    return init_ray(num_cpus)


def ingest(
    srcs: list[str],
    out: str,
    opts: ReaderOptions,
    vcfg: ValidationConfig | None = None,
    labels_uri: str | None = None,
    shard_mb: float = DEFAULT_SHARD_MB,
    source_given: bool = True,
    progress: Callable[[str], None] | None = None,
    num_cpus: int | None = None,
) -> IngestResult:
    """Read every file under ``srcs`` into shards at ``out``. ``source_given=False`` names each SRC's records
    after its folder (or file) instead of ``opts.source``."""
    vcfg = vcfg or ValidationConfig()
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    labels = load_labels(labels_uri) if labels_uri else {}
    listing = list_sources(srcs)
    files = listing.files
    writer = ShardWriter(out, shard_mb=shard_mb, extra={"ingest": {
        "sources": [storage.parse_uri(s).uri for s in srcs], "nan_policy": vcfg.nan_policy,
        "float32_policy": opts.float32_policy, "rate_hz_given": opts.rate_hz,
        "limits": {"max_length": opts.max_length, "max_channels": opts.max_channels,
                   "max_record_bytes": opts.max_record_bytes, "max_file_bytes": opts.max_file_bytes},
    }})
    for q in listing.missing:
        writer.quarantine(q)
    for entry in listing.skipped:
        writer.skip(entry)
    ray = ensure_ray(num_cpus)
    task = ray.remote(num_cpus=1, max_retries=1)(read_and_check)
    window = max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)  # bound the rows waiting in memory
    pending: list[tuple[str, Any]] = []
    used: set[str] = set()
    failed = 0
    say(f"ingest: {len(files)} file(s) from {len(srcs)} source(s) -> {storage.parse_uri(out).uri}")
    from step_dist.progress import Progress

    bar = Progress("ingest", total=len(files), unit="files", stream=sys.stderr)

    def drain_one(done: int) -> None:
        nonlocal failed
        uri, ref = pending.pop(0)
        try:
            table, bad, file_failed = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a worker died on this file (a crash inside a C library)
            table, bad, file_failed = None, [Quarantined(uri=uri, reason=f"reader crashed ({type(e).__name__}); the file is likely corrupt").to_dict()], True
        failed += int(file_failed)
        for entry in bad:
            writer.quarantine(entry)
        for row in table.to_pylist() if table is not None else []:
            if labels:
                lab = _label_for(row, labels, used)
                if lab is not None:
                    row["label"] = lab
            writer.add(row)
        n_ok = sum(s.records for s in writer.sources.values())
        bar.set(done, f"{n_ok} records written, {len(writer.quarantined)} quarantined")

    done = 0
    for uri, rel, src_name in files:
        file_opts = opts if source_given else replace(opts, source=src_name)
        pending.append((uri, task.remote(uri, rel, file_opts, vcfg)))
        if len(pending) >= window:
            done += 1
            drain_one(done)
    while pending:
        done += 1
        drain_one(done)
    bar.close()
    for key in sorted(set(labels) - used):
        writer.quarantine(Quarantined(
            uri=storage.parse_uri(labels_uri).uri,
            reason=f"labels file names {key!r}, which matches no record id or file; fix the key or drop the line",
        ))
    manifest = writer.close()
    return IngestResult(manifest=manifest, n_files=len(files) + len(listing.missing), files_failed=failed + len(listing.missing),
                        quarantined=writer.quarantined, skipped=listing.skipped)

