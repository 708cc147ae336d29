"""The names that become file and folder names: symbols (``<SYMBOL>.parquet``, ``<SYMBOL>.json``) and
model names (``hyperparams/<model>/``).

A symbol is letters, digits and ``. - _ ^ =``, starting with a letter, a digit or ``^``, so that real
tickers pass (``BRK.B``, ``BTC-USD``, ``BTC_USDT``, ``^GSPC``, ``EURUSD=X``) and nothing that could
leave its folder, hide itself, read as a flag or carry markup does. A model name is letters, digits and
``. - _``, starting with a letter or a digit, and is not ``best`` (the folder of the best config per
symbol), in any case.
"""

from __future__ import annotations

import re

from compiled_opt.core.errors import UsageError

MAX_LENGTH = 64
SYMBOL = re.compile(rf"[A-Za-z0-9^][A-Za-z0-9._^=-]{{0,{MAX_LENGTH - 1}}}")
MODEL = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LENGTH - 1}}}")
RESERVED_MODELS = ("best",)


def symbol_problem(name: object) -> str | None:
    """Why ``name`` is not a symbol, or ``None`` if it is one."""
    if isinstance(name, str) and SYMBOL.fullmatch(name):
        return None
    return (
        f"{name!r} is not a symbol: use at most {MAX_LENGTH} letters, digits and . - _ ^ =, starting with a"
        " letter, a digit or ^ (e.g. BRK.B, BTC-USD, ^GSPC, EURUSD=X)"
    )


def check_symbol(name: object, where: str) -> str:
    """``name`` if it is a symbol, else a ``UsageError`` at ``where``."""
    problem = symbol_problem(name)
    if problem:
        raise UsageError(problem, where)
    return name  # type: ignore[return-value]


def check_model_name(name: object, where: str) -> str:
    """``name`` if it can name a model's folder of stored configs, else a ``UsageError`` at ``where``."""
    if isinstance(name, str) and name.lower() in RESERVED_MODELS:
        raise UsageError(f"{name!r} cannot name a model: {name.lower()}/ holds the best config per symbol", where)
    if not (isinstance(name, str) and MODEL.fullmatch(name)):
        raise UsageError(
            f"{name!r} cannot name a model (it names a folder of output.directory): use at most"
            f" {MAX_LENGTH} letters, digits and . - _, starting with a letter or a digit",
            where,
        )
    return name
