"""`dualbench port FILE.py:CALLABLE`: convert a torch model's source file to paddle with PaConvert (the optional
extra dualbench[port]), list the lines it could not convert, then check the pair with the parity engine.
The package follows the command's jobs:

  convert   PaConvert on a copy of the file: the paddle file, its log, the lines it could not convert
  check     the converted model (its errors as one line) and the parity engine on the pair
  cli       the `dualbench port` command
"""
from dualbench.port.cli import register  # noqa: F401

__all__ = ["register"]
