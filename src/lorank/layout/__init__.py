"""The on-disk layout of lorank's work: every file and folder name of a run, a checkpoint, an adapter and a study,
and the snapshot that keeps them across machines.

- :mod:`lorank.layout.run`: a training run's folder (``config.json``, ``metrics.jsonl``, ``runs_trec/`` ...) and
  its rows of metrics;
- :mod:`lorank.layout.checkpoints`: the ``checkpoint-N/`` folders, the completeness marker, the latest complete one;
- :mod:`lorank.layout.adapter`: the files of an adapter folder (a checkpoint or an exported adapter);
- :mod:`lorank.layout.study`: a study's folder (``study.yaml``, ``runs/<id>/``, the step markers and call ledgers);
- :mod:`lorank.layout.snapshot`: a run or a study cut down to what resuming it needs, and restored.

This package sits below every stage: it imports the standard library and lorank's bottom modules
(:mod:`lorank.atomic`, :mod:`lorank.errors`) only, so train, adapters, export, study and report all read and write
the same names through it.
"""
