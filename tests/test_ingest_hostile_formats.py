"""Hostile and broken files in the field formats (seismic, audio, EDF, FITS): no code runs, no path is read
as a pattern, nothing is decoded before its declared size passes the limits, and nothing is lost, cut short
or overridden without a word. Every file is written by the format's own library (or is a real pickle /
archive), then damaged the way a careless or hostile user would."""
from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import tracemalloc
import zipfile

import numpy as np
import obspy
import pyedflib
import pytest
import soundfile as sf
from astropy.table import Table

from step_dist.cli import main
from step_dist.signals.readers import ReaderError, ReaderOptions
from step_dist.signals.readers.audio import read_audio
from step_dist.signals.readers.edf import read_edf
from step_dist.signals.readers.seismic import read_seismic
from step_dist.signals.shards import iter_records, read_manifest


class _Payload:
    """Unpickling this creates ``marker``: proof that a data file ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _ingest(raw, out, *extra: str) -> tuple[int, dict, dict, dict]:
    """Run `step-dist ingest` on ``raw``: (exit code, manifest, {file name or id: reason}, {id: record})."""
    rc = main(["ingest", str(raw), "--out", str(out), "--source", "h", *extra])
    m = read_manifest(str(out))
    reasons = {(q["id"] or q["uri"]).split("/")[-1]: q["reason"] for q in m["quarantined"]}
    records = {r.id: r for r in iter_records(str(out))} if m["n_records"] else {}
    return rc, m, reasons, records


def _station(name: str, seed: int, n: int = 1500) -> obspy.Stream:
    """A three-component int32 (counts) stream, as a digitiser writes it."""
    rng = np.random.default_rng(seed)
    return obspy.Stream([
        obspy.Trace(rng.integers(-50_000, 50_000, n).astype(np.int32),
                    header={"network": "XX", "station": name, "channel": c, "sampling_rate": 100.0,
                            "starttime": obspy.UTCDateTime(2024, 1, 1)})
        for c in ("HHE", "HHN", "HHZ")
    ])


# --- seismic: no code runs, nothing is unpacked, no path is a pattern ------------------------------------

def _payload_files(raw, markers) -> dict[str, str]:
    """{file name: what it really is}: a pickle named .mseed (protocols 0 and 4) and the same pickle inside a
    tar named .sac, a zip named .mseed and a gzip named .mseed."""
    raw.mkdir(parents=True, exist_ok=True)
    markers.mkdir()
    # obspy.read unpickles a file whose first 100 bytes name obspy.core.stream: lead with obspy's Stream class
    blob = lambda tag, proto=4: pickle.dumps([obspy.Stream, _Payload(str(markers / f"{tag}.ran"))], protocol=proto)  # noqa: E731
    (raw / "pickled.mseed").write_bytes(blob("pickle4"))
    (raw / "pickled0.mseed").write_bytes(blob("pickle0", proto=0))
    with tarfile.open(raw / "bundle.sac", "w") as tar:
        data = blob("tar")
        info = tarfile.TarInfo("inner.sac")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(raw / "bundle_zip.mseed", "w") as z:
        z.writestr("inner.mseed", blob("zip"))
    (raw / "bundle_gz.mseed").write_bytes(gzip.compress(blob("gz")))
    return {"pickled.mseed": "pickle", "bundle.sac": "tar", "bundle_zip.mseed": "zip", "bundle_gz.mseed": "gzip"}


def test_when_pickles_and_archives_are_named_mseed_or_sac_then_no_code_runs_and_each_is_quarantined_by_kind(tmp_path, ray_local):
    kinds = _payload_files(tmp_path / "raw", tmp_path / "markers")
    _station("GOOD", 1).write(str(tmp_path / "raw" / "good.mseed"), format="MSEED")

    rc, m, reasons, records = _ingest(tmp_path / "raw", tmp_path / "out")

    assert sorted(p.name for p in (tmp_path / "markers").iterdir()) == []  # no payload ran, in any worker
    assert rc == 3 and list(records) == ["h:good.mseed#0"]
    for name, kind in kinds.items():
        assert name in reasons[name] and kind in reasons[name] and "refused" in reasons[name], (name, reasons[name])
    # a protocol-0 pickle has no magic bytes: it is refused because it is not MiniSEED, still without running
    assert "pickled0.mseed" in reasons["pickled0.mseed"] and "do not look like MiniSEED" in reasons["pickled0.mseed"]


def test_when_a_file_is_named_like_a_glob_pattern_then_its_own_bytes_are_read_and_not_the_files_it_matches(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        _station(name.upper() * 3, seed).write(str(raw / f"{name}.mseed"), format="MSEED")
    own = _station("OWN", 3)
    own.write(str(raw / "[ab].mseed"), format="MSEED")

    rc, m, reasons, records = _ingest(raw, tmp_path / "out")

    assert rc == 0, reasons
    assert sorted(records) == ["h:[ab].mseed#0", "h:a.mseed#0", "h:b.mseed#0"]  # nothing of a/b under its id
    rec = records["h:[ab].mseed#0"]
    assert rec.meta["station"] == "XX.OWN"
    np.testing.assert_array_equal(rec.values, np.stack([tr.data for tr in own]).astype(np.float32))


def test_when_real_mseed_sac_gse2_and_segy_files_are_ingested_then_every_trace_is_kept_bit_exact(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    counts = _station("STA", 4)  # int32 counts: Steim-2 MiniSEED and GSE2 (CM6) keep them as int32
    counts.write(str(raw / "real.mseed"), format="MSEED")
    counts.write(str(raw / "real.gse2"), format="GSE2")
    example = obspy.read()  # obspy's own example stream, as float32 samples
    for tr in example:
        tr.data = tr.data.astype(np.float32)
    example[0].write(str(raw / "real.sac"), format="SAC")
    # three receivers of one shot (one id, one start), IEEE float32 samples (the IBM default rounds on write)
    example.write(str(raw / "shot.segy"), format="SEGY", data_encoding=5)

    rc, m, reasons, records = _ingest(raw, tmp_path / "out")

    assert rc == 0, reasons
    exact = lambda got, want: np.testing.assert_array_equal(got.view("<u4"), np.asarray(want, "<f4").view("<u4"))  # noqa: E731
    for rid in ("h:real.mseed#0", "h:real.gse2#0"):
        assert records[rid].channel_names == ["HHE", "HHN", "HHZ"] and records[rid].meta["source_dtype"] == "int32", rid
        exact(records[rid].values, np.stack([tr.data for tr in counts]))
    exact(records["h:real.sac#0"].values, example[0].data[None])
    # SEG-Y traces are never merged: all three receivers are kept, in file order
    assert records["h:shot.segy#0"].channel_names == ["trace0", "trace1", "trace2"]
    exact(records["h:shot.segy#0"].values, np.stack([tr.data for tr in example]))


def test_when_two_tiny_records_a_day_apart_would_merge_into_a_huge_trace_then_it_is_refused_from_the_headers(tmp_path):
    # two 100-sample records of one channel at 100 Hz, a day apart: merging spans 8.64M samples (NaN between)
    path = tmp_path / "gap.mseed"
    t0 = obspy.UTCDateTime(2024, 1, 1)
    obspy.Stream([
        obspy.Trace(np.arange(100, dtype=np.int32), header={"station": "GAP", "channel": "HHZ", "sampling_rate": 100.0, "starttime": t})
        for t in (t0, t0 + 86400)
    ]).write(str(path), format="MSEED")
    opts = ReaderOptions(max_record_bytes=8 << 20)  # 8.64M samples are 33 MiB of float32

    tracemalloc.start()
    try:
        with pytest.raises(ReaderError, match=r"from the headers\) declares 1 x 8640100 samples"):
            list(read_seismic(str(path), opts))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB allocated before the refusal"


def test_when_a_miniseed_is_cut_inside_its_last_record_or_its_traces_overlap_then_the_record_is_kept_and_flagged(tmp_path):
    t0 = obspy.UTCDateTime(2024, 1, 1)
    first, later = (obspy.Trace(np.arange(1000, dtype=np.int32) + k, header={"station": "OVL", "channel": "HHZ",
                                 "sampling_rate": 10.0, "starttime": t0 + k}) for k in (0, 50))
    obspy.Stream([first, later]).write(str(tmp_path / "whole.mseed"), format="MSEED", reclen=512)
    data = (tmp_path / "whole.mseed").read_bytes()
    (tmp_path / "cut.mseed").write_bytes(data[:-300])  # the last 512-byte record loses 300 bytes

    (whole,) = read_seismic(str(tmp_path / "whole.mseed"), ReaderOptions())
    (cut,) = read_seismic(str(tmp_path / "cut.mseed"), ReaderOptions())

    # the second trace starts 50 s (500 samples) before the first ends: merging keeps the later samples
    assert whole.values.shape == (1, 1500) and whole.values.dtype == np.int32
    assert whole.meta["flags"] == {"overlap": {"samples_replaced": {".OVL..HHZ": 500}, "kept": "later trace"}}
    np.testing.assert_array_equal(whole.values[0, 500:], later.data)
    assert cut.meta["flags"]["unread_bytes"] == {"bytes": 212, "file_bytes": len(data) - 300}
    assert cut.values.shape[1] < 1500


# --- audio ---------------------------------------------------------------------------------------------

def test_when_a_wav_header_promises_more_frames_than_the_file_holds_then_they_are_kept_and_flagged_truncated(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    x = np.random.default_rng(5).integers(-3000, 3000, 16000).astype(np.int16)
    sf.write(raw / "full.wav", x, 16000, subtype="PCM_16")
    whole = (raw / "full.wav").read_bytes()
    (raw / "cut.wav").write_bytes(whole[: 44 + 7978 * 2])  # the header still says 16,000 frames

    rc, m, reasons, records = _ingest(raw, tmp_path / "out")

    cut = records["h:cut.wav#0"]
    assert cut.meta["flags"]["truncated"] == {"declared_frames": 16000, "read_frames": 7978}
    np.testing.assert_array_equal(cut.values[0], x[:7978] / np.float32(32768))  # the frames that are there, exact
    assert "flags" not in records["h:full.wav#0"].meta
    assert m["flagged"]["truncated"] == 1


def test_when_a_32_bit_pcm_wav_is_read_then_its_integers_are_not_rounded_through_float32_scaling(tmp_path):
    path = tmp_path / "deep.wav"
    x = np.array([[1, -(2**31)], [2**24 + 1, 2**31 - 1], [123_456_789, -7]], dtype=np.int32)
    sf.write(path, x, 48000, subtype="PCM_32")
    (piece,) = read_audio(str(path), ReaderOptions())
    assert piece.values.dtype == np.int32 and piece.meta["sample_units"] == "counts"
    np.testing.assert_array_equal(piece.values, x.T)  # float32 scaling would have rounded 2**24 + 1 and the rest


def test_when_an_audio_file_declares_more_samples_than_the_limit_then_nothing_is_decoded(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros((2_000_000, 2), np.int16), 16000, subtype="PCM_16")
    tracemalloc.start()
    try:
        with pytest.raises(ReaderError, match=r"declares 2000000 samples > max_length 100000 \(checked before decoding\)"):
            list(read_audio(str(path), ReaderOptions(max_length=100_000)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"{peak / 2**20:.0f} MiB decoded before the refusal"


# --- EDF -----------------------------------------------------------------------------------------------

def _edf(path, seconds: int = 10) -> None:
    rng = np.random.default_rng(6)
    sigs = [rng.uniform(-100, 100, 256 * seconds), rng.uniform(-100, 100, 4 * seconds)]
    hdrs = [pyedflib.highlevel.make_signal_header(n, sample_frequency=f) for n, f in (("EEG", 256), ("SpO2", 4))]
    pyedflib.highlevel.write_edf(str(path), sigs, hdrs)


def test_when_an_edf_is_cut_short_or_padded_then_the_cut_one_is_quarantined_with_counts_and_the_padding_flagged(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    _edf(tmp_path / "whole.edf")
    whole = (tmp_path / "whole.edf").read_bytes()
    (raw / "cut.edf").write_bytes(whole[:-700])  # a download that stopped inside the 9th of 10 records
    (raw / "padded.edf").write_bytes(whole + whole[-634:])  # one more record than the header's count

    rc, m, reasons, records = _ingest(raw, tmp_path / "out")

    assert rc == 3
    assert "cut.edf" in reasons["cut.edf"] and "truncated: the header declares 10 data records" in reasons["cut.edf"]
    assert "holds 8 whole record(s)" in reasons["cut.edf"]
    assert sorted(records) == ["h:padded.edf#0", "h:padded.edf#1"]
    for rec in records.values():
        assert rec.meta["flags"]["unread_bytes"] == {"bytes": 634, "file_bytes": len(whole) + 634}


def test_when_one_edf_rate_group_declares_more_than_the_limit_then_only_it_is_refused_and_before_it_is_read(tmp_path):
    path = tmp_path / "night.edf"
    _edf(path, seconds=3600)  # 921,600 EEG samples; the 4 Hz group has 14,400
    tracemalloc.start()
    try:
        pieces = list(read_edf(str(path), ReaderOptions(max_length=100_000)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "rate group 256 Hz declares 921600 samples > max_length 100000" in pieces[0].error
    assert pieces[1].error is None and pieces[1].values.shape == (1, 14400)
    assert peak < 2 << 20, f"{peak / 2**20:.0f} MiB read before the refusal"  # the EEG group is 7 MiB of float64


# --- FITS ----------------------------------------------------------------------------------------------

def _light_curve(path, n: int = 500) -> float:
    """A 2-minute-cadence light curve (time in days); returns its rate in Hz."""
    tab = Table({"TIME": np.arange(n) * 120.0 / 86400, "FLUX": np.random.default_rng(7).standard_normal(n).astype(np.float32) + 100})
    tab["TIME"].unit = "d"
    tab.write(str(path), format="fits")
    return 1 / 120.0


def test_when_rate_is_given_then_a_fits_time_column_still_wins_and_rate_fills_only_a_single_row_table(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    measured = _light_curve(raw / "star.fits")
    Table({"TIME": [5.0], "FLUX": [1.5]}).write(str(raw / "one.fits"), format="fits")

    rc, m, reasons, records = _ingest(raw, tmp_path / "out", "--rate", "100", "--allow-constant")

    assert rc == 0, reasons
    star, one = records["h:star.fits#0"], records["h:one.fits#0"]
    assert star.sampling_rate_hz == pytest.approx(measured, rel=1e-9) and star.meta["rate_source"] == "file"
    assert one.sampling_rate_hz == 100.0 and one.meta["rate_source"] == "--rate"


def test_when_a_fits_header_declares_more_rows_than_the_file_holds_or_the_limit_allows_then_no_table_is_read(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    _light_curve(tmp_path / "lc.fits", n=1000)
    data = (tmp_path / "lc.fits").read_bytes()
    # the same file, its NAXIS2 card claiming 20 million rows (240 MB of table in a 20 KB file)
    card = next(data[i:i + 80] for i in range(0, len(data), 80) if data[i:i + 8] == b"NAXIS2  ")
    (raw / "liar.fits").write_bytes(data.replace(card, b"NAXIS2  = %20d" % 20_000_000 + b" " * 50))
    (raw / "long.fits").write_bytes(data)
    (raw / "packed.fits").write_bytes(gzip.compress(data))  # astropy would decompress it by its magic bytes
    _light_curve(raw / "good.fits", n=400)

    rc, m, reasons, records = _ingest(raw, tmp_path / "out", "--max-length", "500")

    assert rc == 3 and list(records) == ["h:good.fits#0"]
    assert "truncated: HDU 1 declares 20000000 rows" in reasons["liar.fits"]
    assert "HDU 1 (1000 rows x 1 flux columns) declares 1000 samples > max_length 500" in reasons["long.fits"]
    assert "gzip archive, not FITS" in reasons["packed.fits"]
