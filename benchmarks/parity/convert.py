"""`dualbench convert`: move a trained checkpoint from one framework to the other, verified.

    dualbench convert --torch SPEC --paddle SPEC --from model.pt --to model.pdparams --input 2,3,224,224

The direction follows the suffixes: .pt / .pth are torch state_dicts, .pdparams paddle's, and
.safetensors is the neutral container: its header records whose names and layout it holds
("framework": "torch" | "paddle"; a file without that entry is recognised by its tensor names). A
.safetensors destination gets the other framework's names and layout than the source.

Both models are built from the SPECs and matched as `dualbench parity` matches them (or through
--mapping). The source checkpoint must fit its model exactly; its tensors are moved through the
mapping into the other model, and then both models run the same seeded input in eval mode: every
matched module's output must agree within the forward tolerance, or nothing is written and the
command exits 1. Written atomically.
"""
from dualbench import backends
from pathlib import Path

import numpy as np

from dualbench.common.errors import DataError, UserError
from dualbench.parity.kinds import IGNORED_TORCH_TENSORS
from dualbench.parity.rows import TOLERANCES

SUFFIXES = {".pt": "torch", ".pth": "torch", ".pdparams": "paddle", ".safetensors": None}
OTHER = {"torch": "paddle", "paddle": "torch"}


def register(subparsers):
    p = subparsers.add_parser("convert", help="convert a checkpoint between your torch and paddle models "
                              "(.pt/.pth, .pdparams, .safetensors), verified by a forward comparison")
    p.add_argument("--torch", metavar="SPEC", required=True, help="your torch model (as for `dualbench parity`)")
    p.add_argument("--paddle", metavar="SPEC", required=True, help="your paddle model")
    p.add_argument("--from", dest="source", type=Path, required=True, metavar="CKPT",
                   help="the checkpoint to convert: .pt/.pth (torch), .pdparams (paddle) or .safetensors")
    p.add_argument("--to", dest="target", type=Path, required=True, metavar="CKPT",
                   help="where to write it: .pdparams, .pt/.pth or .safetensors (the other framework's layout)")
    p.add_argument("--input", metavar="SHAPE", help="input shape for matching and the check, e.g. 2,3,224,224 "
                   "(default: the mapping file's)")
    p.add_argument("--inputs", type=Path, metavar="FILE.npz",
                   help="the inputs instead of --input, as for `dualbench parity` (a model that takes token ids "
                        "cannot run on random normal numbers)")
    p.add_argument("--mapping", type=Path, metavar="FILE", help="a mapping file (from `dualbench parity`)")
    p.add_argument("--atol", type=float, help=f"forward check atol (default {TOLERANCES['forward'][0]:g})")
    p.add_argument("--rtol", type=float, help=f"forward check rtol (default {TOLERANCES['forward'][1]:g})")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_convert)


def safetensors_framework(path, tables):
    """Whose layout a .safetensors file holds: its header's "framework", else by its names."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), "np") as f:
            meta, names = f.metadata() or {}, set(f.keys())
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise DataError(path, f"not a safetensors file ({str(e).splitlines()[0][:200]})") from None
    if meta.get("framework") in OTHER:
        return meta["framework"]
    fits = [side for side, state in tables.items() if names and names <= set(state)]
    if len(fits) != 1:
        raise DataError(path, "its tensor names fit neither model (and its header names no framework)")
    return fits[0]


def read_checkpoint(path, framework):
    if Path(path).suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise DataError(path, f"not a safetensors file ({str(e).splitlines()[0][:200]})") from None
    weights = backends.load(framework, "weights")
    return weights.read_state_file(path)


def write_checkpoint(arrays, path, framework):
    if Path(path).suffix == ".safetensors":
        from safetensors.numpy import save_file

        from dualbench.common.fsutil import atomic_path
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({k: np.asarray(v, order="C") for k, v in arrays.items()}, str(tmp),
                      metadata={"framework": framework, "format": "dualbench"})
        return
    weights = backends.load(framework, "weights")
    weights.write_state_file(arrays, path)


def fit_state(path, framework, arrays, model_state):
    """The checkpoint must hold every tensor of the model with its shape (num_batches_tracked aside)."""
    needed = {k for k in model_state if k.rsplit(".", 1)[-1] not in IGNORED_TORCH_TENSORS}
    missing, extra = sorted(needed - set(arrays)), sorted(set(arrays) - set(model_state))
    if missing or extra:
        raise DataError(path, f"does not fit the {framework} model: {len(missing)} tensors missing "
                        f"{missing[:3]}, {len(extra)} unexpected {extra[:3]}")
    for name, value in arrays.items():
        if tuple(np.shape(value)) != tuple(model_state[name].shape):
            raise DataError(path, f"{name} is {list(np.shape(value))} but the {framework} model's is "
                            f"{list(model_state[name].shape)}")


def forward_check(mapping, sides, models, x, tol):
    """Rows comparing every matched module's eval output, torch vs paddle."""
    from dualbench.parity.forward import compare_calls
    from dualbench.parity.pair import bind_mapping
    rows, _, _ = compare_calls(mapping, bind_mapping(sides, mapping), models, {}, x, "eval", tol)
    return rows


