"""The residual blocks as fused GPU kernels (`--fused-block`): the scripts' ResidualBlock (4 x Dense, LayerNorm,
activation, then the skip) with the same parameters and the same math. A trunk's whole stack of blocks runs as ONE
kernel forward and ONE backward, plus one batched matmul and a few sums for the parameters' gradients: a trunk's rows
never meet (LayerNorm normalises each row alone), so each kernel program carries its rows through every block, a
loop inside the kernel. Compiled for an H100 by XLA (no GPU needed: docs/results.md), an SGD step at depth 64 then
launches ~110 kernels, against ~2,100 for the plain blocks, each of which works on a 512 x 256 batch too small to fill
a GPU. The plain block in the scripts stays the definition; this is a faster way to run it.

On a CUDA GPU the kernels are Triton kernels written with Pallas; elsewhere (a CPU, a GPU other than CUDA's) the
same kernels run in Pallas' interpreter, as plain XLA ops: slow, but the numbers can be checked anywhere
(tests/test_fused_block.py holds them to the plain block). float32 matmuls use TF32 on the GPU, as XLA's default
precision does there; bfloat16 (--compute-dtype) rounds the matmuls' inputs to bfloat16 and accumulates in
float32. For the backward pass the forward keeps each block's input and each layer's pre-LayerNorm output (5 x rows x
width per block, as the plain blocks keep their inputs and matmuls' outputs); the backward writes each layer's input
and the gradient of its Dense output (8 x rows x width per block) for the batched matmul. Each layer's parameters are
operands of their own (stacked over the blocks, as nn.scan stores them), so the backward pass keeps the parameters
themselves, not a copy of them.

Interface: fused_blocks(x, params, activation, compute_dtype), params the flax parameters of a stack of blocks
({"Dense_i": {"kernel", "bias"}, "LayerNorm_i": {"scale", "bias"}}, i = 0..3, each with a leading axis of blocks);
fused_residual_block(x, params, ...) for one block's; x [..., width] float32; width a multiple of 16. The scripts
take FUSED_WIDTHS: a program holds its rows of every layer in registers, and each pair of tiles is a dot of its own
in the kernel; compiled for an H100/H200 by Triton 3.9 the one-block kernels spilled 0.1-0.5 KB a thread at width
256 (2 x 2 tiles of 128; 6-14 s to compile a kernel), 3-6 KB at 512 (44-120 s); at 1024 (8 x 8 tiles) one kernel
took over 11 minutes. A stack of 16 blocks spills 0.2-0.6 KB a thread at 256, but ~15 KB in the forward kernels at
512 (tools/triton_check.py, docs/results.md)."""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

LN_EPS = 1e-6  # flax.linen.LayerNorm's epsilon
BLOCK_ROWS = 16  # rows of x per kernel program: a batch of 512 is 32 programs per network (Triton's dot needs >= 16)
NUM_WARPS = 8
# widths of at most 4 x 4 tiles a layer, up to 512 (chunk_of's tiles: 16 x k, 32 x k, 64 x k, 128 x k, k <= 4)
FUSED_WIDTHS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def chunk_of(width: int) -> int:
    """The side of the square tiles the kernels cut the width into (Triton's dots take power-of-two sides >= 16).
    Tiles of 128 rather than 64 at width 256 (8 warps): a program's kernels compile ~8x faster and spill a few
    hundred bytes a thread more (tools/triton_check.py, docs/results.md)."""
    for c in (128, 64, 32, 16):
        if width % c == 0:
            return c
    raise ValueError(f"a fused block needs a width that is a multiple of 16 (got {width})")


# ---- the math, on lists of column tiles [rows, c] (Triton holds no wider slices of a value) ----
def _activation(a, activation):
    """(activation(a), sigmoid(a) for swish's derivative)"""
    if activation == "swish":
        s = jax.nn.sigmoid(a)
        return a * s, s
    return jnp.maximum(a, 0.0), None


def _activation_grad(a, s, activation):
    return s * (1.0 + a * (1.0 - s)) if activation == "swish" else (a > 0).astype(a.dtype)


