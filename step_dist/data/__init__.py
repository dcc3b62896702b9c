"""Data: deterministic views, the Ray Data pipeline (validation, quarantine, buckets, batches)."""
from step_dist.data.views import View, ViewConfig, crop, view_window, views_of

__all__ = ["View", "ViewConfig", "crop", "view_window", "views_of"]
