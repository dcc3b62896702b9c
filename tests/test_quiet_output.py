"""What a verb prints when its output goes to a file: our lines once each, no escape codes, Ray's own
progress bars and notices kept out (they go to the Ray session's log folder, named once)."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np

from step_dist.progress import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ESCAPE = re.compile(r"\x1b|\r")


def test_when_a_verb_writes_to_a_file_then_its_output_has_no_escape_codes_and_no_line_twice(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(src / f"sig{i}.npy", rng.standard_normal((2, 500)).astype(np.float32))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    log = tmp_path / "ingest.log"
    with open(log, "w") as f:  # a file, not a terminal: what `make demo > log` and `ray job submit` see
        rc = subprocess.run([sys.executable, "-m", "step_dist.cli", "ingest", str(src), "--out", str(tmp_path / "shards"),
                             "--rate", "100", "--num-cpus", "2"], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                            timeout=120).returncode
    text = log.read_text()
    assert rc == 0, text
    assert not ESCAPE.search(text), text
    lines = [x for x in text.splitlines() if x.strip()]
    twice = [x for x, n in Counter(lines).items() if n > 1]
    assert not twice, text
    assert "[step-dist] ingest: 3/3 files (100%)" in text  # our progress line, final state
    assert text.count("Ray's own logs") == 1  # said once where Ray's output went
    for noise in ("Token authentication", "ray_remote_args", "Started a local Ray instance", "Total Progress"):
        assert noise not in text, (noise, text)
    assert "look: step-dist inspect" in text
    assert len(lines) <= 8, text


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_when_not_a_terminal_then_progress_prints_plain_lines_at_its_interval_with_rate_and_eta(monkeypatch):
    import step_dist.progress as progress

    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    p = Progress("cache-targets", total=100, unit="views", stream=out, interval_s=30)
    for _ in range(100):
        clock.t += 1.0  # one view a second
        p.update(1)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5  # 1 s, then every 30 s (31, 61, 91), and the last at 100
    assert lines[1] == "[step-dist] cache-targets: 31/100 views (31%) | 1.00 views/s | ETA 1 min 09 s"
    assert lines[-1].startswith("[step-dist] cache-targets: 100/100 views (100%)")
    assert not ESCAPE.search(out.getvalue())


def test_when_a_terminal_then_progress_is_a_live_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    with Progress("pretrain", total=6, unit="steps", stream=out) as p:
        p.set(6, "loss 1.9")
    assert "\r" in out.getvalue() and "6/6" in out.getvalue()


def test_when_the_demo_ends_then_it_prints_the_reports_first_table_with_its_heading_only():
    from step_dist.demo import headline_table

    md = ("# step-dist evaluation\n\nseeds: [0]\n\n## probe: macro-F1 (%)\n\n| task | step |\n|---|---|\n| A | 90.0 |\n\n"
          "accuracy (%)\n\n| task | step |\n|---|---|\n| A | 91.0 |\n")
    assert headline_table(md) == "## probe: macro-F1 (%)\n\n| task | step |\n|---|---|\n| A | 90.0 |"
    assert headline_table("no table here") == "no table here"
