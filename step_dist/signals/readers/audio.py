"""WAV / FLAC (and what libsndfile reads) through soundfile.

Samples are read as float32 in libsndfile's scaling to [-1, 1) for every subtype where that is exact: float
WAV, and PCM of up to 24 bits (an integer of <= 24 bits times a power of two is a float32 without rounding);
the audio teachers expect that scale, and it keeps one scale across a dataset of 16- and 24-bit files. Two
subtypes would lose bits that way and are read natively instead: PCM_32 as int32 counts (float32 has 24 bits
of mantissa; the central float32 check then refuses or rounds them, and says so) and DOUBLE as float64.
``meta.sample_units`` says which ("full_scale" or "counts").

The size is checked from the header before decoding. libsndfile quietly shortens a file whose header
promises more frames than it holds, so the header's own frame count is read too and a shortfall is flagged
("truncated"), as is any read that returns fewer frames than libsndfile announced.
"""
from __future__ import annotations

import struct
from typing import Iterator

from step_dist.signals.readers.base import Piece, ReaderError, ReaderOptions, check_size

NATIVE_DTYPES = {"PCM_32": "int32", "DOUBLE": "float64"}
# subtypes whose WAV/AIFF data is exactly block_align bytes per frame (so a data size gives a frame count)
_FIXED_FRAME = {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}


def declared_frames(path: str) -> int | None:
    """The frame count the WAV (RIFF/RIFX/RF64) or AIFF header itself declares, before libsndfile's repair;
    None where the file is another format or does not say."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)  # the fmt/COMM and data chunk headers sit well inside the first 64 KiB
    kind = head[:4]
    if kind in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        end = "<" if kind != b"RIFX" else ">"
        block_align = data_size = None
        pos = 12
        while pos + 8 <= len(head):
            cid, size = head[pos:pos + 4], struct.unpack(end + "I", head[pos + 4:pos + 8])[0]
            if cid == b"ds64" and pos + 36 <= len(head):  # RF64: the real 64-bit data size
                data_size = struct.unpack("<Q", head[pos + 16:pos + 24])[0]
            elif cid == b"fmt " and pos + 22 <= len(head):
                block_align = struct.unpack(end + "H", head[pos + 20:pos + 22])[0]
            elif cid == b"data":
                if data_size is None and size not in (0, 0xFFFFFFFF):  # 0 / -1: length left open by a streamer
                    data_size = size
                break
            pos += 8 + size + (size & 1)
        return data_size // block_align if data_size is not None and block_align else None
    if kind == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        pos = 12
        while pos + 8 <= len(head):
            cid, size = head[pos:pos + 4], struct.unpack(">I", head[pos + 4:pos + 8])[0]
            if cid == b"COMM" and pos + 14 <= len(head):
                return struct.unpack(">I", head[pos + 10:pos + 14])[0]
            pos += 8 + size + (size & 1)
    return None


def read_audio(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    import soundfile as sf

    where = uri or path
    # libsndfile gets an open file, never the name: given a name it also probes files beside it (macOS
    # '._<name>' AppleDouble sidecars, '.AppleDouble/'), and a FIFO planted there would block ingest forever
    with open(path, "rb") as fh:
        info = sf.info(fh)
        # what sf.read will allocate (frames x channels), checked before it does
        check_size(opts, info.channels, info.frames, where, f"{info.format} {info.subtype} audio (header)")
        declared = declared_frames(path) if info.subtype in _FIXED_FRAME else None
        dtype = NATIVE_DTYPES.get(info.subtype, "float32")
        fh.seek(0)
        data, rate = sf.read(fh, dtype=dtype, always_2d=True)
    if data.shape[1] != info.channels:
        raise ReaderError(f"{where}: read {data.shape[1]} channels, the header says {info.channels}; the file is corrupt")
    piece = Piece(
        values=data.T,
        rate_hz=float(rate),
        channel_names=[f"ch{i}" for i in range(data.shape[1])],
        meta={"format": info.format, "subtype": info.subtype,
              "sample_units": "counts" if dtype == "int32" else "full_scale"},
    )
    expected = max(info.frames, declared or 0)
    if data.shape[0] < expected:  # the frames that are there are kept; the loss is recorded
        piece.flag("truncated", {"declared_frames": int(expected), "read_frames": int(data.shape[0])})
    yield piece
