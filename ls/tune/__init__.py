"""Hyperparameter search with Optuna, from one machine to many, without touching the test split.

    python -m ls.tune configs/quickstart_tune.yaml [--jobs 2] [--storage URL|FILE] [--no-tracking]
    python -m ls.tune configs/quickstart_tune.yaml --report-only
    python -m ls.tune configs/quickstart_tune.yaml --then-study 0 1 2

A tune file is a run config with a ``tune:`` section (:class:`ls.tune.config.TuneConfig`); the run config is the
file's other sections, laid over ``tune.config`` when given (as a study file's):

    tune:
      config: quickstart.yaml
      variants: [ast_film_soft]
      space:
        training.optimizer.lr: {log_uniform: [1.0e-5, 1.0e-3]}
        models.ast_film_soft.mask_overlap_lambda: {uniform: [0, 0.05]}
        models.ast_film_soft.conditioned_layers: {choice: [[10, 11], [8, 9, 10, 11], all]}
      n_trials: 20
      pruner: {type: median, n_warmup_steps: 3}

Every trial is an ordinary ls run of the base config with the trial's values, selected on the validation split
and never tested: the objective is a validation metric (``tune.metric``; by default the run's selection metric,
``icbhi_score`` for ICBHI, ``sprsound_score`` for SPRSound) at the epoch the run selects. The tune folder
(``tune.out``, default ``runs/<name>``) holds:

- ``optuna.db``: the study (the default storage; ``--storage`` names another: a database URL, or a journal file);
- the search's own record (``events.jsonl``; MLflow's parent run of every trial);
- ``trials/trial<k>/``: each trial's run folder (``ls.runs.folder``);
- ``best_config.yaml``: the best trial's config, only what differs from ls's defaults (:mod:`ls.tune.best`);
- ``report/``: trials table, importances, figures (:mod:`ls.tune.report`);
- with ``--then-study``: ``study.yaml`` and ``study/``, the best config trained over seeds and tested once.

How trials are run, retried and pruned: :mod:`ls.tune.search`; how they count: :mod:`ls.tune.trials`; the space:
:mod:`ls.tune.space`.
Optuna is imported by the modules that use it, not by this package.
"""

from ls.tune.config import (
    PrunerConfig,
    SamplerConfig,
    Search,
    StorageSpec,
    TuneConfig,
    TuneError,
    load_search,
    resolve_storage,
)

__all__ = ["PrunerConfig", "SamplerConfig", "Search", "StorageSpec", "TuneConfig", "TuneError", "load_search",
           "resolve_storage"]
