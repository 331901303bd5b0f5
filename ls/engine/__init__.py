"""ls.engine: losses, metrics, output modes, optimisation, the Trainer, the inference loop, checkpoints, tracking.

The engine knows no dataset, file format or mechanism. Import the parts you need from their modules
(``ls.engine.trainer.Trainer``, ``ls.engine.inference.run_inference``, ...); this package stays import-light
so that ``ls.config`` can load the engine's config dataclasses without torch or mlflow.
"""
