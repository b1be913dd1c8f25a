"""How a tensor in one framework's layout becomes the canonical one (torch's), and back: the mapping's
`transform`, a small language a user can read and write in the mapping file.

A transform is a '+'-separated chain applied to each paddle tensor of a pair, then at most one way of
combining them, all in torch's layout:

  none                    the same layout
  transpose               a 2-D weight's rows and columns swapped (paddle Linear [in, out] -> torch [out, in])
  permute:2,0,1           the axes reordered (np.transpose with these axes)
  reshape:768,256         the same values in another shape (C order)
  concat:0                several paddle tensors, concatenated along this axis, make one torch tensor
                          (paddle's q_proj, k_proj, v_proj -> torch's packed in_proj_weight [3E, E])
  slice:0:256:512         one torch tensor is this slice of a paddle tensor (a paddle qkv weight -> torch's
                          separate q, k, v): several torch tensors then share that paddle tensor

Example: "transpose+concat:0" transposes each of q/k/v_proj.weight ([E, E], [in, out]) and stacks them.
The way back (canonical -> paddle) is derived: split instead of concat, slices written back into place,
each step inverted. Pure numpy; tile-wise transposes for big 2-D weights.
"""
import numpy as np

TRANSPOSE_TILE = 256
STEPS = ("none", "transpose", "permute", "reshape")
COMBINES = ("concat", "slice")


def contiguous_transpose(array):
    """array.T as a C-contiguous copy, tile by tile: numpy's plain copy of a transposed view walks memory
    with a stride of a whole row and took 0.84 s for a 4096 x 25088 float32 weight (vgg11's first
    classifier layer) here, the tiles 0.28 s."""
    array = np.asarray(array)
    if array.ndim != 2 or array.size < TRANSPOSE_TILE * TRANSPOSE_TILE:
        return np.ascontiguousarray(array.T)
    out = np.empty(array.shape[::-1], array.dtype)
    rows, cols = array.shape
    for i in range(0, rows, TRANSPOSE_TILE):
        for j in range(0, cols, TRANSPOSE_TILE):
            out[j:j + TRANSPOSE_TILE, i:i + TRANSPOSE_TILE] = array[i:i + TRANSPOSE_TILE, j:j + TRANSPOSE_TILE].T
    return out


def _ints(text):
    return tuple(int(v) for v in text.split(",") if v.strip() != "")


def parse(transform):
    """(steps [(name, args)], combine (name, args) or None); ValueError with the reason when malformed."""
    steps, combine = [], None
    for part in (transform or "none").split("+"):
        name, _, args = part.strip().partition(":")
        if name in STEPS:
            if combine is not None:
                raise ValueError(f"'{part}' comes after '{combine[0]}': the combining step goes last")
            if name in ("permute", "reshape"):
                steps.append((name, _ints(args)))
            elif name != "none":
                steps.append((name, ()))
        elif name in COMBINES:
            if combine is not None:
                raise ValueError("one combining step at most (concat or slice)")
            values = _ints(args.replace(":", ","))
            if (name == "concat" and len(values) != 1) or (name == "slice" and len(values) != 3):
                raise ValueError(f"'{part}': concat:AXIS or slice:AXIS:START:STOP")
            combine = (name, values)
        else:
            raise ValueError(f"unknown step '{name}' (known: {', '.join(STEPS + COMBINES)})")
    return steps, combine


def _step(array, name, args):
    if name == "transpose":
        return contiguous_transpose(array)
    if name == "permute":
        return np.ascontiguousarray(np.transpose(array, args))
    return np.reshape(array, args)


def _step_back(array, name, args, shape_before):
    if name == "transpose":
        return contiguous_transpose(array)
    if name == "permute":
        return np.ascontiguousarray(np.transpose(array, np.argsort(args)))
    return np.reshape(array, shape_before)


def _step_shape(shape, name, args):
    if name == "transpose":
        if len(shape) != 2:
            raise ValueError(f"transpose needs a 2-D tensor, not {list(shape)}")
        return tuple(reversed(shape))
    if name == "permute":
        if sorted(args) != list(range(len(shape))):
            raise ValueError(f"permute:{','.join(map(str, args))} does not fit a {len(shape)}-D tensor")
        return tuple(shape[a] for a in args)
    if int(np.prod(args)) != int(np.prod(shape)):
        raise ValueError(f"reshape:{','.join(map(str, args))} does not hold {list(shape)}'s values")
    return tuple(args)


