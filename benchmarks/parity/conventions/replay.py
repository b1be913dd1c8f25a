"""One entry point for every replay: a layer's output recomputed in numpy from its captured call with
torch's settings, then with one convention flipped (layers: conventions.layers; sequence, attention,
embedding and Transformer layers: conventions.sequence).

replay() returns None when the replay with torch's settings does not reproduce torch's output (no claim
is made then), else [(Convention, torch's value, the flipped value, max_abs of the flipped replay
against paddle's output)], empty when no single flip explains the difference.
"""
import numpy as np

from dualbench.parity.conventions import layers, sequence


def modelled(kind):
    """Whether a layer of this kind has a replay at all (one without one is simply not diagnosed)."""
    return kind in layers.COMPUTE or kind in sequence.SEQUENCE_COMPUTE


def replay(kind, args, kwargs, weights, torch_config, paddle_config, torch_out, paddle_out, train, mask, tol):
    if kind not in sequence.SEQUENCE_COMPUTE:
        return layers.replay(kind, args, weights, torch_config, paddle_config, torch_out, paddle_out, train, mask,
                             tol)
    compute = sequence.SEQUENCE_COMPUTE[kind]
    # the precision the frameworks computed in: paddle's boolean masks behave differently in float32
    torch_config = dict(torch_config, dtype=np.asarray(torch_out).dtype.name)

    def first_output(config):
        return np.asarray(compute(args, kwargs or {}, weights, config, train)[0], np.float64)

    # a flip that makes this call inconsistent (a ValueError) reproduces nothing
    return layers._replay(first_output, [c for c in sequence.SEQUENCE_CONVENTIONS if kind in c.kinds],
                          torch_config, paddle_config, torch_out, paddle_out, tol, catch=ValueError)


def table():
    """Every convention the diagnosis can prove, in words: [(title, torch default, paddle default, fix)]."""
    return layers.table() + [(c.title, c.torch, c.paddle, c.fix) for c in sequence.SEQUENCE_CONVENTIONS]
