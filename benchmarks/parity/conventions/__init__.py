"""The convention differences between torch and paddle that the parity diagnosis can prove, each with its
replay in numpy (float64). A cause is named only when a replay with the convention flipped reproduces the
other side's numbers.

  layers      layers and losses computed from their definitions under every value of a convention
  sequence    the same for LSTM, GRU, RNN, attention, Transformer layers, InstanceNorm, Embedding
  replay      the one entry point: a module's replay with each of its kind's conventions flipped
  optimizers  optimizer updates replayed from the captured parameters and gradients
  rules       how two tensors are compared, the conventions' words (KNOWN), BatchNorm statistics fits
  table()     every convention in words, for the README and parity.md
No torch, no paddle here.
"""
from dualbench.parity.conventions.replay import table  # noqa: F401
