"""Embeddings of a shard set as Parquet (id, split, label, embedding list<float32>) for users' own work."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from step_dist import storage
from step_dist.signals.record import decode_values

EMBEDDING_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("split", pa.string()),
    pa.field("label", pa.string()),
    pa.field("embedding", pa.list_(pa.float32()), nullable=False),
])


def _out_file(out_uri: str) -> str:
    loc = storage.parse_uri(out_uri)
    return loc.uri if loc.uri.endswith(".parquet") else loc.join("embeddings.parquet").uri


def embed_shards(encoder, data_uri: str, out_uri: str, batch_size: int = 16, max_length: int = 0,
                 pooling: str = "mean") -> dict:
    """Pooled embeddings of every record under ``data_uri`` written to ``out_uri`` (a .parquet file, or a
    folder that gets embeddings.parquet). Records that cannot be encoded are counted with their reason.
    ``pooling``: step_dist.model.pooling's modes; with ``channels`` a row's width is its channel count x D."""
    from step_dist.model.pooling import check_pooling

    check_pooling(pooling)
    from step_dist.signals.shards import iter_rows

    out_file = _out_file(out_uri)
    fs, path = storage.arrow_filesystem(out_file)
    if storage.parse_uri(out_file).scheme == "file":
        import os

        os.makedirs(os.path.dirname(path), exist_ok=True)
    written, skipped = 0, {}
    buf: list[dict] = []
    writer = sink = None

    def flush(rows: list[dict]) -> None:
        nonlocal writer, sink, written
        good = []
        for r in rows:
            if not np.all(np.isfinite(r["values"])):
                skipped["non-finite values"] = skipped.get("non-finite values", 0) + 1
            else:
                good.append(r)
        if not good:
            return
        emb: list = [None] * len(good)
        # records of one channel count together: `channels` pooling gives each count its own width
        for c in sorted({r["values"].shape[0] for r in good}):
            idx = [i for i, r in enumerate(good) if r["values"].shape[0] == c]
            got = encoder.encode([good[i]["values"] for i in idx], [good[i]["rate"] for i in idx], batch_size=len(idx),
                                 pooling=pooling)
            for i, e in zip(idx, np.asarray(got, np.float32).reshape(len(idx), -1)):
                emb[i] = e
        table = pa.Table.from_pylist(
            [{"id": r["id"], "split": r["split"], "label": r["label"], "embedding": e.tolist()} for r, e in zip(good, emb)],
            schema=EMBEDDING_SCHEMA,
        )
        if writer is None:
            sink = fs.open_output_stream(path)
            writer = pq.ParquetWriter(sink, EMBEDDING_SCHEMA)
        writer.write_table(table)
        written += len(good)

    from step_dist.progress import Progress
    from step_dist.signals.shards import read_manifest

    try:  # the manifest says how many records to expect; a folder of bare shards just counts up
        total = int(read_manifest(data_uri)["n_records"])
    except Exception:  # noqa: BLE001 - progress is a courtesy: no manifest must not stop the embedding
        total = None
    bar = Progress("embed", total=total, unit="records")
    for row in iter_rows(data_uri):
        bar.update(1)
        try:
            values = decode_values(row)
        except ValueError as e:
            skipped[str(e)] = skipped.get(str(e), 0) + 1
            continue
        if max_length:
            values = values[:, :max_length]
        buf.append({"id": row["id"], "split": row.get("split"), "label": row.get("label"), "values": values,
                    "rate": float(row["sampling_rate_hz"])})
        if len(buf) >= batch_size:
            flush(buf)
            buf = []
    flush(buf)
    bar.close(extra=f"{written} written" + (f", {sum(skipped.values())} skipped" if skipped else ""))
    if writer is None:  # an empty shard set still gets a valid (empty) file
        sink = fs.open_output_stream(path)
        writer = pq.ParquetWriter(sink, EMBEDDING_SCHEMA)
    writer.close()
    sink.close()  # the writer does not close a stream it was given; on S3 this completes the upload
    return {"out": out_file, "records": written, "skipped": skipped}