def _matmul(h, k_ref, b, c, precision, dtype, transpose=False):
    """h @ K (or h @ K.T), h and the result as lists of column tiles; K (block b's kernel of a layer) read tile by
    tile."""
    n = len(h)
    out = []
    for j in range(n):
        acc = None
        for i in range(n):
            if transpose:  # tile (j, i) of K, contracted on its columns
                w = k_ref[b, pl.ds(j * c, c), pl.ds(i * c, c)].astype(dtype)
                d = jax.lax.dot_general(h[i].astype(dtype), w, (((1,), (1,)), ((), ())), precision=precision,
                                        preferred_element_type=jnp.float32)
            else:
                w = k_ref[b, pl.ds(i * c, c), pl.ds(j * c, c)].astype(dtype)
                d = jax.lax.dot_general(h[i].astype(dtype), w, (((1,), (0,)), ((), ())), precision=precision,
                                        preferred_element_type=jnp.float32)
            acc = d if acc is None else acc + d
        out.append(acc)
    return out


def _row(ref, b, i, c):
    """tile i of block b's row vector (a bias, a LayerNorm scale or bias) as a [1, c] row"""
    return ref[b, pl.ds(i * c, c)][None, :]


def _normalise(z, width):
    """flax's LayerNorm statistics: mean and 1 / sqrt(max(E[z^2] - mean^2, 0) + eps) of each row"""
    mean = sum(jnp.sum(t, axis=1, keepdims=True) for t in z) / width
    mean_sq = sum(jnp.sum(t * t, axis=1, keepdims=True) for t in z) / width
    return mean, jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + LN_EPS)


def _layer_out(z, s_ref, lb_ref, b, c, width, activation):
    mean, inv = _normalise(z, width)
    return [_activation((t - mean) * inv * _row(s_ref, b, i, c) + _row(lb_ref, b, i, c), activation)[0]
            for i, t in enumerate(z)]


