"""One place that turns a URI into a filesystem.

Accepted: ``s3://bucket/key``, ``gs://bucket/key``, ``file:///abs/path``, a plain local path.
Credentials and endpoints come only from the environment or the standard AWS/GCP configuration
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, IAM roles, ``AWS_ENDPOINT_URL[_S3]`` for S3-compatible stores,
``GOOGLE_APPLICATION_CREDENTIALS``); nothing here logs them, and URIs carrying credentials are refused.

How long a call may wait is set here too, once, for every client (s3fs, pyarrow's S3 and GCS filesystems):
``StorageTimeouts``, read from these variables (seconds; unset = the default):

- ``STEP_DIST_STORAGE_CONNECT_TIMEOUT`` (10): opening a connection to the store.
- ``STEP_DIST_STORAGE_READ_TIMEOUT`` (30): waiting for the store to answer one request.
- ``STEP_DIST_STORAGE_DEADLINE`` (60): one operation, retries included. ``with_retries`` starts no attempt
  that could run past it, so a store that accepts connections and never answers ends in a StorageError
  naming the location within this time (a store that refuses connections is retried until then).
- ``STEP_DIST_STORAGE_ARROW_ATTEMPTS`` (7): pyarrow's own retries, for the paths Ray drives (checkpoint
  uploads, Parquet reads). pyarrow has no deadline of its own: each of its requests gets an equal share of
  the deadline (``StorageTimeouts.arrow_timeouts``), so it too gives up within about the deadline.
"""
from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar
from urllib.parse import urlparse

import fsspec
import pyarrow.fs as pafs

SUPPORTED_SCHEMES = ("s3", "gs", "gcs", "file", "")

T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage location is malformed, unreachable or not writable."""


@dataclass(frozen=True)
class StorageTimeouts:
    """Every time limit of every storage client, in one place (see the module docstring for the variables)."""

    connect_s: float = 10.0
    read_s: float = 30.0
    deadline_s: float = 60.0  # per operation in with_retries, retries and back-off included
    attempts: int = 8  # with_retries' most attempts within the deadline
    arrow_attempts: int = 7  # pyarrow S3: jittered exponential back-off, ~10-40 s of refused connections ridden out

    ENV = {"connect_s": "STEP_DIST_STORAGE_CONNECT_TIMEOUT", "read_s": "STEP_DIST_STORAGE_READ_TIMEOUT",
           "deadline_s": "STEP_DIST_STORAGE_DEADLINE", "arrow_attempts": "STEP_DIST_STORAGE_ARROW_ATTEMPTS"}

    @property
    def request_s(self) -> float:
        """The longest one request can take before its client gives up on it."""
        return self.connect_s + self.read_s

    def arrow_timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts for pyarrow's S3 client, which retries by itself and has no deadline: each
        of its ``arrow_attempts`` requests gets an equal share of the deadline, a third to connect, a third to
        answer and a third left for its jittered back-off (2.9 s each by default; before, pyarrow used the AWS
        SDK's 1 s and 3 s)."""
        third = self.deadline_s / self.arrow_attempts / 3
        return min(self.connect_s, third), min(self.read_s, third)

    @classmethod
    def from_env(cls, env) -> "StorageTimeouts":
        values = {}
        for name, var in cls.ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                value = int(raw) if name == "arrow_attempts" else float(raw)
            except ValueError:
                value = -1
            if not value > 0 or value == float("inf"):
                raise StorageError(f"{var}={raw!r} must be a positive number ({'attempts' if name == 'arrow_attempts' else 'seconds'})")
            values[name] = value
        return cls(**values)


@functools.lru_cache(maxsize=1)
def timeouts() -> StorageTimeouts:
    """The process's storage time limits, read from the environment once (tests: ``timeouts.cache_clear()``)."""
    return StorageTimeouts.from_env(os.environ)


