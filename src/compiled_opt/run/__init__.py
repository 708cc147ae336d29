"""A run: plan the jobs from the checked inputs, hand them to an executor, decide and store each outcome.

``driver`` is the loop and the group commit (the only writer of stores and logs); ``executor`` is
the executors' interface; ``fast`` the fast single-GPU settings; ``limits`` the bounds on what a run
may ask for; ``console`` what a run prints.

Imports: ``core``, ``store`` and ``tuning``.
"""
