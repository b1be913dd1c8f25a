"""The correspondence between a torch model and a paddle model: which module is which, which
tensor is which and how its layout differs; written as a JSON file the user can read and edit.

Canonical layout = torch's names and orientation. `to_canonical` / `from_canonical` move a whole
state between that layout and either framework's own, through the mapping; the checks only ever
compare canonical arrays.

File format (`dualbench-mapping/1`):

    {"format": "dualbench-mapping/1", "torch": SPEC, "paddle": SPEC, "input": [2, 3, 224, 224],
     "modules": [{"torch": "features.0", "paddle": "_conv1._conv", "kind": "conv",
                  "types": ["Conv2d", "Conv2D"], "calls": [[1, 1]], "confidence": 0.9,
                  "basis": "...", "tensors": [{"torch": "features.0.weight",
                  "paddle": "_conv1._conv.weight", "transform": "none", "shape": [64, 3, 11, 11],
                  "confidence": 0.9}, ...]}, ...],
     "unmatched": {"torch": [{"module": ..., "type": ..., "calls": 2, "tensors": {name: shape}}],
                   "paddle": [...]}}

`modules` is in torch's execution order; `calls` pairs the k-th call of the torch module with a
call of the paddle module (a module used twice in forward is called twice). `transform` turns the
paddle tensor into the torch layout (`transpose` for Linear weights; the language is in
parity.transforms): a torch tensor made of several paddle tensors lists them all
(`"paddle": ["attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight"], "transform":
"transpose+concat:0"`), and torch tensors cut from one paddle tensor each name it with a slice
(`"transform": "transpose+slice:0:0:256"`). A tensor that a framework keeps under two names (paddle's
LSTM lists each cell's weights again under `0.cell.*`) is one tensor: only its first name is mapped. A module whose `fused` is set
(a paddle BatchNorm with act='relu') is compared, call by call, with the output of the torch call
named there (torch's ReLU after its BatchNorm); where torch applies that activation outside any
module (F.relu), "activation" names it and torch's output is compared after applying it.
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from dualbench.common.errors import UserError
from dualbench.common.fsutil import atomic_write_text
from dualbench.parity import transforms

FORMAT = "dualbench-mapping/1"


@dataclass
class TensorPair:
    torch: str              # full name in torch's state_dict (the canonical name)
    paddle: object          # full name in paddle's state_dict, or a tuple of names (concatenated)
    transform: str          # paddle layout -> torch layout (parity.transforms): none | transpose | ...
    shape: Tuple[int, ...]  # canonical (torch) shape
    confidence: float = 1.0

    @property
    def paddle_parts(self):
        """The paddle tensors this torch tensor is made of (one, or several for concat)."""
        return tuple(self.paddle) if isinstance(self.paddle, (tuple, list)) else (self.paddle,)


@dataclass
class ModulePair:
    torch: str
    paddle: str
    kind: str
    types: Tuple[str, str]
    calls: List[Tuple[int, int]]
    tensors: List[TensorPair]
    confidence: float = 1.0
    basis: str = ""
    # per call, the torch (module, call) whose output the paddle module's output equals: a paddle
    # BatchNorm with act='relu' computes what torch's BatchNorm and the ReLU after it compute
    fused: Optional[List[Tuple[str, int]]] = None
    # a paddle layer that applies this activation itself where torch applies it outside any module
    # (F.relu after its BatchNorm): torch's output is compared after the activation (numpy)
    activation: Optional[str] = None
    # what the pair rests on: order (aligned in execution order), shape (tensors and outputs), name,
    # replay (the paddle module, run on torch's captured input, reproduced torch's output)
    evidence: List[str] = field(default_factory=list)
    ambiguous: List[str] = field(default_factory=list)   # square weights the shapes could not orient
    one_sided: dict = field(default_factory=dict)        # {side: [tensors]} the other side's layer lacks


@dataclass
class CallPair:
    """One compared call: the k-th call of a torch module and its paddle counterpart."""
    name: str                     # row name: torch module, '#k' for the k-th call (k > 1)
    kind: str
    torch: str
    torch_call: int
    paddle: str
    paddle_call: int
    torch_output: Tuple[str, int]  # the torch call whose output is compared (differs when fused)
    activation: Optional[str] = None  # applied to that output before comparing (see ModulePair)


@dataclass
class Mapping:
    modules: List[ModulePair]
    unmatched_torch: List[dict] = field(default_factory=list)
    unmatched_paddle: List[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def tensors(self):
        return [t for m in self.modules for t in m.tensors]

    def call_pairs(self, torch_order=None):
        """Every compared call. torch_order: [(torch module, call)] as recorded in a forward pass,
        to put the pairs in torch's execution order (a module called twice interleaves with others)."""
        pairs = []
        for m in self.modules:
            for k, (t_call, p_call) in enumerate(m.calls):
                name = (m.torch or "(model)") + (f"#{t_call}" if t_call > 1 else "")
                source = tuple(m.fused[k]) if m.fused else (m.torch, t_call)
                pairs.append(CallPair(name, m.kind, m.torch, t_call, m.paddle, p_call, source, m.activation))
        if torch_order is not None:
            position = {call: i for i, call in enumerate(torch_order)}
            pairs.sort(key=lambda p: position.get((p.torch, p.torch_call), len(position)))
        return pairs

    def kind_of_tensor(self, canonical):
        for m in self.modules:
            if any(t.torch == canonical for t in m.tensors):
                return m.kind
        return ""

    def blocking(self):
        """Unmatched modules that hold tensors: the weights cannot be moved across without them."""
        return ([u for u in self.unmatched_torch if u.get("tensors")],
                [u for u in self.unmatched_paddle if u.get("tensors")])


