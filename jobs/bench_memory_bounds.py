"""Peak memory of the cases that blew up before limits applied: a teacher input from an hourly record, and
decompression bombs read through the ingest reader. Each case runs in a fresh process whose peak RSS is taken
from the kernel (os.wait4's rusage), under an address-space limit (RLIMIT_AS) so that code that would take
20 GB fails at the limit instead of taking the machine down.

    python jobs/bench_memory_bounds.py [--before REF] [--limit-gb 4] [--out bench_results] [--smoke]

Cases:
  * prepare_crepe_hourly: CREPE's prepare of a 24-sample record at 1/3600 Hz (1.4 billion samples at 16 kHz,
    of which CREPE keeps 30 s); what `step-dist evaluate` does per record.
  * npz_bomb:      read_records on a compressed .npz whose one array is float32 zeros, ~1 GB decoded (~1 MB on disk).
  * h5_unallocated: read_records on an HDF5 file with an unallocated 250M-element float32 dataset (~2 KB on
    disk, 1 GB when read).
``--before REF`` runs the same cases against the step_dist package at a git ref (extracted with `git archive`
into a temporary folder, removed afterwards; the checkout and its git state are not touched), so the table
shows before and after side by side. "killed at limit" means the case ran out of the address space it was given.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

CASES = ("prepare_crepe_hourly", "npz_bomb", "h5_unallocated")
NPZ_ELEMENTS = 256 * 2**20  # float32: 1 GiB decoded
H5_ELEMENTS = 250_000_000

CHILD = r"""
import json, os, resource, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["root"])
resource.setrlimit(resource.RLIMIT_AS, (spec["limit"], spec["limit"]))
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {}
try:
    import step_dist
    out["code"] = os.path.dirname(step_dist.__file__)
    if spec["case"] == "prepare_crepe_hourly":
        import numpy as np
        from step_dist.teachers import TeacherConfig, build_teacher
        import step_dist.teachers.prepare
        t = build_teacher(TeacherConfig(name="crepe", kind="crepe"))
        x = (500 + 100 * np.sin(np.arange(24) / 3.0)).astype(np.float32)[None]
        out["setup_rss"] = rss()
        t0 = time.monotonic()
        p = t.prepare(x, 1 / 3600, "hourly")
        out["seconds"] = time.monotonic() - t0
        out["result"] = f"{p.shape[0]} x {p.shape[1]} samples (context {t.effective_context})"
    else:
        from step_dist.signals.readers import ReaderOptions, read_records
        out["setup_rss"] = rss()
        t0 = time.monotonic()
        kept, bad = [], []
        for r in read_records(spec["file"], ReaderOptions(rate_hz=1.0)):
            (kept if hasattr(r, "values") else bad).append(r)
        out["seconds"] = time.monotonic() - t0
        if bad and any("MemoryError" in q.reason for q in bad):
            out["outcome"] = "killed at limit (MemoryError, quarantined)"
        parts = [f"{len(kept)} kept" + (f" ({kept[0].values.shape[0]} x {kept[0].values.shape[1]})" if kept else "")]
        if bad:
            parts.append(f"{len(bad)} quarantined: {bad[0].reason[:140]}")
        out["result"] = "; ".join(parts)
    out.setdefault("outcome", "ok")
except MemoryError:
    out["outcome"] = "killed at limit (MemoryError)"
except Exception as e:
    # a ReaderError is the reader refusing the whole file (ingest quarantines it with this reason)
    out["outcome"] = "refused" if type(e).__name__ == "ReaderError" else f"error ({type(e).__name__})"
    out["result"] = f"{type(e).__name__}: {str(e)[:300]}"
print("RESULT " + json.dumps(out), flush=True)
"""


def write_npz_bomb(path: str, elements: int) -> None:
    """A compressed .npz of float32 zeros, written in chunks (the bench never holds the decoded array)."""
    import numpy as np

    chunk = np.zeros(2**22, dtype="<f4").tobytes()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (elements,)})
            for done in range(0, elements, 2**22):
                f.write(chunk[: 4 * min(2**22, elements - done)])


def write_h5_unallocated(path: str, elements: int) -> None:
    """An HDF5 dataset that is declared but never written: no bytes on disk, the fill value when read."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(elements,), dtype="f4")


