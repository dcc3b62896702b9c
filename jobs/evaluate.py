"""Entrypoint for `ray job submit ... -- python jobs/evaluate.py --checkpoint URI --task URI --out URI`.

The same arguments as `step-dist evaluate`; under a job, ray.init() attaches to the cluster, and each
(task, model[, seed]) run is a Ray task scheduled on it.
"""
import sys

from step_dist.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
