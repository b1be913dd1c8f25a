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


class _Slot(int):
    """Where a leaf sat in a call's arguments: its index in the flat list of leaves."""


def leaf_layout(value, is_leaf):
    """(leaves, layout): the leaves in flattened order, and value with each leaf replaced by its slot
    (containers and other values kept), so that fill_layout can rebuild the call with other arrays:
    lstm(x, (h, c)) flattens to [x, h, c] for comparison and replays as lstm(x', (h', c'))."""
    leaves = []

    def walk(v):
        if is_leaf(v):
            leaves.append(v)
            return _Slot(len(leaves) - 1)
        if isinstance(v, (tuple, list)):
            return _same_container(v, [walk(item) for item in v])
        if isinstance(v, dict):
            return {k: walk(item) for k, item in v.items()}
        return v
    return leaves, walk(value)


def _same_container(original, items):
    """A tuple, list or named tuple (torch's PackedSequence is one) of the original's type holding items."""
    return type(original)(*items) if hasattr(original, "_fields") else type(original)(items)


def fill_layout(layout, leaves):
    """layout (from leaf_layout) with each slot replaced by leaves[slot]; a ValueError when the number of
    leaves is not the number of slots (another call's inputs that do not fit this one)."""
    slots = len(leaf_layout(layout, lambda v: isinstance(v, _Slot))[0])
    if slots != len(leaves):
        raise ValueError(f"{len(leaves)} values for {slots} places in the call")
    return _fill(layout, leaves)


def _fill(layout, leaves):
    if isinstance(layout, _Slot):
        return leaves[layout]
    if isinstance(layout, (tuple, list)):
        return _same_container(layout, [_fill(item, leaves) for item in layout])
    if isinstance(layout, dict):
        return {k: _fill(item, leaves) for k, item in layout.items()}
    return layout


def map_leaves(value, is_leaf, fn):
    """value with fn applied to each leaf, containers kept (a keyword argument hx=(h, c) as numpy)."""
    leaves, layout = leaf_layout(value, is_leaf)
    return fill_layout(layout, [fn(leaf) for leaf in leaves])


def capture_call(args, kwargs, is_tensor, to_numpy):
    """A module call as numpy, for a backend's hooks: (its positional tensors as a flat list, where each sat
    in the arguments (leaf_layout), its keyword arguments: tensors as numpy, also inside tuples and lists
    (hx=(h, c)), and flags such as need_weights as they are; other objects are left out)."""
    tensors, layout = leaf_layout(tuple(args), is_tensor)
    keywords = {}
    for key, value in (kwargs or {}).items():
        found, where = leaf_layout(value, is_tensor)
        if found or value is None or isinstance(value, (bool, int, float, str)):
            keywords[key] = fill_layout(where, [to_numpy(t) for t in found])
    return [to_numpy(t) for t in tensors], layout, keywords