def code_at(ref: str, dest: str) -> str:
    """The step_dist package as it was at ``ref``, extracted under ``dest``; returns the folder to import from."""
    tar = subprocess.run(["git", "-C", bc.ROOT, "archive", "--format=tar", ref, "step_dist"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        t.extractall(dest, filter="data")
    return dest


def run_case(root: str, case: str, file: str | None, limit: int, timeout_s: float) -> dict:
    """One case in a fresh process: its outcome and the kernel's peak RSS for that process (wait4's rusage)."""
    spec = {"root": root, "case": case, "file": file, "limit": limit}
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        p = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=so, stderr=se, env=env, cwd=root)
        timer = threading.Timer(timeout_s, p.kill)
        timer.start()
        _, status, usage = os.wait4(p.pid, 0)
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read().decode(errors="replace"), se.read().decode(errors="replace")
    out = next((json.loads(ln[7:]) for ln in stdout.splitlines() if ln.startswith("RESULT ")), {})
    out["peak_rss"] = usage.ru_maxrss * 1024  # kilobytes on Linux
    out["wall_s"] = time.monotonic() - t0
    if p.returncode < 0:
        late = " after the timeout" if out["wall_s"] >= timeout_s else ""
        out["outcome"] = f"killed ({signal.Signals(-p.returncode).name}){late}"
    elif not out.get("outcome"):
        out["outcome"] = f"failed (exit {p.returncode}): {stderr[-200:]}"
    return out


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="git ref of the code to compare with (e.g. HEAD, a commit)")
    ap.add_argument("--limit-gb", type=float, default=4.0, help="address space each case may use (default 4 GiB)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds each case may run")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--smoke", action="store_true", help="small bombs (64 MiB decoded), for a quick check")
    ap.add_argument("--out", default="bench_results")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"bench_memory_bounds: unknown case(s) {sorted(unknown)}; choose from {CASES}")
    limit = int(args.limit_gb * 2**30)
    scale = 16 if args.smoke else 1
    work = tempfile.mkdtemp(prefix="bench-memory-bounds-")
    try:
        files = {"npz_bomb": os.path.join(work, "bomb.npz"), "h5_unallocated": os.path.join(work, "unallocated.h5")}
        if "npz_bomb" in cases:
            write_npz_bomb(files["npz_bomb"], NPZ_ELEMENTS // scale)
        if "h5_unallocated" in cases:
            write_h5_unallocated(files["h5_unallocated"], H5_ELEMENTS // scale)
        versions = {"after": bc.ROOT}
        if args.before:
            versions = {"before": code_at(args.before, os.path.join(work, "before")), **versions}
        results: dict[str, dict[str, dict]] = {c: {} for c in cases}
        for case in cases:
            for version, root in versions.items():
                print(f"[bench_memory_bounds] {case} ({version}) ...", file=sys.stderr, flush=True)
                results[case][version] = r = run_case(root, case, files.get(case), limit, args.timeout)
                r["file_bytes"] = os.path.getsize(files[case]) if case in files else None
        header = ["case", "file KB"]
        for v in versions:  # "+MiB": the peak over what the process held once its imports and set-up were done
            header += [f"{v}: outcome", f"{v}: peak MiB", f"{v}: +MiB", f"{v}: s"]
        header.append("result (after)")
        rows = []
        for case in cases:
            row = [case, (results[case]["after"]["file_bytes"] or 0) / 1024 or None]
            for v in versions:
                r = results[case][v]
                grew = (r["peak_rss"] - r["setup_rss"]) / 2**20 if r.get("peak_rss") and r.get("setup_rss") else None
                row += [_short(r["outcome"], 44), (r.get("peak_rss") or 0) / 2**20 or None, grew, r.get("seconds") or r["wall_s"]]
            row.append(_short(results[case]["after"].get("result", ""), 90))
            rows.append(row)
        print(bc.table(f"Peak RSS per case, each in a fresh process limited to {args.limit_gb:g} GiB of address space "
                       f"(before = {args.before or '-'})", header, rows))
        path = bc.write_result(args.out, "bench_memory_bounds", {
            "limit_bytes": limit, "before_ref": args.before, "smoke": args.smoke, "cases": results,
            "sizes": {"npz_elements": NPZ_ELEMENTS // scale, "h5_elements": H5_ELEMENTS // scale}})
        print(f"wrote {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
