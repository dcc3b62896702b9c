"""Entrypoint for `ray job submit`: a Ray Tune sweep of pretraining runs over one target cache.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/sweep.py --config jobs/configs/sweep-demo.yaml --set storage=s3://bucket/sweeps

Re-submitting with the same `name` and `storage` resumes the sweep (finished trials kept, the rest resumed).
"""
import sys

from step_dist.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
