"""HDF5 through h5py: one dataset (``--h5-dataset``, or the file's only signal dataset) of [L], [C, L] or
[N, C, L] samples; the rate from a dataset or file attribute, else --rate.

Hostile files. An HDF5 file that would make ingest read another file (external storage, an external or
user-defined link anywhere in it, a virtual dataset) is refused before any data is read; links are listed
without being resolved. Sizes are checked against the declared dataspace and chunk shape before anything is
decoded, so a 1.5 KB file declaring an unallocated 250M-element dataset costs nothing.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from step_dist.signals.readers.arrays import dtype_problem, first_found, record_pieces, scalar_value, stack_problem
from step_dist.signals.readers.base import (
    RATE_ATTRS,
    Piece,
    ReaderError,
    ReaderOptions,
    need_rate,
    rate_origin,
    split_from_stack,
)


def _h5_refuse_links(f: Any, where: str) -> None:
    """Every link in the file, listed without resolving any (H5Lvisit): only hard links and soft links (a path
    inside this same file) are allowed, so no path we open can lead into another file."""
    import h5py

    links: list[tuple[bytes, int]] = []
    f.id.links.visit(lambda name, info: links.append((name, info.type)), info=True)
    for raw, kind in links:
        name = raw.decode(errors="replace")
        if kind == h5py.h5l.TYPE_EXTERNAL:
            target, obj = (x.decode(errors="replace") for x in f.id.links.get_val(raw))
            raise ReaderError(f"{where}: {name!r} is an external link to {target}:{obj}; links into other files are "
                              "refused so that ingest never reads a file outside SRC (copy the data into this file)")
        if kind not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):
            raise ReaderError(f"{where}: {name!r} is a user-defined link (type {kind}); only hard and soft links "
                              "are followed")


def _h5_layout_problem(ds: Any, name: str, opts: ReaderOptions) -> str | None:
    """Why this dataset's samples must not be read, from its creation properties and declared shapes alone."""
    import h5py

    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        return (f"dataset {name!r} is a virtual dataset (its samples live in other datasets or files); refused so "
                "that ingest never reads outside SRC: write the samples into the dataset itself")
    if dcpl.get_external_count():
        files = [dcpl.get_external(i)[0].decode(errors="replace") for i in range(dcpl.get_external_count())]
        return (f"dataset {name!r} keeps its samples in external file(s) {files[:3]}; refused so that ingest never "
                "reads outside SRC: write the samples into the HDF5 file itself")
    if ds.shape is None:
        return f"dataset {name!r} has a null dataspace (no samples)"
    problem = dtype_problem(ds.dtype) or stack_problem(opts, ds.shape, f"dataset {name!r}")
    if problem:
        return problem
    chunk = 4 * math.prod(ds.chunks) if ds.chunks else 0  # a chunk is decoded whole, even past the dataset's end
    if opts.max_record_bytes and chunk > opts.max_record_bytes:
        return (f"dataset {name!r} has chunks of {ds.chunks} = {chunk / 2**20:.0f} MiB of float32, each decoded "
                f"whole, > {opts.max_record_bytes / 2**20:.0f} MiB; re-save with smaller chunks or raise --max-record-mb")
    for i in range(dcpl.get_nfilters()):
        code, _, _, fname = dcpl.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            return (f"dataset {name!r} is compressed with filter {fname.decode(errors='replace')!r} (id {code}), "
                    "which this installation lacks; install its HDF5 plugin or re-save with gzip")
    if ds.size and ds.id.get_storage_size() == 0:
        return (f"dataset {name!r} declares {ds.shape} but holds no stored data (never written: every sample would be "
                "the fill value); write the samples or remove the dataset")
    return None


def _h5_attr(attrs: Any, key: str, max_items: int) -> Any:
    """An attribute's value, or None when absent or bigger than a description (the shape is read first)."""
    if key not in attrs:
        return None
    shape = attrs.get_id(key).shape
    return attrs[key] if shape is not None and math.prod(shape) <= max_items else None


def read_hdf5(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    import h5py

    where = uri or path
    # The driver is ours, never the file's: a family or multi-file superblock opened with sec2 fails to open.
    with h5py.File(path, "r", driver="sec2") as f:
        _h5_refuse_links(f, where)
        name = opts.h5_dataset
        if name is None:
            found: list[str] = []  # objects reached by hard links (H5Ovisit); no link leaves the file, see above
            f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
            signal_sets = [n for n in found if f[n].ndim >= 1 and f[n].size > 1]
            if len(signal_sets) != 1:
                raise ReaderError(
                    f"{where}: {len(signal_sets)} candidate datasets {signal_sets[:10]}; pass --h5-dataset PATH"
                )
            name = signal_sets[0]
        if name not in f or not isinstance(f.get(name), h5py.Dataset):
            raise ReaderError(f"{where}: no dataset {name!r}; pass --h5-dataset with one of the file's datasets")
        ds = f[name]
        problem = _h5_layout_problem(ds, name, opts)
        if problem:
            raise ReaderError(f"{where}: {problem}")
        found_rate = first_found(*(scalar_value(_h5_attr(a, k, 1)) for a in (ds.attrs, f.attrs) for k in RATE_ATTRS if k in a))
        rate = need_rate(opts, found_rate, where, f"no rate attribute on {name}")
        raw = _h5_attr(ds.attrs, "channel_names", 10**5)
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in ([] if raw is None else np.atleast_1d(raw))]
        meta = {"dataset": name, "dtype": str(ds.dtype)}
        shape = ds.shape
        if len(shape) == 3 and opts.max_record_bytes and 4 * math.prod(shape) > opts.max_record_bytes:
            stacks: Any = (ds[i] for i in range(shape[0]))  # a big stack is read one record at a time
        else:
            stacks = split_from_stack(ds[()], where)
        yield from record_pieces(stacks, rate, names, None, meta, rate_origin(found_rate))
