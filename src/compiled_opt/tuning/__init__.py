"""Tuning one job: the search over a model's space, racing, acceptance, and the worker that runs jobs.

``models`` checks a ``[models.<name>]`` table against its backend class; ``search`` and ``racing``
score candidates; ``acceptance`` re-scores the winner against the reference and asks the policy;
``jobs`` holds the job spec and result; ``worker`` loads every model once and runs job after job;
``shards`` runs the pooled stage in groups of symbols evaluated apart and joined.

Imports: ``core`` and ``store`` (the trial row a worker streams back).
"""