@dataclass(frozen=True)
class Location:
    scheme: str  # "s3", "gs", "file"
    path: str  # bucket/key for object stores, absolute path for files
    uri: str  # canonical form, safe to log

    @property
    def is_remote(self) -> bool:
        return self.scheme in ("s3", "gs")

    def join(self, *parts: str) -> "Location":
        tail = "/".join(p.strip("/") for p in parts if p)
        return parse_uri(self.uri.rstrip("/") + "/" + tail)


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,221}[a-z0-9]$")


def parse_uri(uri: str) -> Location:
    """Validate and canonicalise a storage URI. Raises StorageError with what to do."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError(f"empty storage location {uri!r}: give a local path or an s3:// / gs:// URI")
    uri = uri.strip()
    parsed = urlparse(uri)
    if parsed.password or parsed.username:
        # never echo user:password@ back into an error (errors end up in logs and reports)
        uri = uri.replace(parsed.netloc, parsed.netloc.rsplit("@", 1)[-1], 1)
        if parsed.scheme.lower() not in ("s3", "gs", "gcs"):
            raise StorageError(f"credentials must not be put in a storage URI ({uri}); set them in the environment")
    scheme = parsed.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"unsupported storage scheme {scheme!r} in {uri!r}: use s3://, gs://, file:// or a local path"
        )
    if scheme in ("s3", "gs", "gcs"):
        if parsed.username or parsed.password or "@" in parsed.netloc:
            raise StorageError(
                "credentials must not be put in a storage URI; set them in the environment "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an IAM role)"
            )
        bucket = parsed.netloc
        if not _BUCKET.match(bucket):
            raise StorageError(f"invalid bucket name {bucket!r} in {uri!r}")
        key = parsed.path.lstrip("/")
        if ".." in key.split("/"):
            raise StorageError(f"'..' is not allowed in object keys: {uri!r}")
        scheme = "gs" if scheme == "gcs" else scheme
        path = f"{bucket}/{key}".rstrip("/")
        return Location(scheme, path, f"{scheme}://{path}")
    local = parsed.path if scheme == "file" else uri
    local = os.path.abspath(os.path.expanduser(local))
    return Location("file", local, local)


def s3_endpoint() -> str | None:
    """An S3-compatible endpoint (MinIO, a test server) from the standard AWS variables."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for Ray Data and Parquet I/O."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        endpoint = s3_endpoint()
        kwargs = {}
        if endpoint:
            u = urlparse(endpoint)
            kwargs.update(endpoint_override=u.netloc or u.path, scheme=u.scheme or "https")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        t = timeouts()
        connect_s, read_s = t.arrow_timeouts()
        kwargs.update(connect_timeout=connect_s, request_timeout=read_s)
        return RetryingS3FileSystem(attempts=t.arrow_attempts, **kwargs), loc.path
    if loc.scheme == "gs":
        return pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=timeouts().deadline_s)), loc.path
    return pafs.LocalFileSystem(), loc.path


