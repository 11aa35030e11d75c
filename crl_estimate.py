"""What a run needs, known before it runs: the sizes of its state and what XLA makes of its programs.

Each script's `--estimate` hands this module the training state's shapes (from `jax.eval_shape`, so
nothing large is ever allocated) and its jitted programs; `estimate` lowers and compiles each program
for the backend at hand and prints, per program, XLA's memory analysis (arguments, outputs, the part
of the arguments donated to the outputs, temporaries, the peak) and cost analysis, and the FLOPs of
a training step counted from the shapes. Nothing here knows the algorithm: the script names the parts
of its state and its programs.

Which figures are exact: parameter counts and the bytes of every state part follow from the shapes.
The memory analysis is XLA's buffer assignment for this backend (a CPU's differs from a GPU's). XLA's
cost analysis counts the body of a loop once, not times its trip count, so for a program built of
scans (the epoch, the residual trunk) its FLOPs undercount; `jaxpr_flops` counts every matmul
(2 m n k) and every elementwise output from the program's jaxpr, each scan body times its length.
"""

import collections
import json
import math
import re
import time
from typing import Any, Callable, Optional

import jax
import jax.extend  # noqa: F401 (jax.extend.core: the jaxpr types)
import numpy as np

_SEEN: dict[str, dict] = {}  # lowered program text -> its figures: a program is compiled once per process


def tree_bytes(tree: Any) -> int:
    """Bytes of every array leaf (arrays or jax.ShapeDtypeStruct) of tree."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def tree_size(tree: Any) -> int:
    """Number of elements of every array leaf of tree (a parameter count for a parameter tree)."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _sub_jaxprs(eqn) -> list[tuple[Any, int]]:
    """The jaxprs that eqn runs and how many times each: a scan's body times its length; a while loop's
    body and condition once (their trip count is not in the program); the largest branch of a cond; a Pallas
    kernel times the programs of its grid."""
    p = eqn.params
    name = eqn.primitive.name
    if name == "scan":
        return [(p["jaxpr"], int(p["length"]))]
    if name == "while":
        return [(p["body_jaxpr"], 1), (p["cond_jaxpr"], 1)]
    if name == "cond":
        return [(max(p["branches"], key=lambda j: jaxpr_flops(j)[0]), 1)]
    if name == "pallas_call":  # a kernel (crl_kernels.py): its jaxpr is one program of its grid
        return [(p["jaxpr"], math.prod(p["grid_mapping"].grid))]
    return [(v, 1) for v in p.values() if isinstance(v, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr))]


