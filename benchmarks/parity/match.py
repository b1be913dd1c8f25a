"""Match the modules of a torch model and a paddle model written separately, without trusting names.

Both models run the same input once (eval mode) with every module hooked, which gives each side's
calls in execution order: module, class, own tensors, input and output shapes. The two call
sequences are aligned like two strings (Needleman-Wunsch): a torch call and a paddle call can pair
only when they are the same kind of layer (parity.kinds) and their tensors pair one to one
with equal shapes after the layout transform; equal output shapes, equal input shapes and similar
names add to the score, so names only break ties. Calls that pair with nothing (functional ops on the
other side, parameter-free modules) are gaps. A paddle BatchNorm with a fused activation
(`act='relu'`) pairs with torch's BatchNorm followed by its ReLU module. Tensor-holding modules left
over are paired in a second pass only when their kind and shapes are unique in both models; the
rest is listed as unmatched, never guessed.
"""
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional

from dualbench.parity.kinds import NUMPY_ACTIVATIONS, ONE_SIDED, compatible, is_custom, kind_of_module, pair_tensors
from dualbench.parity.mapping import Mapping, ModulePair, TensorPair, left_out

# score of a pair, and of leaving a call unpaired (a tensor-holding call costs more to leave out)
TENSOR_MATCH, FREE_MATCH = 3.0, 1.0
SAME_OUTPUT, SAME_INPUT, SHAPES_DIFFER = 1.0, 0.5, -1.0
NAME_WEIGHT, FUSED_BONUS, CUSTOM_PENALTY = 0.5, 0.5, 0.5
GAP_TENSORS, GAP_FREE = -2.0, -0.2

# paddle's fused-activation names (BatchNorm act=...) as layer kinds
FUSED_KINDS = {"relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh", "leaky_relu": "leakyrelu",
               "swish": "silu", "silu": "silu", "gelu": "gelu", "elu": "elu", "hard_swish": "hardswish"}


@dataclass
class Call:
    module: str
    call: int
    type: str
    kind: str
    tensors: dict          # local name -> shape (own layout)
    ins: tuple             # input shapes
    outs: tuple            # output shapes
    fused: Optional[str] = None   # kind of a fused activation (paddle BatchNorm act=...)


def describe_calls(side, table, recorded):
    """inspect.record_calls' calls + inspect.module_table -> [Call] in execution order."""
    calls = []
    for c in recorded:
        info = table[c["module"]]
        fused = info["config"].get("fused_activation")
        calls.append(Call(c["module"], c["call"], info["type"], kind_of_module(side, info), info["tensors"],
                          tuple(tuple(a.shape) for a in c["inputs"]), tuple(tuple(a.shape) for a in c["outputs"]),
                          FUSED_KINDS.get(fused, f"custom:{fused}") if fused else None))
    return calls


def _tokens(name):
    return set(t for t in re.split(r"[._]+", name.lower()) if t)


def name_similarity(a, b):
    if a == b:
        return 1.0
    ta, tb = _tokens(a), _tokens(b)
    return len(ta & tb) / len(ta | tb) if ta | tb else 0.0


def pair_score(t, p):
    """Score of pairing torch call t with paddle call p, or None when they cannot pair. A model's own
    class (custom) pairs with any module holding tensors of the same shapes and giving the same output
    (a port's LM head kept as [vocab, hidden] against torch's Linear), at a lower score."""
    custom = is_custom(t.kind) or is_custom(p.kind)
    if not compatible(t.kind, p.kind) and not (custom and t.tensors and p.tensors and t.outs == p.outs):
        return None
    pairs, torch_left, paddle_left = pair_tensors(t.kind if not is_custom(t.kind) else p.kind, t.tensors, p.tensors)
    if not set(torch_left + paddle_left) <= set(ONE_SIDED.get(t.kind, ())):
        return None
    score = (TENSOR_MATCH if pairs else FREE_MATCH) - (CUSTOM_PENALTY if t.kind != p.kind and custom else 0.0)
    if t.outs == p.outs:
        score += SAME_OUTPUT + (SAME_INPUT if t.ins == p.ins else 0.0)
    elif t.ins == p.ins:
        pass                    # same input, another output: this very module differs; pair to show it
    elif pairs or not custom:
        score += SHAPES_DIFFER  # same weights (or the same kind of parameter-free layer), shapes differ upstream
    else:
        return None
    return score + NAME_WEIGHT * name_similarity(t.module, p.module)


