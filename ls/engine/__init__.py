"""ls.engine: losses, metrics, optimisation, the Trainer, checkpoints, tracking and the experiment runner.

Import the parts you need from their modules (``ls.engine.trainer.Trainer``,
``ls.engine.checkpoint.load_model_from_checkpoint``, ``ls.engine.runner.main``, ...); this package stays
import-light so that ``ls.config`` can load the engine's config dataclasses without torch or mlflow.
"""
