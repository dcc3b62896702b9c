"""One place that turns a URI into a filesystem.

Accepted: ``s3://bucket/key``, ``gs://bucket/key``, ``file:///abs/path``, a plain local path.
Credentials and endpoints come only from the environment or the standard AWS/GCP configuration
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, IAM roles, ``AWS_ENDPOINT_URL[_S3]`` for S3-compatible stores,
``GOOGLE_APPLICATION_CREDENTIALS``); nothing here logs them, and URIs carrying credentials are refused.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import urlparse

import fsspec
import pyarrow.fs as pafs

SUPPORTED_SCHEMES = ("s3", "gs", "gcs", "file", "")
S3_RETRY_ATTEMPTS = 7  # pyarrow S3 calls: jittered exponential backoff, ~10-40 s of outage ridden out

T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage location is malformed, unreachable or not writable."""


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
        return RetryingS3FileSystem(**kwargs), loc.path
    if loc.scheme == "gs":
        return pafs.GcsFileSystem(), loc.path
    return pafs.LocalFileSystem(), loc.path


def _rebuild_s3(kwargs: dict) -> "RetryingS3FileSystem":
    return RetryingS3FileSystem(**kwargs)


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem with a longer retry budget that survives pickling.

    Ray Train ships RunConfig.storage_filesystem to its controller and workers by pickling it, and a plain
    S3FileSystem comes back with the default 3-attempt retries (the strategy is not part of its pickled
    state): checkpoint uploads and the controller's checkpoint registry then fail on a store hiccup of a
    second or two. This subclass rebuilds itself with the same retries wherever it lands; credentials are
    never part of its state (they come from the environment of each process)."""

    def __init__(self, **kwargs):
        self._kwargs = dict(kwargs)
        super().__init__(**kwargs, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_RETRY_ATTEMPTS))

    def __reduce__(self):
        return (_rebuild_s3, (self._kwargs,))


def fsspec_filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for readers that want file-like objects (s3fs, gcsfs)."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        endpoint = s3_endpoint()
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        fs = fsspec.filesystem("s3", client_kwargs=client_kwargs, skip_instance_cache=False)
        return fs, loc.path
    if loc.scheme == "gs":
        return fsspec.filesystem("gcs"), loc.path
    return fsspec.filesystem("file"), loc.path


def with_retries(fn: Callable[[], T], what: str, attempts: int = 5, base_delay_s: float = 0.5) -> T:
    """Run a storage call, retrying transient failures with exponential backoff.

    After the last attempt the error says which operation on which location failed, so that a store that stays
    down ends the run with a message a person can act on rather than a bare botocore traceback.
    """
    last: BaseException | None = None
    for i in range(attempts):
        try:
            return fn()
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
            raise  # not transient
        except Exception as e:  # noqa: BLE001 - storage clients raise many types for transient faults
            last = e
            if i + 1 < attempts:
                time.sleep(base_delay_s * (2**i))
    raise StorageError(f"{what}: storage still failing after {attempts} attempts ({type(last).__name__}: {last})") from last


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
    return with_retries(lambda: fs.exists(path), f"checking {parse_uri(uri).uri}")


def makedirs(uri: str) -> None:
    loc = parse_uri(uri)
    if loc.scheme == "file":
        os.makedirs(loc.path, exist_ok=True)


def list_files(uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Every file under a prefix (or the file itself), as full URIs, sorted."""
    loc = parse_uri(uri)
    fs, path = fsspec_filesystem(uri)
    if not with_retries(lambda: fs.exists(path), f"listing {loc.uri}"):
        raise FileNotFoundError(f"{loc.uri} does not exist: check the path or bucket name")
    if fs.isfile(path):
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
    if not with_retries(lambda: fs.exists(path), f"checking {loc.uri}"):
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