def _rebuild_s3(kwargs: dict) -> "RetryingS3FileSystem":
    return RetryingS3FileSystem(**kwargs)


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem with the retry budget and timeouts of StorageTimeouts, surviving pickling.

    Ray Train ships RunConfig.storage_filesystem to its controller and workers by pickling it, and a plain
    S3FileSystem comes back with the default 3-attempt retries (the strategy is not part of its pickled
    state): checkpoint uploads and the controller's checkpoint registry then fail on a store hiccup of a
    second or two. This subclass rebuilds itself with the same retries and timeouts wherever it lands;
    credentials are never part of its state (they come from the environment of each process)."""

    def __init__(self, attempts: int | None = None, **kwargs):
        attempts = attempts or timeouts().arrow_attempts
        self._kwargs = dict(kwargs, attempts=attempts)
        super().__init__(**kwargs, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts))

    def __reduce__(self):
        return (_rebuild_s3, (self._kwargs,))


def fsspec_filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for readers that want file-like objects (s3fs, gcsfs)."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        endpoint = s3_endpoint()
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        t = timeouts()
        # one attempt per request at every layer below: with_retries is the only retry loop, so a store that
        # never answers costs one read timeout per attempt instead of s3fs's 5 x botocore's 5 of them
        config = {"connect_timeout": t.connect_s, "read_timeout": t.read_s,
                  "retries": {"total_max_attempts": 1, "mode": "standard"}}
        fs = fsspec.filesystem("s3", client_kwargs=client_kwargs, config_kwargs=config, skip_instance_cache=False)
        fs.retries = 1  # s3fs's own retry loop; it takes this only as an attribute, not as an argument
        return fs, loc.path
    if loc.scheme == "gs":
        return fsspec.filesystem("gcs"), loc.path
    return fsspec.filesystem("file"), loc.path


MAX_BACKOFF_S = 8.0


def with_retries(fn: Callable[[], T], what: str, attempts: int | None = None, base_delay_s: float = 0.5) -> T:
    """Run a storage call, retrying transient failures with exponential backoff within a time budget.

    A new attempt starts only while one more request (connect + read timeout) still fits in
    ``timeouts().deadline_s`` from the start, so the call ends by the deadline however the store fails. An
    attempt that ran longer than one request was moving data, not waiting on a silent store: the budget
    starts again after it. The error says which operation on which location failed and what to check, so a
    store that stays down ends the run with a message a person can act on rather than a bare botocore
    traceback.
    """
    t = timeouts()
    attempts = attempts or t.attempts
    start = time.monotonic()
    last: BaseException | None = None
    tried = 0
    while tried < attempts:
        began = time.monotonic()
        tried += 1
        try:
            return fn()
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError):
            raise  # not transient: a missing or refused path, or a call the client rejects outright (e.g. a '..' key)
        except Exception as e:  # noqa: BLE001 - storage clients raise many types for transient faults
            last = e
        now = time.monotonic()
        if now - began > t.request_s:
            start = began
        delay = min(base_delay_s * (2 ** (tried - 1)), MAX_BACKOFF_S)
        if now + delay + t.request_s - start > t.deadline_s:
            break
        if tried < attempts:
            time.sleep(delay)
    waited = time.monotonic() - start
    raise StorageError(
        f"{what}: storage still failing after {tried} attempt{'s' * (tried != 1)} in {waited:.0f} s "
        f"({type(last).__name__}: {last}); {_what_to_check(what)}"
    ) from last


def _what_to_check(what: str) -> str:
    """What a person can do about a store that keeps failing (never the credentials themselves)."""
    if "s3://" not in what and "gs://" not in what:
        return "check the path, its permissions and the disk"
    if "gs://" in what:
        where = "the network and the Google credentials (GOOGLE_APPLICATION_CREDENTIALS)"
    elif s3_endpoint():
        u = urlparse(s3_endpoint())
        shown = f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}" if u.hostname else "(unparsable)"
        where = f"the endpoint {shown} (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3), the network and the credentials"
    else:
        where = "the network, the credentials and the region (AWS_ENDPOINT_URL for S3-compatible stores)"
    t = timeouts()
    return (f"check {where}; each request waits {t.connect_s:g} s to connect and {t.read_s:g} s for an answer, "
            f"{t.deadline_s:g} s in all per operation (settable: {', '.join(StorageTimeouts.ENV.values())})")


def read_bytes(uri: str) -> bytes:
    fs, path = fsspec_filesystem(uri)
    return with_retries(lambda: fs.cat_file(path), f"reading {parse_uri(uri).uri}")


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically where the store allows it: a temporary name then a rename for local files;
    object stores publish a PUT whole or not at all."""
    fs, path = fsspec_filesystem(uri)
    loc = parse_uri(uri)
    if loc.scheme == "file":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with_retries(lambda: fs.pipe_file(path, data), f"writing {loc.uri}")


def exists(uri: str) -> bool:
    fs, path = fsspec_filesystem(uri)
    loc = parse_uri(uri)
    return with_retries(lambda: _exists(fs, loc, path), f"checking {loc.uri}")