# ---------------------------------------------------------------------------------------------
# Moving a state through the mapping


def to_canonical(side, arrays, mapping, tensors=None):
    """One framework's state arrays (own names and layout) -> canonical {torch name: array}.
    tensors: only these TensorPairs (default: all of the mapping's)."""
    tensors = mapping.tensors if tensors is None else tensors
    if side == "torch":
        return {t.torch: arrays[t.torch] for t in tensors}
    return {t.torch: transforms.to_torch([arrays[n] for n in t.paddle_parts], t.transform) for t in tensors}


def from_canonical(side, canonical, mapping, paddle_shapes=None):
    """Canonical arrays -> {own name: array} for one framework; every mapped tensor is required.
    paddle_shapes {name: shape}: the paddle tensors' shapes (for the paddle side; transforms that reshape or
    slice lay the arrays out by them)."""
    expected = {t.torch for t in mapping.tensors}
    if set(canonical) != expected:
        missing, extra = sorted(expected - set(canonical)), sorted(set(canonical) - expected)
        raise ValueError(f"weights do not match the model: missing {missing}, unexpected {extra}")
    if side == "torch":
        return {name: np.asarray(value) for name, value in canonical.items()}
    return transforms.to_paddle(mapping.tensors, canonical, paddle_shapes)


# ---------------------------------------------------------------------------------------------
# File


def to_json(mapping):
    modules = []
    for m in mapping.modules:
        entry = {"torch": m.torch, "paddle": m.paddle, "kind": m.kind, "types": list(m.types),
                 "calls": [list(c) for c in m.calls], "confidence": round(m.confidence, 3), "basis": m.basis,
                 "tensors": [dict(asdict(t), shape=list(t.shape), confidence=round(t.confidence, 3))
                             for t in m.tensors]}
        if m.fused:
            entry["fused"] = [list(f) for f in m.fused]
        if m.activation:
            entry["activation"] = m.activation
        if m.evidence:
            entry["evidence"] = list(m.evidence)
        if m.one_sided:
            entry["one_sided"] = m.one_sided
        modules.append(entry)
    return {"format": FORMAT, **mapping.info, "modules": modules,
            "unmatched": {"torch": mapping.unmatched_torch, "paddle": mapping.unmatched_paddle}}