def convert_inputs(args, models, mapping):
    """The inputs both models run for matching and for the forward check: --inputs FILE.npz (bound to
    forward()'s parameters, token ids kept as integers), --input SHAPE, or the shape the mapping records."""
    from dualbench.model_loader import parse_shape
    from dualbench.parity.inputs import bind_pair, input_renames, random_inputs, read_npz
    if args.inputs:
        arrays, _ = read_npz(args.inputs)
        return bind_pair(arrays, models, input_renames(args.mapping), args.mapping or args.inputs)
    recorded = mapping.info.get("input") if mapping is not None else None
    if not args.input and not (isinstance(recorded, list) and all(isinstance(d, int) for d in recorded)):
        raise UserError("convert needs the model input: --input SHAPE (e.g. 2,3,224,224), --inputs FILE.npz (token "
                        "ids, masks), or a --mapping file that records a shape")
    return random_inputs(parse_shape(args.input) if args.input else tuple(recorded), 1, args.seed)[0]


def convert_mapping(args, models, sides, tables, x):
    """The mapping matched by running both models on x (square weights replayed)."""
    from dualbench.parity.pair import matched_mapping, record_both
    return matched_mapping(models, sides, tables, record_both(models, sides, tables, x),
                           {"torch": args.torch, "paddle": args.paddle})


def cmd_convert(args):
    from dualbench.parity.mapping import read_mapping
    from dualbench.parity.pair import load_pair_factories, structure_error
    for path, role in ((args.source, "--from"), (args.target, "--to")):
        if path.suffix not in SUFFIXES:
            raise UserError(f"{role} {path}: unknown checkpoint type '{path.suffix}' (known: .pt, .pth, "
                            ".pdparams, .safetensors)")
    if not args.source.is_file():
        raise DataError(args.source, "no such file")
    if args.source.resolve() == args.target.resolve():
        raise UserError(f"--from and --to are the same file ({args.source})")
    factories, _, sides = load_pair_factories(args)
    models = {side: factories[side]() for side in factories}
    states = {side: sides[side].inspect.state_arrays(models[side]) for side in models}
    source = SUFFIXES[args.source.suffix] or safetensors_framework(args.source, states)
    target = SUFFIXES[args.target.suffix] or OTHER[source]
    if source == target:
        raise UserError(f"--from {args.source} and --to {args.target} are both {source} checkpoints: nothing to "
                        "convert (a .safetensors destination takes the other framework's layout)")
    arrays = read_checkpoint(args.source, source)
    fit_state(args.source, source, arrays, states[source])
    tables = {side: sides[side].inspect.module_table(models[side]) for side in models}
    mapping = None
    if args.mapping:
        shapes = {side: {k: tuple(v.shape) for k, v in states[side].items()} for side in models}
        mapping = read_mapping(args.mapping, tables["torch"], tables["paddle"], shapes["torch"], shapes["paddle"])
    x = convert_inputs(args, models, mapping)
    mapping = mapping or convert_mapping(args, models, sides, tables, x)
    problem = structure_error(mapping)
    if problem:
        raise UserError(f"{problem} (write the mapping with `dualbench parity --torch {args.torch} --paddle "
                        f"{args.paddle} ...`, fix it and pass --mapping)")
    convert_and_check(args, sides, models, mapping, states, arrays, source, target, x)


def convert_and_check(args, sides, models, mapping, states, arrays, source, target, x):
    """Move the checkpoint through the mapping, check the forward outputs, write it (or nothing)."""
    from dualbench.parity.mapping import from_canonical, to_canonical
    sides[source].inspect.load_state_arrays(models[source], {k: v for k, v in arrays.items() if k in states[source]})
    canonical = to_canonical(source, sides[source].inspect.state_arrays(models[source]), mapping)
    converted = from_canonical(target, canonical, mapping, {k: tuple(v.shape) for k, v in states[target].items()})
    sides[target].inspect.load_state_arrays(models[target], converted)

    tol = (args.atol if args.atol is not None else TOLERANCES["forward"][0],
           args.rtol if args.rtol is not None else TOLERANCES["forward"][1])
    rows = forward_check(mapping, sides, models, x, tol)
    bad = next((r for r in rows if r["status"] != "ok"), None)
    worst = max((r for r in rows if r["max_rel"] == r["max_rel"]), key=lambda r: r["max_rel"], default=None)
    if bad is not None or not rows:
        where = f"{bad['name']} (paddle {bad['paddle_name']}): " + (
            f"max_abs {bad['max_abs']:.2e}, max_rel {bad['max_rel']:.2e} > atol {tol[0]:g} + rtol {tol[1]:g}"
            if bad["status"] == "FAIL" else bad["cause"]) if bad else "no module output to compare"
        print(f"dualbench convert: the converted weights do not give the same outputs, at {where}; nothing was "
              f"written to {args.target}. `dualbench parity --torch {args.torch} --paddle {args.paddle}` with the "
              "same input shows where and why.")
        raise SystemExit(1)
    write_checkpoint(sides[target].inspect.state_arrays(models[target]), args.target, target)
    print(f"converted {len(mapping.tensors)} tensors: {args.source} ({source}) -> {args.target} ({target}); "
          f"forward check on {len(rows)} module outputs, worst max_abs {worst['max_abs']:.2e} "
          f"(max_rel {worst['max_rel']:.2e}, at {worst['name']}), tolerance atol {tol[0]:g} rtol {tol[1]:g}")
