"""WAV / FLAC (and what libsndfile reads) through soundfile."""
from __future__ import annotations

from typing import Iterator

from step_dist.signals.readers.base import Piece, ReaderOptions


def read_audio(path: str, opts: ReaderOptions) -> Iterator[Piece]:
    import soundfile as sf

    info = sf.info(path)
    # float32 straight from libsndfile: exact for float WAV, and the library's own scaling to [-1, 1) for PCM
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    yield Piece(
        values=data.T,
        rate_hz=float(rate),
        channel_names=[f"ch{i}" for i in range(data.shape[1])],
        meta={"format": info.format, "subtype": info.subtype},
    )
