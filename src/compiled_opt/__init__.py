"""compiled-opt: per-symbol sampling-hyperparameter search for stochastic forecasters."""

__version__ = "0.1.0"
