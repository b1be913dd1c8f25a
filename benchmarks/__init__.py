"""The dualbench command line and its engines (run, predict, ...)."""
