"""Entrypoint for `ray job submit ... -- python jobs/ingest.py SRC... --out URI [ingest options]`.

Same options and exit codes as `step-dist ingest`; under `ray job submit` RAY_ADDRESS is set, so the tasks run
on the cluster and read/write object storage from the workers.
"""
import sys

from step_dist.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
