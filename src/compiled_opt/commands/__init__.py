"""The command line: ``cli`` parses and dispatches; one module per command besides ``run``.

``show`` (stored configs as a table), ``evaluate`` (the forward test), ``forecast`` (the next steps
with the tuned configs), ``report/`` (one HTML page per run: ``data``, ``figures``, ``html``),
``importer`` (``data import``) and ``checkpoint`` (random checkpoints).

Imports: anything of compiled_opt; nothing imports ``commands`` but the console script.
"""
