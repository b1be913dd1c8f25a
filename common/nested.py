"""One walk over a model's nested output (a tensor, or tuples/lists/dicts of them), for both backends.

Recurrent and attention layers return (out, (h, c)) or (out, weights); the loss, the parity rows and the
recorded calls all need the same leaves in the same order, so the backends pass their tensor test here
instead of each keeping its own copies of the walk.
"""


def nested_leaves(value, is_leaf, path="output"):
    """[(path, leaf)] in flattened order (dicts in insertion order); each leaf named by where it sits
    (output[1][0] is h of (out, (h, c))). Values that are neither leaves nor containers (None, flags)
    are skipped."""
    if is_leaf(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in nested_leaves(v, is_leaf, f"{path}[{k!r}]")]
    if isinstance(value, (tuple, list)):
        return [leaf for i, v in enumerate(value) for leaf in nested_leaves(v, is_leaf, f"{path}[{i}]")]
    return []
