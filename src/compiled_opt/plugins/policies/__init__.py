"""Built-in acceptance policies: ``threshold`` (any_improvement, relative_threshold), ``paired``, ``sequential``."""
