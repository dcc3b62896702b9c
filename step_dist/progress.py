"""One progress line per stage of ours: done / total, rate and ETA.

On a terminal it is a live tqdm bar; anywhere else (a file, a pipe, `ray job submit`'s log) it is a plain
line every ``interval_s`` seconds, plus the first and the last, with no escape codes: a log read hours later
says how far the stage got and when it expected to end.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_INTERVAL_S = 30.0  # a long run's log gets one line per stage every half minute, not one per item


def duration(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """``with Progress("ingest", total=40, unit="files") as p: p.update(1, extra="120 records")``."""

    def __init__(self, label: str, total: int | None = None, unit: str = "items", stream: TextIO | None = None,
                 interval_s: float = PLAIN_INTERVAL_S, live: bool | None = None, start: int = 0):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stdout
        self.interval_s = interval_s
        self.done = self.start = start  # resumed work (a run restarted at step 300) does not count in the rate
        self.extra = ""
        self.t0 = time.monotonic()
        self._last_line = -float("inf")
        self._closed = False
        live = _isatty(self.stream) if live is None else live
        self._bar = None
        if live:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, desc=label, unit=f" {unit}", file=self.stream,
                             dynamic_ncols=True, mininterval=0.5, leave=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def rate(self) -> float | None:
        if getattr(self, "_rate", None):
            return self._rate
        elapsed = time.monotonic() - self.t0
        return (self.done - self.start) / elapsed if elapsed > 0 and self.done > self.start else None

    def eta_s(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if (r and self.total is not None) else None

    def update(self, n: int = 1, extra: str | None = None) -> None:
        self.set(self.done + n, extra)

    def set(self, done: int, extra: str | None = None, total: int | None = None, rate: float | None = None) -> None:
        """``rate``: units per second measured by the caller (e.g. from a run's metric timestamps), which then
        replaces the rate this object measures since it was made."""
        if rate is not None:
            self._rate = rate
        if total is not None:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        if extra is not None:
            self.extra = extra
        if self._bar is not None:
            self._bar.update(done - self.done)
            if extra is not None:
                self._bar.set_postfix_str(extra, refresh=False)
            self.done = done
            return
        self.done = done
        now = time.monotonic()
        # a line when the interval has passed or the stage reached its total, never the same count twice
        # (a stalled stage stays silent rather than repeating itself; `step-dist status` says it stalled)
        due = now - self._last_line >= self.interval_s or (self.total is not None and done >= self.total)
        if due and done != self._printed_done():
            self._print(self.line())
            self._last_line = now

    def line(self) -> str:
        total = "?" if self.total is None else str(self.total)
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        r = self.rate()
        parts = [f"[step-dist] {self.label}: {self.done}/{total} {self.unit}{pct}",
                 f"{r:.2f} {self.unit}/s" if r else "", f"ETA {duration(self.eta_s())}" if self.total and r else "",
                 self.extra]
        return " | ".join(p for p in parts if p)

    def write(self, message: str) -> None:
        """A line of ours while the bar is live (above it, not through it)."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self._print(message)

    def close(self, extra: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if extra is not None:
            self.extra = extra
        if self._bar is not None:
            self._bar.set_postfix_str(self.extra, refresh=True)
            self._bar.close()
            return
        if self.done != self._printed_done():
            self._print(self.line())

    def _printed_done(self) -> int | None:
        return getattr(self, "_printed", None)

    def _print(self, text: str) -> None:
        self._printed = self.done
        print(text, file=self.stream, flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def remote_counter():
    """A Ray actor that counts what remote stages finished (``add.remote(n)``, ``get.remote()``): the driver
    polls it for a stage whose work happens inside Ray Data, e.g. cache-targets' write_parquet."""
    import ray

    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, n: int) -> None:
            self.n += int(n)

        def get(self) -> int:
            return self.n

    return Counter.remote()


class CounterWatcher:
    """A thread feeding a Progress from a remote_counter() while the main thread blocks on Ray."""

    def __init__(self, counter, progress: Progress, poll_s: float = 2.0):
        import threading

        self.counter, self.progress, self.poll_s = counter, progress, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="step-dist-counter", daemon=True)

    def __enter__(self) -> "CounterWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._poll()
        self.progress.close()

    def _poll(self) -> None:
        import ray

        try:
            self.progress.set(int(ray.get(self.counter.get.remote(), timeout=10)))
        except Exception:  # noqa: BLE001 - display only: a slow answer skips one update
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._poll()
