"""bench.csv, shared by the command that writes it (`dualbench bench`) and the one that reads it
(`dualbench report`), so that neither imports the other:

  table      its columns, and how rows are read (status, measured, latest, resume keys)
  settings   the settings a cell runs under (threads, mode, precision, knobs) and the tuning candidates
No torch, no paddle here.
"""