def part_shape(shape, transform):
    """A paddle tensor's shape after the per-tensor steps (in torch's layout, before combining)."""
    for name, args in parse(transform)[0]:
        shape = _step_shape(tuple(shape), name, args)
    return tuple(shape)


def torch_shape(paddle_shapes, transform):
    """The canonical (torch) shape the paddle tensors make; ValueError when they cannot."""
    steps, combine = parse(transform)
    shapes = [part_shape(s, transform) for s in paddle_shapes]
    if combine is None:
        if len(shapes) != 1:
            raise ValueError(f"{len(shapes)} paddle tensors need a concat:AXIS step")
        return shapes[0]
    name, args = combine
    if name == "slice":
        axis, start, stop = args
        if len(shapes) != 1 or not 0 <= start < stop <= shapes[0][axis]:
            raise ValueError(f"slice:{axis}:{start}:{stop} does not fit {[list(s) for s in shapes]}")
        return shapes[0][:axis] + (stop - start,) + shapes[0][axis + 1:]
    axis = args[0]
    rest = {s[:axis] + s[axis + 1:] for s in shapes}
    if len(rest) != 1:
        raise ValueError(f"concat:{axis} of {[list(s) for s in shapes]}: the other axes differ")
    return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]


def to_torch(parts, transform):
    """The canonical array from the paddle arrays of one pair."""
    steps, combine = parse(transform)
    arrays = []
    for array in parts:
        for name, args in steps:
            array = _step(np.asarray(array), name, args)
        arrays.append(np.asarray(array))
    if combine is None:
        return arrays[0]
    name, args = combine
    if name == "slice":
        axis, start, stop = args
        return np.ascontiguousarray(np.take(arrays[0], np.arange(start, stop), axis=axis))
    return np.concatenate(arrays, axis=args[0])


def to_paddle(pairs, canonical, paddle_shapes):
    """{paddle name: array} from canonical arrays. pairs: the mapping's TensorPairs that write these paddle
    tensors; canonical: {torch name: array}; paddle_shapes: {paddle name: shape}. Every slice of a paddle
    tensor must be given, else ValueError."""
    laid = {}       # paddle name -> its array in torch's layout, assembled from the pairs
    covered = {}
    for t in pairs:
        steps, combine = parse(t.transform)
        names = t.paddle_parts
        value = np.asarray(canonical[t.torch])
        if combine is None or combine[0] == "concat":
            sizes = [part_shape(paddle_shapes[n], t.transform) for n in names]
            pieces = [value] if combine is None else np.split(
                value, np.cumsum([s[combine[1][0]] for s in sizes])[:-1], axis=combine[1][0])
            for n, piece in zip(names, pieces):
                laid[n] = piece
                covered[n] = None
        else:
            axis, start, stop = combine[1]
            n = names[0]
            if n not in laid:
                laid[n] = np.zeros(part_shape(paddle_shapes[n], t.transform), value.dtype)
                covered[n] = np.zeros(laid[n].shape[axis], bool)
            index = [slice(None)] * laid[n].ndim
            index[axis] = slice(start, stop)
            laid[n][tuple(index)] = value
            covered[n][start:stop] = True
    out = {}
    for n, array in laid.items():
        if covered[n] is not None and not covered[n].all():
            raise ValueError(f"paddle {n}: the mapping writes only part of it (slices leave rows unwritten)")
        t = next(p for p in pairs if n in p.paddle_parts)
        out[n] = _back(array, t.transform, paddle_shapes[n])
    return out


def _back(array, transform, paddle_shape):
    """A paddle tensor from its torch-layout array: the per-tensor steps undone, last first."""
    steps, _ = parse(transform)
    shapes = [tuple(paddle_shape)]
    for name, args in steps:
        shapes.append(_step_shape(shapes[-1], name, args))
    for (name, args), before in zip(reversed(steps), reversed(shapes[:-1])):
        array = _step_back(array, name, args, before)
    return np.ascontiguousarray(array)
