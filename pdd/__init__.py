"""pdd: practical dataset distillation (DM + Deep-KKT) runnable as one trial or as a Ray Tune sweep."""

__version__ = "0.1.0"
