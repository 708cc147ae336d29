"""Built-in model backends: ``bootstrap`` (no weights), ``toto`` and ``kronos``; ``weights`` finds checkpoints."""
