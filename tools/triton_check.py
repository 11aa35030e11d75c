"""The fused residual block's GPU kernels (crl_kernels.py, --fused-block), compiled for an H100/H200 on a machine
without a GPU: what the Triton compiler makes of them before a GPU session spends its minutes on them.

Pallas lowers each kernel to Triton IR here (the IR a GPU's XLA would compile); Triton from PyPI then compiles that
IR for sm_90 (Hopper) to a cubin, and the cuobjdump in Triton's wheel reads the registers per thread, the stack
(registers spilled to local memory) and the shared memory of each kernel. Triton is not in requirements.txt (about
1 GB with its CUDA tools): give a Python that has it, e.g.

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install triton
    python tools/triton_check.py --triton-python /tmp/tvenv/bin/python [--width 256] [--rows 512]

The kernels of a stack of blocks (--blocks, default 1; a trunk's blocks are a loop inside its kernels) at the
given width and rows: forward (keeping each block's input and each layer's pre-LayerNorm output, as in training),
backward, and forward alone (acting, evaluating). XLA's GPU build carries a Triton of its own, so this
checks the kernels with a Triton near XLA's, not XLA's itself: a GPU run is the final word. The IR is taken from
the Triton lowering of jax's Pallas (jax._src.pallas.triton.lowering: an internal API of jax 0.10)."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COMPILE = r"""
import json, os, subprocess, sys, time
import triton
from triton.backends.compiler import GPUTarget
path, num_warps = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
kernel = triton.compile(path, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": 1})
seconds = time.perf_counter() - t
open(path + ".cubin", "wb").write(kernel.asm["cubin"])
cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
usage = subprocess.run([cuobjdump, "--dump-resource-usage", path + ".cubin"], capture_output=True, text=True).stdout
fields = dict(f.split(":") for f in usage.split() if ":" in f and f.split(":")[1].isdigit())
print(json.dumps({"triton": triton.__version__, "compile_s": seconds, "registers": int(fields.get("REG", -1)),
                  "stack_bytes": int(fields.get("STACK", -1)), "shared_bytes": kernel.metadata.shared}))
"""


def kernel_irs(width: int, rows: int, activation: str, compute_dtype: str, blocks: int = 1) -> list[tuple[str, str]]:
    """(name, Triton IR text) of the kernels of a stack of blocks, as Pallas lowers them for a CUDA GPU."""
    import jax
    import jax.numpy as jnp
    from jax._src.pallas.triton import lowering

    import crl_kernels as K

    block = lambda x, p: K.fused_blocks(x, p, activation, compute_dtype)
    shapes = {f"Dense_{i}": {"kernel": (blocks, width, width), "bias": (blocks, width)} for i in range(4)}
    shapes.update({f"LayerNorm_{i}": {"scale": (blocks, width), "bias": (blocks, width)} for i in range(4)})
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes, is_leaf=lambda s: isinstance(s, tuple))
    x = jax.ShapeDtypeStruct((rows, width), jnp.float32)
    irs, lower = [], lowering.lower_jaxpr_to_triton_module

    def grab(*args, **kwargs):
        result = lower(*args, **kwargs)
        irs.append(result.module.operation.get_asm())
        return result
    lowering.lower_jaxpr_to_triton_module = grab
    try:
        loss = lambda x, p: jnp.sum(block(x, p) ** 2)
        jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, params).lower(lowering_platforms=("cuda",))
        jax.jit(block).trace(x, params).lower(lowering_platforms=("cuda",))
    finally:
        lowering.lower_jaxpr_to_triton_module = lower
    return list(zip(["forward (keeps z)", "backward", "forward alone"], irs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--triton-python", default=sys.executable, help="a Python with triton installed")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--blocks", type=int, default=1, help="blocks in the stack (the kernels' loop)")
    p.add_argument("--activation", choices=["swish", "relu"], default="swish")
    p.add_argument("--compute-dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--out", default=None, help="folder for the .ttir and .cubin files (default: a temporary one)")
    args = p.parse_args()
    import crl_kernels as K

    out = args.out or tempfile.mkdtemp(prefix="triton_check_")
    os.makedirs(out, exist_ok=True)
    print(f"width {args.width}, {args.rows} rows, {args.blocks} block(s), {args.activation}, {args.compute_dtype}; "
          f"tiles of {K.chunk_of(args.width)}, {K.BLOCK_ROWS} rows and {K.NUM_WARPS} warps a program; sm_90; "
          f"files in {out}")
    print("| kernel | Triton | compile s | registers / thread | stack (spilled) bytes | shared bytes |")
    print("|---|---|---|---|---|---|")
    t = time.perf_counter()
    for i, (name, ir) in enumerate(kernel_irs(args.width, args.rows, args.activation, args.compute_dtype,
                                               args.blocks)):
        path = os.path.join(out, f"kernel{i}.ttir")
        open(path, "w").write(ir)
        # compiled anew every time (not from Triton's cache), with Triton's default floating-point contraction
        env = {**os.environ, "TRITON_ALWAYS_COMPILE": "1", "TRITON_DEFAULT_FP_FUSION": "1"}
        proc = subprocess.run([args.triton_python, "-c", COMPILE, path, str(K.NUM_WARPS)], capture_output=True,
                              text=True, env=env)
        if proc.returncode != 0:
            print(f"| {name} | failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]} | | | | |")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['triton']} | {r['compile_s']:.1f} | {r['registers']} | {r['stack_bytes']} | "
              f"{r['shared_bytes']} |", flush=True)
    print(f"total {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
