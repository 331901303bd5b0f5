"""Figures for papers and reports: SoftFiLM masks, t-SNE, FiLM parameters, and per-model performance.

The modules take plain arrays / dicts (so they are usable from notebooks and MLflow artifacts alike);
``ls.viz.cli`` (``visualize.py``) wires them to checkpoints. Matplotlib runs on the Agg backend.
"""
