"""step-dist: distributed STEP pretraining."""
__version__ = "0.1.0"
