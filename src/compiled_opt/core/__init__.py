"""The core: contracts and maths that every other part builds on, knowing no model.

The backend contract (``backend``), keyed random numbers (``randomness``), aggregators as
L-statistics (``aggregate``), search spaces (``space``), the config file (``config``), market data
and windows (``data``), batch padding (``buckets``), batched evaluation (``evaluate``), forecast
metrics (``metrics``), paired statistics (``stats``) and
group-sequential boundaries (``boundaries``), the hooks and the plugin registry (``hookspecs``,
``registry``), the grammar of symbols and model names (``names``), and the one user-facing error
(``errors``).

Imports: nothing of compiled_opt outside ``core``.
"""
