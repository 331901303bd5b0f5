"""Runs as a capability of their own: the run folder is the unit of work and the record; MLflow is its mirror.

- :mod:`ls.runs.folder`: a run folder's layout, exclusive creation, the room check, its state (new / resumable /
  finished / failed) read from its files;
- :mod:`ls.runs.record`: the record, local first: an append-only event log in the folder;
- :mod:`ls.runs.mirror`: MLflow as a mirror of records: an idempotent ``sync(folder)``;
- :mod:`ls.runs.run`: one run: inputs -> folder -> data -> model -> Trainer -> artifacts;
- :mod:`ls.runs.plan` and :mod:`ls.runs.executor`: groups of runs (``--seeds``, ``--kfold``, a study, the
  quickstart, a search) as plans of run specs, run by one executor in this process or in a pool;
- :mod:`ls.runs.protocol`: the protocol card every ``run.json`` carries;
- :mod:`ls.runs.secrets`: what keeps credentials out of every file and message.
"""