def jaxpr_flops(jaxpr: Any) -> tuple[float, int]:
    """(FLOPs, while loops met) of a (closed) jaxpr: a dot_general costs 2 x its output elements x the
    contracted size, any other primitive without a sub-program one FLOP per output element; a scan's body
    counts times its length. While loops count once; the second figure says how many there were."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    flops, whiles = 0.0, 0
    for eqn in jaxpr.eqns:
        subs = _sub_jaxprs(eqn)
        if subs:
            whiles += eqn.primitive.name == "while"
            for sub, times in subs:
                f, w = jaxpr_flops(sub)
                flops, whiles = flops + times * f, whiles + w
        elif eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            flops += 2.0 * np.prod(out) * np.prod([lhs[d] for d in lhs_contract])
        else:
            flops += sum(float(np.prod(getattr(v.aval, "shape", ()))) for v in eqn.outvars)
    return flops, whiles


# ops that launch nothing and compute nothing on their own, left out of executed_ops' count
_NOT_OPS = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?[\w.-]+ = .*? ([\w-]+)\(")


def _computations(hlo_text: str) -> dict[str, list[str]]:
    """The instruction lines of each computation of an HLO module's text, by name."""
    comps, current = {}, None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.-]+) .*\{$", line)
        if head:
            current = comps.setdefault(head.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None and _INSTRUCTION.match(line):
            current.append(line)
    return comps


def executed_ops(hlo_text: str, loop_trips: Optional[int] = None) -> int:
    """The HLO ops that a compiled program (`compiled.as_text()`, after XLA's fusion) executes: every
    instruction but parameters, constants, tuples, get-tuple-element and bitcasts, a fusion as one op; a
    while loop's body and condition times its known trip count (and the condition once more), a called
    computation as its ops, a conditional as its largest branch. loop_trips: instead of the whole program, one
    trip of the body of its while loop of that many trips (e.g. the SGD loop's, of num_sgd_steps trips).
    A measure of the kernels a step launches that the CPU can count; on a GPU each is ~1-2 us of launch."""
    return _ops(executed_op_kinds(hlo_text, loop_trips))


def _op_kind(line: str) -> str:
    """What an instruction launches: its op, a fusion with its kind (kLoop, kInput, or the backend's kind of a
    kCustom fusion, e.g. a Triton GEMM), a custom call with its target."""
    op = _INSTRUCTION.match(line).group(1)
    if op == "fusion":
        found = re.search(r'"fusion_backend_config":\{"kind":"([^"]+)"', line) or re.search(r"kind=(\w+)", line)
        return f"fusion {found.group(1)}" if found else op
    if op == "custom-call":
        found = re.search(r'custom_call_target="([^"]+)"', line)
        return f"custom-call {found.group(1)}" if found else op
    return op


def executed_op_kinds(hlo_text: str, loop_trips: Optional[int] = None) -> collections.Counter:
    """executed_ops by what each op is (_op_kind): {kind: ops executed}, plus "loop trips": the while loops'
    trips counted (not ops)."""
    comps, memo = _computations(hlo_text), {}

    def called(line, key):
        found = re.search(key + r"=%?([\w.-]+)", line)
        if not found:
            raise ValueError(f"no {key}= in: {line.strip()[:120]}")
        return found.group(1)

    def trips(line, required=True):
        found = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
        if not found and required:
            raise ValueError(f"a while loop without a known trip count: {line.strip()[:120]}")
        return int(found.group(1)) if found else None

    def count(name):
        if name not in memo:
            n = collections.Counter()
            for line in comps[name]:
                op = _INSTRUCTION.match(line).group(1)
                if op == "while":
                    body, cond, k = count(called(line, "body")), count(called(line, "condition")), trips(line)
                    n.update({key: k * v for key, v in (body + cond).items()})
                    n.update(cond)
                    n["loop trips"] += k
                elif op == "call":
                    n.update(count(called(line, "to_apply")))
                elif op == "conditional":  # branch_computations={...}, or true_computation= / false_computation=
                    listed = re.search(r"branch_computations=\{([^}]*)\}", line)
                    branches = (re.findall(r"%?([\w.-]+)", listed.group(1)) if listed else
                                [called(line, "true_computation"), called(line, "false_computation")])
                    n[op] += 1
                    n.update(max((count(b) for b in branches), key=_ops))
                elif op not in _NOT_OPS:
                    n[_op_kind(line)] += 1
            memo[name] = n
        return memo[name]

    if not any(comps.values()):
        raise ValueError("no HLO instructions found in the text")
    if loop_trips is None:
        entry = re.search(r"^ENTRY %?([\w.-]+)", hlo_text, re.M).group(1)
        return collections.Counter(count(entry))  # a copy: the caller may change it, memo's counts stay
    loops = [line for lines in comps.values() for line in lines
             if _INSTRUCTION.match(line).group(1) == "while" and trips(line, required=False) == loop_trips]
    if len(loops) != 1:
        raise ValueError(f"{len(loops)} while loops of {loop_trips} trips in the program (one needed)")
    return count(called(loops[0], "body")) + count(called(loops[0], "condition"))


def _ops(kinds: collections.Counter) -> int:
    """the ops of an executed_op_kinds count (its loop trips are not ops)"""
    return sum(v for k, v in kinds.items() if k != "loop trips")


def program_figures(fn: Callable, inputs: tuple, calls_per_step: Optional[int] = None) -> dict:
    """Lowers and compiles jitted fn for abstract inputs; its memory and cost analyses and counted FLOPs.
    calls_per_step: the training steps one call makes (the epoch's), to give FLOPs per training step."""
    t = time.perf_counter()
    traced = fn.trace(*inputs)  # traced once: its jaxpr is counted, its lowering compiled
    lowered = traced.lower()
    text = lowered.as_text()
    if text in _SEEN:  # the same program again (e.g. the evaluation, which --remat does not change)
        return _SEEN[text]
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops, whiles = jaxpr_flops(traced.jaxpr)
    fig = {"compile_s": compile_s,
           "arguments": int(mem.argument_size_in_bytes), "outputs": int(mem.output_size_in_bytes),
           "donated": int(mem.alias_size_in_bytes), "temporaries": int(mem.temp_size_in_bytes),
           "code": int(mem.generated_code_size_in_bytes),
           # at most live at once: every argument and output buffer (the donated ones counted once) and every
           # temporary; XLA's own peak_memory_in_bytes is kept beside it (on the CPU it leaves temporaries out)
           "peak": int(mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                       + mem.temp_size_in_bytes),
           "xla_peak": int(getattr(mem, "peak_memory_in_bytes", 0)),
           "xla_flops": float(cost.get("flops", 0.0)), "xla_bytes_accessed": float(cost.get("bytes accessed", 0.0)),
           "flops": flops, "while_loops": whiles}
    if calls_per_step:
        fig["flops_per_step"] = flops / calls_per_step
    _SEEN[text] = fig
    return fig


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def estimate(title: str, params: dict[str, Any], parts: dict[str, Any],
             programs: dict[str, tuple[Callable, tuple, Optional[int]]], num_seeds: int = 1,
             num_devices: int = 1) -> dict:
    """Prints and returns what a run needs. params: name -> parameter tree of all seeds (counted per seed:
    divided by num_seeds); parts: name -> pytree of the state (bytes from the shapes, all seeds);
    programs: name -> (jitted fn, abstract inputs, training steps per call or None). num_devices: the
    devices the programs are split over (XLA's figures are then per device)."""
    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    print(f"estimate: {title}", flush=True)
    print(f"  backend {backend} ({device}), {num_devices} device{'s' if num_devices > 1 else ''}"
          + (" (XLA's figures are per device)" if num_devices > 1 else ""), flush=True)
    counts = {name: tree_size(tree) // num_seeds for name, tree in params.items()}
    print("  parameters" + (" (per seed)" if num_seeds > 1 else "") + ": "
          + ", ".join(f"{name} {n:,}" for name, n in counts.items()), flush=True)
    sizes = {name: tree_bytes(tree) for name, tree in parts.items()}
    print("  state (exact, from the shapes; all seeds" + (", all devices" if num_devices > 1 else "") + "): "
          + ", ".join(f"{name} {human_bytes(b)}" for name, b in sizes.items())
          + f"; total {human_bytes(sum(sizes.values()))}", flush=True)
    figures = {}
    print(f"  {'program':<11} {'compile':>8} {'arguments':>10} {'outputs':>10} {'donated':>10} {'temporaries':>11} "
          f"{'peak':>10} {'GFLOP/step':>11} {'XLA GFLOP':>10} {'XLA GB':>8}", flush=True)
    for name, (fn, inputs, calls) in programs.items():
        f = figures[name] = program_figures(fn, inputs, calls)
        per_step = f"{f['flops_per_step'] / 1e9:11.3f}" if calls else f"{'(' + format(f['flops'] / 1e9, '.3f') + ')':>11}"
        print(f"  {name:<11} {f['compile_s']:7.1f}s {human_bytes(f['arguments']):>10} {human_bytes(f['outputs']):>10} "
              f"{human_bytes(f['donated']):>10} {human_bytes(f['temporaries']):>11} {human_bytes(f['peak']):>10} "
              f"{per_step} {f['xla_flops'] / 1e9:10.3f} {f['xla_bytes_accessed'] / 1e9:8.3f}", flush=True)
    largest = max(figures, key=lambda n: figures[n]["peak"])
    whiles = sum(f["while_loops"] for f in figures.values())
    print(f"  largest peak: {largest}, {human_bytes(figures[largest]['peak'])}"
          + (" per device" if num_devices > 1 else "") + " (arguments + outputs - donated + temporaries)", flush=True)
    print("  GFLOP/step: counted from the shapes, per training step (in brackets: per call), every scan times its "
          "length" + (f", {whiles} while loop bodies once" if whiles else "") + ". XLA GFLOP and GB accessed: "
          "XLA's cost analysis of a call, which counts each loop body once", flush=True)
    report = {"title": title, "backend": backend, "device": device, "num_seeds": num_seeds,
              "num_devices": num_devices, "params": counts, "state_bytes": sizes, "programs": figures,
              "largest": largest}
    print("estimate-json: " + json.dumps(report, sort_keys=True), flush=True)  # for tools that read the output
    return report


def compare(without: dict, with_: dict, what: str) -> dict:
    """One line per program: temporaries, peak and FLOPs of two estimates (e.g. without and with --remat);
    returns without, with_ under the key "compared"."""
    print(f"estimate: {what}", flush=True)
    for name, a in without["programs"].items():
        b = with_["programs"][name]
        print(f"  {name:<11} temporaries {human_bytes(a['temporaries'])} -> {human_bytes(b['temporaries'])}, peak "
              f"{human_bytes(a['peak'])} -> {human_bytes(b['peak'])}, GFLOP/step "
              f"{a.get('flops_per_step', a['flops']) / 1e9:.3f} -> {b.get('flops_per_step', b['flops']) / 1e9:.3f}",
              flush=True)
    return {**without, "compared": with_}