def dumps(data):
    """JSON laid out for reading and editing: a module per line, then its tensors one per line."""
    def one(value):
        return json.dumps(value, default=_json_default)
    lines = ["{"]
    for key, value in data.items():
        if key == "modules":
            lines.append(' "modules": [')
            for i, module in enumerate(value):
                head = {k: v for k, v in module.items() if k != "tensors"}
                lines.append("  " + one(head)[:-1] + ', "tensors": [')
                lines += [f"    {one(tensor)}" + ("," if j < len(module["tensors"]) - 1 else "")
                          for j, tensor in enumerate(module["tensors"])]
                lines.append("  ]}" + ("," if i < len(value) - 1 else ""))
            lines.append(" ],")
        elif key == "unmatched":
            lines.append(' "unmatched": {')
            for j, side in enumerate(("torch", "paddle")):
                entries = value.get(side, [])
                lines.append(f'  "{side}": [' + ("" if entries else "]" + ("," if j == 0 else "")))
                lines += [f"    {one(e)}" + ("," if i < len(entries) - 1 else "") for i, e in enumerate(entries)]
                if entries:
                    lines.append("  ]" + ("," if j == 0 else ""))
            lines.append(" }")
        else:
            lines.append(f" {one(key)}: {one(value)},")
    return "\n".join(lines + ["}"]) + "\n"


def write_mapping(mapping, path):
    """The mapping file (see the module docstring), atomically."""
    atomic_write_text(Path(path), dumps(to_json(mapping)))
    return Path(path)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value).__name__)


def read_mapping(path, torch_table, paddle_table, torch_state, paddle_state):
    """Read a mapping file and check it against both models; a problem is a one-line UserError
    naming the file and the entry. *_table: inspect.module_table(model); *_state: {name: shape}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the mapping file ({e.__class__.__name__}: {e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a JSON mapping file ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("modules"), list):
        raise UserError(f"{path}: not a dualbench mapping file (expected \"format\": \"{FORMAT}\" and a "
                        "\"modules\" list; write one with `dualbench parity --torch ... --paddle ...`)")
    from dualbench.parity.kinds import compatible, kind_of_module
    modules, seen_t, seen_p = [], set(), set()
    for i, entry in enumerate(data["modules"], start=1):
        where = f"{path}: module entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("torch"), str) or \
                not isinstance(entry.get("paddle"), str):
            raise UserError(f"{where}: needs \"torch\" and \"paddle\" module names")
        t_name, p_name = entry["torch"], entry["paddle"]
        if t_name not in torch_table:
            raise UserError(f"{where}: the torch model has no module '{t_name}'")
        if p_name not in paddle_table:
            raise UserError(f"{where}: the paddle model has no module '{p_name}'")
        t_kind = kind_of_module("torch", torch_table[t_name])
        p_kind = kind_of_module("paddle", paddle_table[p_name])
        if not compatible(t_kind, p_kind) and not entry.get("kind"):
            raise UserError(f"{where}: torch {torch_table[t_name]['type']} and paddle "
                            f"{paddle_table[p_name]['type']} are not the same kind of layer")
        calls = entry.get("calls") or [[1, 1]]
        if not all(isinstance(c, list) and len(c) == 2 and all(isinstance(k, int) and k >= 1 for k in c)
                   for c in calls):
            raise UserError(f"{where}: \"calls\" must be a list of [torch call, paddle call] pairs (1-based)")
        tensors = []
        for tensor in entry.get("tensors", []):
            tensors.append(_read_tensor(tensor, where, torch_state, paddle_state, seen_t, seen_p))
        modules.append(ModulePair(t_name, p_name, entry.get("kind") or t_kind,
                                  (torch_table[t_name]["type"], paddle_table[p_name]["type"]),
                                  [tuple(c) for c in calls], tensors, float(entry.get("confidence", 1.0)),
                                  str(entry.get("basis", "from the mapping file")), _read_fused(entry, calls, where),
                                  _read_activation(entry, where), list(entry.get("evidence", ["mapping file"])),
                                  one_sided=_read_one_sided(entry, where, torch_state, paddle_state)))
    info = {k: data[k] for k in ("torch", "paddle", "input", "inputs") if k in data}
    mapping = Mapping(modules, [], [], info)
    # what the file leaves out of the two states is unmatched, whatever its "unmatched" list says
    one_sided = {side: {n for m in modules for n in m.one_sided.get(side, [])} for side in ("torch", "paddle")}
    mapping.unmatched_torch = left_out("torch", torch_table, {t.torch for t in mapping.tensors} | one_sided["torch"])
    mapping.unmatched_paddle = left_out("paddle", paddle_table, {n for t in mapping.tensors for n in t.paddle_parts}
                                        | one_sided["paddle"])
    return mapping


def _read_one_sided(entry, where, torch_state, paddle_state):
    """{side: [tensor]}: tensors of this module pair that only one side holds (an InstanceNorm's affine)."""
    found = entry.get("one_sided") or {}
    states = {"torch": torch_state, "paddle": paddle_state}
    if not isinstance(found, dict) or not all(side in states and isinstance(names, list) and
                                               all(n in states[side] for n in names) for side, names in found.items()):
        raise UserError(f"{where}: \"one_sided\" must be {{\"torch\" or \"paddle\": [tensors of that model]}}")
    return found


def _read_fused(entry, calls, where):
    fused = entry.get("fused")
    if fused is None:
        return None
    if not (isinstance(fused, list) and len(fused) == len(calls) and
            all(isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) and isinstance(f[1], int) for f in fused)):
        raise UserError(f"{where}: \"fused\" must list one [torch module, call] per call")
    return [tuple(f) for f in fused]