def _exists(fs: fsspec.AbstractFileSystem, loc: Location, path: str) -> bool:
    """fs.exists, except that a bare S3 bucket that cannot be reached is an error, not a missing bucket: s3fs
    answers False for a bucket whenever its probes fail, timeouts included."""
    if loc.scheme == "s3" and "/" not in loc.path:
        try:
            fs.info(path)
            return True
        except FileNotFoundError:
            return False
    return fs.exists(path)


def makedirs(uri: str) -> None:
    loc = parse_uri(uri)
    if loc.scheme == "file":
        os.makedirs(loc.path, exist_ok=True)


def list_files(uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Every file under a prefix (or the file itself), as full URIs, sorted."""
    loc = parse_uri(uri)
    fs, path = fsspec_filesystem(uri)
    if not with_retries(lambda: _exists(fs, loc, path), f"listing {loc.uri}"):
        raise FileNotFoundError(f"{loc.uri} does not exist: check the path or bucket name")
    if with_retries(lambda: fs.isfile(path), f"listing {loc.uri}"):
        found = [path]
    else:
        found = sorted(with_retries(lambda: fs.find(path), f"listing {loc.uri}"))
    prefix = "" if loc.scheme == "file" else f"{loc.scheme}://"
    out = [prefix + p if prefix else p for p in found]
    if suffixes:
        out = [u for u in out if u.lower().endswith(tuple(s.lower() for s in suffixes))]
    return out


def local_copy(uri: str, cache_dir: str | None = None) -> str:
    """A local path holding the file or folder at ``uri`` (downloaded once into a cache for remote URIs)."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        if not os.path.exists(loc.path):
            raise FileNotFoundError(f"{loc.path} does not exist")
        return loc.path
    import hashlib

    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "step-dist", "downloads")
    dest = os.path.join(cache_dir, hashlib.sha256(loc.uri.encode()).hexdigest()[:16], os.path.basename(loc.path))
    done = dest + ".complete"
    if os.path.exists(done):
        return dest
    fs, path = fsspec_filesystem(uri)
    if not with_retries(lambda: _exists(fs, loc, path), f"checking {loc.uri}"):
        raise FileNotFoundError(f"{loc.uri} does not exist: check the bucket and key")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with_retries(lambda: fs.get(path, dest, recursive=fs.isdir(path)), f"downloading {loc.uri}")
    open(done, "w").close()
    return dest


def upload_dir(local_dir: str, uri: str) -> None:
    """Copy a local folder to a storage location (used for exports and reports)."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        import shutil

        if os.path.abspath(local_dir) != loc.path:
            shutil.copytree(local_dir, loc.path, dirs_exist_ok=True)
        return
    fs, path = fsspec_filesystem(uri)
    with_retries(lambda: fs.put(local_dir.rstrip("/") + "/", path, recursive=True), f"uploading to {loc.uri}")


def delete(uri: str) -> None:
    """Remove one file (a missing file is fine: deleting is idempotent)."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        try:
            os.remove(loc.path)
        except FileNotFoundError:
            pass
        return
    fs, path = fsspec_filesystem(uri)

    def rm() -> None:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass

    with_retries(rm, f"deleting {loc.uri}")


def check_writable_folder(uri: str, flag: str = "--out") -> None:
    """A local output location must be a folder this process can write: checked before any work starts, so a
    run does not fail at its very end (object stores are checked by their first write)."""
    import tempfile

    loc = parse_uri(uri)
    if loc.scheme != "file":
        return
    if os.path.exists(loc.path) and not os.path.isdir(loc.path):
        raise StorageError(f"{flag} {loc.uri} is a file, not a folder; give a new folder for the outputs")
    try:
        os.makedirs(loc.path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=loc.path, prefix=".write-check-"):
            pass
    except OSError as e:
        raise StorageError(f"{flag} {loc.uri} is not writable ({e.strerror or e}); choose a folder you can write") from None
