"""Entrypoint for `ray job submit`: distil the STEP student with the recipe given.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/pretrain.py --config jobs/configs/base.yaml --set storage=s3://bucket/runs

Inside a job Ray sets RAY_ADDRESS, so this connects to the cluster; run directly it starts a local Ray.
Re-submitting with the same `name` and `storage` resumes from the last checkpoint.
"""
import sys

from step_dist.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