def _read_activation(entry, where):
    from dualbench.parity.kinds import NUMPY_ACTIVATIONS
    activation = entry.get("activation")
    if activation is not None and activation not in NUMPY_ACTIVATIONS:
        raise UserError(f"{where}: unknown \"activation\" '{activation}' (known: {', '.join(NUMPY_ACTIVATIONS)})")
    return activation


def _read_tensor(tensor, where, torch_state, paddle_state, seen_t, seen_p):
    paddle_names = tensor.get("paddle") if isinstance(tensor, dict) else None
    if isinstance(paddle_names, list) and paddle_names and all(isinstance(n, str) for n in paddle_names):
        paddle_names = tuple(paddle_names)
    if not isinstance(tensor, dict) or not isinstance(tensor.get("torch"), str) or \
            not isinstance(paddle_names, (str, tuple)):
        raise UserError(f"{where}: a tensor entry needs \"torch\" and \"paddle\" names (a list of paddle "
                        "names for a concatenation)")
    t_name, transform = tensor["torch"], tensor.get("transform", "none")
    parts = paddle_names if isinstance(paddle_names, tuple) else (paddle_names,)
    if t_name not in torch_state:
        raise UserError(f"{where}: the torch model has no tensor '{t_name}'")
    for p_name in parts:
        if p_name not in paddle_state:
            raise UserError(f"{where}: the paddle model has no tensor '{p_name}'")
    sliced = "slice:" in transform
    if t_name in seen_t or any(p in seen_p for p in parts if not sliced):
        raise UserError(f"{where}: tensor {t_name if t_name in seen_t else parts} is mapped twice")
    seen_t.add(t_name)
    seen_p.update(parts)
    try:
        shape = transforms.torch_shape([paddle_state[p] for p in parts], transform)
    except ValueError as e:
        raise UserError(f"{where}: tensor {t_name}: transform '{transform}': {e}") from None
    if shape != tuple(torch_state[t_name]):
        raise UserError(f"{where}: torch {t_name} {list(torch_state[t_name])} and paddle "
                        f"{' + '.join(f'{p} {list(paddle_state[p])}' for p in parts)} do not fit with "
                        f"transform '{transform}'")
    return TensorPair(t_name, paddle_names, transform, tuple(torch_state[t_name]),
                      float(tensor.get("confidence", 1.0)))


def left_out(side, table, mapped_tensors):
    """Modules holding tensors that the mapping does not cover, with those tensors' shapes."""
    from dualbench.parity.kinds import IGNORED_TORCH_TENSORS
    out = []
    for name, info in table.items():
        prefix = f"{name}." if name else ""
        left = {f"{prefix}{k}": list(v) for k, v in info["tensors"].items()
                if f"{prefix}{k}" not in mapped_tensors and not (side == "torch" and k in IGNORED_TORCH_TENSORS)}
        if left:
            out.append({"module": name, "type": info["type"], "tensors": left})
    return out
