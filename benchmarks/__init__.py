"""dualbench: the command line and its engines (run, parity, bench, report, study, predict).

Installed as the package `dualbench` (this folder), with `dualbench.common` (common/) and
`dualbench.backends` (backends/) inside it.
"""
