"""`step-dist evaluate --checkpoint URI --task URI... --out DIR`: probe / staged fine-tune with baselines,
report.json + report.md + plots in DIR (local or s3://)."""
from __future__ import annotations

import argparse
import sys

from step_dist.evaluate.config import BASELINES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="student export folder, run folder, or an s3:// URI of either")
    p.add_argument("--task", action="append", default=[], metavar="URI",
                   help="labelled shard set (repeat for several tasks); tasks may also come from --config")
    p.add_argument("--out", required=True, help="report folder (local or s3://)")
    p.add_argument("--protocol", choices=["probe", "finetune", "both"], default=None, help="default: the config's, else probe")
    p.add_argument("--baselines", default=None,
                   help=f"comma list from {','.join(BASELINES)}; 'none' for the student alone (default: the config's, else all)")
    p.add_argument("--seeds", default=None, help="comma list of seeds (default: the config's, else 0,1,2)")
    p.add_argument("--config", default=None, help="YAML EvaluateConfig (tasks, teachers, fine-tune steps, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set finetune.batch_size=8")


def build_config(args: argparse.Namespace):
    from step_dist import config as cfgmod
    from step_dist.evaluate.config import EvaluateConfig

    data = cfgmod.load_yaml(args.config) if args.config else {}
    if args.protocol:
        data["protocols"] = ["probe", "finetune"] if args.protocol == "both" else [args.protocol]
    if args.baselines is not None:
        data["baselines"] = [] if args.baselines.strip() in ("", "none") else [b.strip() for b in args.baselines.split(",") if b.strip()]
    if args.seeds:
        try:
            data["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise cfgmod.ConfigError(f"--seeds must be integers separated by commas, got {args.seeds!r}") from None
    return cfgmod.from_dict(EvaluateConfig, cfgmod.apply_overrides(data, args.overrides))


def run(args: argparse.Namespace) -> int:
    from step_dist.config import ConfigError
    from step_dist.evaluate.report import markdown
    from step_dist.evaluate.runner import evaluate

    from step_dist import storage

    try:
        cfg = build_config(args)
        storage.check_writable_folder(args.out)  # before the evaluation, not after it
    except (ConfigError, ValueError, storage.StorageError) as e:
        print(f"step-dist evaluate: {e}", file=sys.stderr)
        return 2
    report = evaluate(args.checkpoint, args.task or None, args.out, cfg)
    print(markdown(report))
    print(f"report written to {args.out}")
    print(f"  look: {args.out.rstrip('/')}/report.md (the table), {args.out.rstrip('/')}/*.png (the plots)")
    failed = [r for r in report["results"] if "error" in r]
    if failed:
        print(f"step-dist evaluate: {len(failed)} run(s) failed; see 'failed runs' in the report", file=sys.stderr)
        return 1
    return 0