def _gap(call):
    return GAP_TENSORS if call.tensors else GAP_FREE


def align(torch_calls, paddle_calls):
    """Best alignment: [(torch index, paddle index, absorbed torch index or None, score)]."""
    n, m = len(torch_calls), len(paddle_calls)
    neg = float("-inf")
    cache = {}

    def score(i, j):
        if (i, j) not in cache:
            cache[(i, j)] = pair_score(torch_calls[i], paddle_calls[j])
        return cache[(i, j)]

    best = [[neg] * (m + 1) for _ in range(n + 1)]
    move = [[None] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 and j == 0:
                continue
            options = []
            if i > 0:
                options.append((best[i - 1][j] + _gap(torch_calls[i - 1]), "t"))
            if j > 0:
                options.append((best[i][j - 1] + _gap(paddle_calls[j - 1]), "p"))
            if i > 0 and j > 0:
                s = score(i - 1, j - 1)
                if s is not None:
                    options.append((best[i - 1][j - 1] + s, "m"))
                p = paddle_calls[j - 1]
                if i > 1 and p.fused and torch_calls[i - 1].kind == p.fused and not torch_calls[i - 1].tensors:
                    s = score(i - 2, j - 1)
                    if s is not None:
                        options.append((best[i - 2][j - 1] + s + FUSED_BONUS, "f"))
            best[i][j], move[i][j] = max(options, key=lambda o: o[0])
    pairs, i, j = [], n, m
    while i > 0 or j > 0:
        step = move[i][j]
        if step == "m":
            pairs.append((i - 1, j - 1, None, score(i - 1, j - 1)))
            i, j = i - 1, j - 1
        elif step == "f":
            pairs.append((i - 2, j - 1, i - 1, score(i - 2, j - 1)))
            i, j = i - 2, j - 1
        elif step == "t":
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _consistent(pairs, torch_calls, paddle_calls):
    """A tensor-holding module pairs with one module only: keep its most frequent partner."""
    partners = defaultdict(Counter)
    for ti, pj, _, _ in pairs:
        t, p = torch_calls[ti], paddle_calls[pj]
        if t.tensors:
            partners[("t", t.module)][p.module] += 1
            partners[("p", p.module)][t.module] += 1
    keep = []
    for ti, pj, absorbed, score in pairs:
        t, p = torch_calls[ti], paddle_calls[pj]
        if t.tensors and (partners[("t", t.module)].most_common(1)[0][0] != p.module or
                          partners[("p", p.module)].most_common(1)[0][0] != t.module):
            continue
        keep.append((ti, pj, absorbed, score))
    return keep


def _unique_pairs(torch_calls, paddle_calls, used_t, used_p):
    """Second pass: tensor-holding calls left over whose kind and shapes are unique on both sides.
    Returns pairs in align()'s form."""
    left_t = [i for i, c in enumerate(torch_calls) if i not in used_t and c.tensors]
    left_p = [j for j, c in enumerate(paddle_calls) if j not in used_p and c.tensors]
    found = []
    for i in left_t:
        candidates = [j for j in left_p if pair_score(torch_calls[i], paddle_calls[j]) is not None and
                      torch_calls[i].outs == paddle_calls[j].outs]
        rivals = [k for k in left_t if k != i and candidates and
                  pair_score(torch_calls[k], paddle_calls[candidates[0]]) is not None and
                  torch_calls[k].outs == paddle_calls[candidates[0]].outs]
        if len(candidates) == 1 and not rivals:
            found.append((i, candidates[0], None, pair_score(torch_calls[i], paddle_calls[candidates[0]])))
    return found


def _basis(t, p, second_pass, absorbed):
    if second_pass:
        return 0.8, "kind and shapes unique in both models (paired out of execution order)"
    if t.outs != p.outs:
        why = "same input shape, different output shape: compare this layer's settings" if t.ins == p.ins else \
            "same tensors, but the shapes differ from an earlier layer on"
        return 0.6, f"kind and tensor shapes; {why}"
    if absorbed is not None:
        return 0.9, f"paddle's {p.type} applies act='{p.fused}' itself: compared with torch's {absorbed.module}"
    if t.module == p.module:
        return 1.0, "same name, kind and shapes"
    return 0.9, "kind, tensor and output shapes, position in execution order"


def _full(module, local):
    return f"{module}.{local}" if module else local


def _full_parts(module, local):
    return tuple(_full(module, n) for n in local) if isinstance(local, tuple) else _full(module, local)


def _evidence(t, p, tensor_pairs, second_pass):
    """What the pair rests on, in the mapping file's words: order, shape, name (and replay, added later)."""
    found = [] if second_pass else ["order"]
    if tensor_pairs or t.outs == p.outs:
        found.append("shape")
    if name_similarity(t.module, p.module) > 0 or any(how in ("rule", "name") for *_, how in tensor_pairs):
        found.append("name")
    return found


def same_name_pairs(torch_calls, paddle_calls):
    """Calls of modules that have the same qualified name on both sides, a compatible kind, tensors that
    pair whole, and as many calls: paired by name, k-th call with k-th call, before any alignment. Ports
    keep their attribute names more often than their call order (a pre-norm Transformer layer calls
    norm1 before its attention, a post-norm one after)."""
    by_module = {side: defaultdict(list) for side in ("t", "p")}
    for i, c in enumerate(torch_calls):
        by_module["t"][c.module].append(i)
    for j, c in enumerate(paddle_calls):
        by_module["p"][c.module].append(j)
    found = []
    for name, t_index in by_module["t"].items():
        p_index = by_module["p"].get(name)
        if not p_index or len(p_index) != len(t_index) or not name:
            continue
        t, p = torch_calls[t_index[0]], paddle_calls[p_index[0]]
        if not compatible(t.kind, p.kind) or pair_score(t, p) is None and t.outs == p.outs:
            continue
        tensors, torch_left, paddle_left = pair_tensors(t.kind, t.tensors, p.tensors)
        if torch_left or paddle_left:
            continue
        found += [(i, j, None, TENSOR_MATCH + NAME_WEIGHT) for i, j in zip(t_index, p_index)]
    return found


def match_models(torch_table, paddle_table, torch_calls, paddle_calls, info=None):
    """Mapping from the recorded calls of both models (see describe_calls): modules of the same name first,
    the rest aligned in execution order, then what is unique in kind and shapes."""
    named = same_name_pairs(torch_calls, paddle_calls)
    left_t = [i for i in range(len(torch_calls)) if i not in {p[0] for p in named}]
    left_p = [j for j in range(len(paddle_calls)) if j not in {p[1] for p in named}]
    aligned = align([torch_calls[i] for i in left_t], [paddle_calls[j] for j in left_p])
    pairs = named + [(left_t[i], left_p[j], left_t[a] if a is not None else None, score)
                     for i, j, a, score in aligned]
    pairs = _consistent(pairs, torch_calls, paddle_calls)
    second = _unique_pairs(torch_calls, paddle_calls, {p[0] for p in pairs}, {p[1] for p in pairs})
    second_pass = {(p[0], p[1]) for p in second}
    modules = {}
    for ti, pj, absorbed, _ in sorted(pairs + second, key=lambda p: p[0]):
        t, p = torch_calls[ti], paddle_calls[pj]
        key = (t.module, p.module)
        confidence, basis = _basis(t, p, (ti, pj) in second_pass,
                                   torch_calls[absorbed] if absorbed is not None else None)
        if key not in modules:
            kind = t.kind if not is_custom(t.kind) else p.kind
            tensor_pairs, torch_left, paddle_left = pair_tensors(kind, t.tensors, p.tensors)
            tensors = [TensorPair(_full(t.module, a), _full_parts(p.module, b), transform, tuple(t.tensors[a]),
                                  confidence) for a, b, transform, _ in tensor_pairs]
            modules[key] = ModulePair(t.module, p.module, t.kind, (t.type, p.type), [], tensors, confidence, basis,
                                      evidence=_evidence(t, p, tensor_pairs, (ti, pj) in second_pass))
            modules[key].ambiguous = [_full(t.module, a) for a, _, _, how in tensor_pairs if how == "ambiguous"]
            modules[key].one_sided = {side: [_full(name, n) for n in left] for side, name, left in
                                      (("torch", t.module, torch_left), ("paddle", p.module, paddle_left)) if left}
        module = modules[key]
        module.calls.append((t.call, p.call))
        module.confidence = min(module.confidence, confidence)
        if confidence < 1.0 and basis not in module.basis:
            module.basis = basis if module.confidence == confidence else module.basis
        source = torch_calls[absorbed] if absorbed is not None else t
        module.fused = (module.fused or []) + [(source.module, source.call)]
    mapping = Mapping(list(modules.values()), info=dict(info or {}))
    fused = {(paddle_calls[pj].module): paddle_calls[pj].fused for _, pj, absorbed, _ in pairs + second
             if paddle_calls[pj].fused and absorbed is None}
    for m in mapping.modules:
        if all(f == (m.torch, c[0]) for f, c in zip(m.fused, m.calls)):
            m.fused = None          # no call compared with another torch module's output
        if m.fused is None and fused.get(m.paddle) in NUMPY_ACTIVATIONS:
            m.activation = fused[m.paddle]   # torch applies it outside any module (F.relu)
            m.basis += f"; paddle's {m.types[1]} applies act='{m.activation}' itself: compared after it"
        for tensor in m.tensors:
            tensor.confidence = m.confidence
    paired_t = {(torch_calls[p[0]].module, torch_calls[p[0]].call) for p in pairs + second} | \
        {(torch_calls[p[2]].module, torch_calls[p[2]].call) for p in pairs if p[2] is not None}
    paired_p = {(paddle_calls[p[1]].module, paddle_calls[p[1]].call) for p in pairs + second}
    mapping.unmatched_torch = _unmatched("torch", torch_table, torch_calls, paired_t, mapping)
    mapping.unmatched_paddle = _unmatched("paddle", paddle_table, paddle_calls, paired_p, mapping)
    return mapping


def _unmatched(side, table, calls, paired, mapping):
    """Tensor-holding modules left out (with their tensors' shapes), then called modules left out."""
    mapped = {n for t in mapping.tensors for n in ((t.torch,) if side == "torch" else t.paddle_parts)}
    mapped |= {n for m in mapping.modules for n in m.one_sided.get(side, [])}
    out = left_out(side, table, mapped)
    listed = {u["module"] for u in out}
    counts = Counter(c.module for c in calls)
    for u in out:
        u["calls"] = counts.get(u["module"], 0)
    for c in calls:
        if (c.module, c.call) not in paired and c.module not in listed:
            out.append({"module": c.module, "type": c.type, "tensors": {}, "calls": counts[c.module],
                        "output": [list(s) for s in c.outs]})
            listed.add(c.module)
    return out


def match_by_name(torch_table, paddle_table, names, info=None):
    """The mapping of two models built from one spec, whose modules share their names (the tasks)."""
    modules = []
    for name in names:
        t, p = torch_table.get(name), paddle_table.get(name)
        if t is None or p is None:
            continue
        kind = kind_of_module("torch", t)
        tensor_pairs, _, _ = pair_tensors(kind, t["tensors"], p["tensors"])
        tensors = [TensorPair(_full(name, a), _full_parts(name, b), transform, tuple(t["tensors"][a]))
                   for a, b, transform, _ in tensor_pairs]
        modules.append(ModulePair(name, name, kind, (t["type"], p["type"]), [(1, 1)], tensors, 1.0,
                                  "same name (built from one spec)"))
    mapping = Mapping(modules, info=dict(info or {}))
    mapping.unmatched_torch = left_out("torch", torch_table, {t.torch for t in mapping.tensors})
    mapping.unmatched_paddle = left_out("paddle", paddle_table, {n for t in mapping.tensors for n in t.paddle_parts})
    return mapping


MAX_AMBIGUOUS = 4    # square weights of one module tried in every orientation: 2**4 replays at most


def run_on_torch_input(paddle_inspect, model, name, t_call, p_call, train):
    """paddle's module run alone on torch's inputs of the same call, put where paddle's own call had its
    inputs (lstm(x, (h, c))), with the arguments paddle's call has beyond torch's (an attention mask one
    framework passes by position, the other by keyword) and its keyword arguments kept from paddle's call."""
    torch_in, paddle_in = t_call["inputs"], p_call["inputs"]
    inputs = list(torch_in[:len(paddle_in)]) + list(paddle_in[len(torch_in):])
    return paddle_inspect.call_module(model, name, inputs, train, p_call["kwargs"], p_call.get("layout"))


def settle_by_replay(mapping, models, sides, calls):
    """Orient the square weights that shapes could not: for each module pair with such weights, load the
    torch model's weights into the paddle module in every candidate orientation and run the paddle module
    alone on torch's captured input of its first call; the orientation that reproduces torch's output is
    the mapping's (evidence "replay"). Both models run the same numbers, so a correct port matches exactly
    one orientation; when none matches, the kind's default stays and the basis says so.
    calls: {side: recorded calls} of the matching run."""
    import itertools

    from dualbench.parity.conventions.layers import close
    from dualbench.parity.transforms import to_paddle
    first = {side: {(c["module"], c["call"]): c for c in found} for side, found in calls.items()}
    paddle_inspect, shapes = sides["paddle"].inspect, None
    for m in mapping.modules:
        ambiguous = [t for t in m.tensors if t.torch in m.ambiguous]
        t_call = first["torch"].get((m.torch, 1))
        p_call = first["paddle"].get((m.paddle, 1))
        if not ambiguous or len(ambiguous) > MAX_AMBIGUOUS or t_call is None or p_call is None:
            continue
        torch_state = sides["torch"].inspect.state_arrays(models["torch"], [t.torch for t in m.tensors])
        parts = [n for t in m.tensors for n in t.paddle_parts]
        original = paddle_inspect.state_arrays(models["paddle"], parts)
        shapes = shapes or paddle_inspect.state_shapes(models["paddle"])
        defaults, matches = [t.transform for t in ambiguous], []
        try:
            for combo in itertools.product(("none", "transpose"), repeat=len(ambiguous)):
                for t, transform in zip(ambiguous, combo):
                    t.transform = transform
                arrays = to_paddle(m.tensors, torch_state, shapes)
                paddle_inspect.load_state_arrays(models["paddle"], arrays)
                out = run_on_torch_input(paddle_inspect, models["paddle"], m.paddle, t_call, p_call, False)
                if out and t_call["outputs"] and close(t_call["outputs"][0], out[0], 1e-6, 1e-4):
                    matches.append(combo)
        except (RuntimeError, ValueError, TypeError, AssertionError) as e:
            matches, m.basis = [], m.basis + f"; orientation replay failed ({type(e).__name__})"
        finally:
            paddle_inspect.load_state_arrays(models["paddle"], original)
        chosen = matches[0] if len(matches) == 1 else None
        for t, chosen_or_default in zip(ambiguous, chosen or defaults):
            t.transform = chosen_or_default
        if chosen:
            m.evidence.append("replay")
            m.basis += (f"; {', '.join(t.torch.rsplit('.', 1)[-1] for t in ambiguous)} square: the orientation that "
                        "reproduces torch's output when the paddle module is replayed on torch's input")
        else:
            m.basis += ("; a square weight's orientation: the replay did not single one out, the kind's default "
                        "is kept (check it in this file)")