# ---- the kernels: one program per BLOCK_ROWS rows, through every block of the stack (a loop in the kernel; the
# rows of a residual trunk never meet). Each layer's parameters an operand of their own, stacked over the blocks ----
def _forward_kernel(x_ref, *refs, c, width, blocks, activation, precision, dtype):
    """refs: the 4 layers' kernels, biases, LayerNorm scales, LayerNorm biases (4 each, [blocks, ...]), then y and,
    if kept, each block's input xs [blocks, rows, width] and each layer's z [4, blocks, rows, width]."""
    k_refs, b_refs, s_refs, lb_refs = (refs[4 * j:4 * j + 4] for j in range(4))
    y_ref, kept = refs[16], refs[17:]
    tiles = range(width // c)

    def block(b, x):
        h = list(x)
        for i in tiles:
            if kept:  # kept for the backward pass
                kept[0][b, :, pl.ds(i * c, c)] = x[i]
        for layer in range(4):
            z = [t + _row(b_refs[layer], b, i, c) for i, t in enumerate(_matmul(h, k_refs[layer], b, c, precision,
                                                                                 dtype))]
            for i in tiles:
                if kept:
                    kept[1][layer, b, :, pl.ds(i * c, c)] = z[i]
            h = _layer_out(z, s_refs[layer], lb_refs[layer], b, c, width, activation)
        return tuple(t + u for t, u in zip(h, x))

    y = jax.lax.fori_loop(0, blocks, block, tuple(x_ref[:, pl.ds(i * c, c)] for i in tiles))
    for i in tiles:
        y_ref[:, pl.ds(i * c, c)] = y[i]


def _backward_kernel(xs_ref, z_ref, *refs, c, width, blocks, activation, precision, dtype):
    """dx; and for the parameters' gradients: each layer's input h and the gradient dz of its Dense output (the
    caller contracts them over the rows), the partial sums of the LayerNorm scale's and bias's gradients; the
    blocks from the last to the first. refs: the 4 layers' kernels, LayerNorm scales, LayerNorm biases (4 each),
    dy, then the outputs."""
    k_refs, s_refs, lb_refs = (refs[4 * j:4 * j + 4] for j in range(3))
    dy_ref, dx_ref, h_ref, dz_ref, ds_ref, dlb_ref = refs[12:]
    tiles = range(width // c)

    def block(j, dy):
        b = blocks - 1 - j
        dh = list(dy)  # y = h4 + x
        for layer in reversed(range(4)):
            z = [z_ref[layer, b, :, pl.ds(i * c, c)] for i in tiles]
            mean, inv = _normalise(z, width)
            nhat = [(t - mean) * inv for t in z]
            dn = []
            for i in tiles:
                a = nhat[i] * _row(s_refs[layer], b, i, c) + _row(lb_refs[layer], b, i, c)
                da = dh[i] * _activation_grad(a, _activation(a, activation)[1], activation)
                ds_ref[0, layer, b, pl.ds(i * c, c)] = jnp.sum(da * nhat[i], axis=0)
                dlb_ref[0, layer, b, pl.ds(i * c, c)] = jnp.sum(da, axis=0)
                dn.append(da * _row(s_refs[layer], b, i, c))
            mean_dn = sum(jnp.sum(t, axis=1, keepdims=True) for t in dn) / width
            mean_dn_nhat = sum(jnp.sum(t * n, axis=1, keepdims=True) for t, n in zip(dn, nhat)) / width
            dz = [inv * (t - mean_dn - n * mean_dn_nhat) for t, n in zip(dn, nhat)]
            if layer > 0:  # this layer's input: the layer below's output, recomputed from its kept z
                h = _layer_out([z_ref[layer - 1, b, :, pl.ds(i * c, c)] for i in tiles], s_refs[layer - 1],
                               lb_refs[layer - 1], b, c, width, activation)
            else:
                h = [xs_ref[b, :, pl.ds(i * c, c)] for i in tiles]
            for i in tiles:
                dz_ref[layer, b, :, pl.ds(i * c, c)] = dz[i]
                h_ref[layer, b, :, pl.ds(i * c, c)] = h[i]
            dh = _matmul(dz, k_refs[layer], b, c, precision, dtype, transpose=True)
        return tuple(t + u for t, u in zip(dh, dy))

    dx = jax.lax.fori_loop(0, blocks, block, tuple(dy_ref[:, pl.ds(i * c, c)] for i in tiles))
    for i in tiles:
        dx_ref[:, pl.ds(i * c, c)] = dx[i]


def _spec(shape, kind):
    """BlockSpec of an operand: "rows" cut on axis 0, "block_rows" on axis 1 ([blocks, rows, width]),
    "layer_rows" on axis 2 ([4, blocks, rows, width]), "program" one slice per program, None whole (the
    parameters)."""
    n = len(shape)
    cut = {"rows": 0, "block_rows": 1, "layer_rows": 2}.get(kind)
    if cut is not None:
        return pl.BlockSpec(shape[:cut] + (BLOCK_ROWS,) + shape[cut + 1:],
                            lambda p: (0,) * cut + (p,) + (0,) * (n - cut - 1))
    if kind == "program":
        return pl.BlockSpec((1,) + shape[1:], lambda p: (p,) + (0,) * (n - 1))
    return pl.BlockSpec(shape, lambda p: (0,) * n)


def _run(kernel, blocks, inputs, outputs, activation, compute_dtype):
    """kernel over the rows in programs of BLOCK_ROWS, each through the stack of blocks: a Triton kernel where the
    program is lowered for a CUDA GPU, elsewhere the same kernel in Pallas' interpreter. inputs, outputs: (array or
    shape, kind) pairs, the first input's last two axes the rows and the width."""
    rows, width = inputs[0][0].shape[-2:]
    dtype = jnp.dtype(compute_dtype)

    def call(gpu, *arrays):
        # on the GPU float32 matmuls in TF32, as XLA's default precision there; the interpreter's dots are XLA's
        precision = jax.lax.DotAlgorithmPreset.TF32_TF32_F32 if gpu and dtype == jnp.float32 else None
        body = functools.partial(kernel, c=chunk_of(width), width=width, blocks=blocks, activation=activation,
                                 precision=precision, dtype=dtype)
        return pl.pallas_call(
            body, grid=(rows // BLOCK_ROWS,), in_specs=[_spec(a.shape, kind) for a, kind in inputs],
            out_specs=[_spec(shape, kind) for shape, kind in outputs],
            out_shape=[jax.ShapeDtypeStruct(shape, jnp.float32) for shape, _ in outputs], interpret=not gpu,
            compiler_params=pltriton.CompilerParams(num_warps=NUM_WARPS, num_stages=1) if gpu else None)(*arrays)
    return jax.lax.platform_dependent(*[a for a, _ in inputs], cuda=functools.partial(call, True),
                                      default=functools.partial(call, False))


def _forward(x, leaves, activation, compute_dtype, keep):
    rows, width = x.shape
    blocks = leaves[0].shape[0]
    outputs = [((rows, width), "rows")]
    if keep:  # each block's input and each layer's pre-LayerNorm output, for the backward pass
        outputs += [((blocks, rows, width), "block_rows"), ((4, blocks, rows, width), "layer_rows")]
    return _run(_forward_kernel, blocks, [(x, "rows")] + [(a, None) for a in leaves], outputs, activation,
                compute_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _blocks(x, leaves, activation, compute_dtype):
    return _forward(x, leaves, activation, compute_dtype, keep=False)[0]


def _blocks_fwd(x, leaves, activation, compute_dtype):
    y, xs, z = _forward(x, leaves, activation, compute_dtype, keep=True)
    return y, (xs, z, leaves)  # the blocks' own parameters, no copy of them


def _blocks_bwd(activation, compute_dtype, residuals, dy):
    xs, z, leaves = residuals
    blocks, rows, width = xs.shape
    programs = rows // BLOCK_ROWS
    dx, h, dz, dscale, dln_bias = _run(
        _backward_kernel, blocks,
        [(xs, "block_rows"), (z, "layer_rows")] + [(a, None) for a in leaves[:4] + leaves[8:]] + [(dy, "rows")],
        [((rows, width), "rows"), ((4, blocks, rows, width), "layer_rows"), ((4, blocks, rows, width), "layer_rows"),
         ((programs, 4, blocks, width), "program"), ((programs, 4, blocks, width), "program")],
        activation, compute_dtype)
    dtype = jnp.dtype(compute_dtype)
    # every Dense kernel's gradient of the stack in one batched matmul, each bias's in one sum
    dkernel = jnp.einsum("lbrk,lbrn->lbkn", h.astype(dtype), dz.astype(dtype), preferred_element_type=jnp.float32)
    grads = (dkernel, jnp.sum(dz, axis=2), jnp.sum(dscale, axis=0), jnp.sum(dln_bias, axis=0))
    return dx, tuple(g[layer] for g in grads for layer in range(4))


_blocks.defvjp(_blocks_fwd, _blocks_bwd)


def fused_blocks(x: jax.Array, params: dict, activation: str, compute_dtype: str) -> jax.Array:
    """A stack of ResidualBlocks (4 x Dense, LayerNorm, activation; plus the skip) run one after another, from their
    flax params stacked on a leading axis (nn.scan's), as two fused kernels: one forward, one backward."""
    leaves = tuple(params[f"{module}_{i}"][name] for module, name in
                   (("Dense", "kernel"), ("Dense", "bias"), ("LayerNorm", "scale"), ("LayerNorm", "bias"))
                   for i in range(4))
    shape, width = x.shape, x.shape[-1]
    chunk_of(width)
    x = x.reshape(-1, width)
    pad = -x.shape[0] % BLOCK_ROWS  # rows of zeros to a whole number of programs (sliced off: their cotangent is 0)
    y = _blocks(jnp.pad(x, ((0, pad), (0, 0))) if pad else x, leaves, activation, compute_dtype)
    return y[:x.shape[0]].reshape(shape)


def fused_residual_block(x: jax.Array, params: dict, activation: str, compute_dtype: str) -> jax.Array:
    """ResidualBlock's output from its flax params (one block: fused_blocks on a stack of one)."""
    return fused_blocks(x, jax.tree.map(lambda a: a[None], params), activation, compute_dtype)
