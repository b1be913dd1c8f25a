"""dualbench: the command line and its engines (run, parity, bench, report, study, predict).

Installed as the package `dualbench` (this folder), with `dualbench.common` (common/) and
`dualbench.backends` (backends/) inside it.
"""

__all__ = ["compare_models", "ParityResult"]


def __getattr__(name):
    # `from dualbench import compare_models` without importing the parity engine on every CLI start
    if name in __all__:
        from dualbench.parity import api
        return getattr(api, name)
    raise AttributeError(f"module 'dualbench' has no attribute {name!r}")
