"""The residual block as fused GPU kernels (`--fused-block`): the scripts' ResidualBlock (4 x Dense, LayerNorm,
activation, then the skip) with the same parameters and the same math, in ONE kernel for its forward pass and ONE
for its backward pass plus one batched matmul for the Dense kernels' gradients. XLA runs the plain block as ~10
kernels forward and more backward, each on a 512 x 256 batch too small to fill a GPU; at depth 64 an SGD step
launches thousands of them. The plain block in the scripts stays the definition; this is a faster way to run it.

On a CUDA GPU the kernels are Triton kernels written with Pallas; elsewhere (a CPU, a GPU other than CUDA's) the
same kernels run in Pallas' interpreter, as plain XLA ops: slow, but the numbers can be checked anywhere
(tests/test_fused_block.py holds them to the plain block). float32 matmuls use TF32 on the GPU, as XLA's default
precision does there; bfloat16 (--compute-dtype) rounds the matmuls' inputs to bfloat16 and accumulates in
float32. For the backward pass the forward keeps each layer's pre-LayerNorm output (4 x rows x width per block, less
than autodiff keeps of the plain block); each layer's parameters are operands of their own, so the backward pass
keeps the block's parameters themselves, not a stacked copy of them.

Interface: fused_residual_block(x, params, activation, compute_dtype), params the block's flax parameters
({"Dense_i": {"kernel", "bias"}, "LayerNorm_i": {"scale", "bias"}}, i = 0..3), x [..., width] float32; width a
multiple of 16. The scripts take FUSED_WIDTHS: a program holds its rows of every layer in registers, and each
pair of tiles is a dot of its own in the kernel; compiled for an H100/H200 by Triton 3.9 the kernels spill
0.1-0.5 KB a thread at width 256 (2 x 2 tiles of 128; 6-14 s to compile a kernel), 3-6 KB at 512 (44-120 s); at
1024 (8 x 8 tiles) one kernel took over 11 minutes (tools/triton_check.py, docs/results.md)."""

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


def _matmul(h, k_ref, c, precision, dtype, transpose=False):
    """h @ K (or h @ K.T), h and the result as lists of column tiles; K (a layer's kernel) read tile by tile."""
    n = len(h)
    out = []
    for j in range(n):
        acc = None
        for i in range(n):
            if transpose:  # tile (j, i) of K, contracted on its columns
                w = k_ref[pl.ds(j * c, c), pl.ds(i * c, c)].astype(dtype)
                d = jax.lax.dot_general(h[i].astype(dtype), w, (((1,), (1,)), ((), ())), precision=precision,
                                        preferred_element_type=jnp.float32)
            else:
                w = k_ref[pl.ds(i * c, c), pl.ds(j * c, c)].astype(dtype)
                d = jax.lax.dot_general(h[i].astype(dtype), w, (((1,), (0,)), ((), ())), precision=precision,
                                        preferred_element_type=jnp.float32)
            acc = d if acc is None else acc + d
        out.append(acc)
    return out


def _row(ref, i, c):
    return ref[pl.ds(i * c, c)][None, :]


def _normalise(z, width):
    """flax's LayerNorm statistics: mean and 1 / sqrt(max(E[z^2] - mean^2, 0) + eps) of each row"""
    mean = sum(jnp.sum(t, axis=1, keepdims=True) for t in z) / width
    mean_sq = sum(jnp.sum(t * t, axis=1, keepdims=True) for t in z) / width
    return mean, jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + LN_EPS)


def _layer_out(z, s_ref, lb_ref, c, width, activation):
    mean, inv = _normalise(z, width)
    return [_activation((t - mean) * inv * _row(s_ref, i, c) + _row(lb_ref, i, c), activation)[0]
            for i, t in enumerate(z)]


# ---- the kernels: one program per BLOCK_ROWS rows; each layer's parameters an operand of its own ----
def _forward_kernel(x_ref, *refs, c, width, activation, precision, dtype):
    """refs: the 4 layers' kernels, biases, LayerNorm scales, LayerNorm biases (4 each), then y and, if kept, z."""
    k_refs, b_refs, s_refs, lb_refs = (refs[4 * j:4 * j + 4] for j in range(4))
    y_ref, z_ref = refs[16], refs[17:]
    x = [x_ref[:, pl.ds(i * c, c)] for i in range(width // c)]
    h = x
    for layer in range(4):
        z = [t + _row(b_refs[layer], i, c) for i, t in enumerate(_matmul(h, k_refs[layer], c, precision, dtype))]
        for i, t in enumerate(z):
            if z_ref:  # kept for the backward pass
                z_ref[0][layer, :, pl.ds(i * c, c)] = t
        h = _layer_out(z, s_refs[layer], lb_refs[layer], c, width, activation)
    for i in range(width // c):
        y_ref[:, pl.ds(i * c, c)] = h[i] + x[i]


def _backward_kernel(x_ref, z_ref, *refs, c, width, activation, precision, dtype):
    """dx; and for the parameters' gradients: each layer's input h and the gradient dz of its Dense output (the
    caller contracts them over the rows), the partial sums of the LayerNorm scale's and bias's gradients.
    refs: the 4 layers' kernels, LayerNorm scales, LayerNorm biases (4 each), dy, then the outputs."""
    k_refs, s_refs, lb_refs = (refs[4 * j:4 * j + 4] for j in range(3))
    dy_ref, dx_ref, h_ref, dz_ref, ds_ref, dlb_ref = refs[12:]
    tiles = range(width // c)
    dy = [dy_ref[:, pl.ds(i * c, c)] for i in tiles]
    dh = dy  # y = h4 + x
    for layer in reversed(range(4)):
        z = [z_ref[layer, :, pl.ds(i * c, c)] for i in tiles]
        mean, inv = _normalise(z, width)
        nhat = [(t - mean) * inv for t in z]
        dn = []
        for i in tiles:
            a = nhat[i] * _row(s_refs[layer], i, c) + _row(lb_refs[layer], i, c)
            da = dh[i] * _activation_grad(a, _activation(a, activation)[1], activation)
            ds_ref[0, layer, pl.ds(i * c, c)] = jnp.sum(da * nhat[i], axis=0)
            dlb_ref[0, layer, pl.ds(i * c, c)] = jnp.sum(da, axis=0)
            dn.append(da * _row(s_refs[layer], i, c))
        mean_dn = sum(jnp.sum(t, axis=1, keepdims=True) for t in dn) / width
        mean_dn_nhat = sum(jnp.sum(t * n, axis=1, keepdims=True) for t, n in zip(dn, nhat)) / width
        dz = [inv * (t - mean_dn - n * mean_dn_nhat) for t, n in zip(dn, nhat)]
        if layer > 0:  # this layer's input: the layer below's output, recomputed from its kept z
            h = _layer_out([z_ref[layer - 1, :, pl.ds(i * c, c)] for i in tiles], s_refs[layer - 1],
                           lb_refs[layer - 1], c, width, activation)
        else:
            h = [x_ref[:, pl.ds(i * c, c)] for i in tiles]
        for i in tiles:
            dz_ref[layer, :, pl.ds(i * c, c)] = dz[i]
            h_ref[layer, :, pl.ds(i * c, c)] = h[i]
        dh = _matmul(dz, k_refs[layer], c, precision, dtype, transpose=True)
    for i in tiles:
        dx_ref[:, pl.ds(i * c, c)] = dh[i] + dy[i]


def _spec(shape, kind):
    """BlockSpec of an operand: "rows" cut on axis 0, "layer_rows" on axis 1, "program" one slice per program,
    None whole (the parameters)."""
    n = len(shape)
    if kind == "rows":
        return pl.BlockSpec((BLOCK_ROWS,) + shape[1:], lambda p: (p,) + (0,) * (n - 1))
    if kind == "layer_rows":
        return pl.BlockSpec((shape[0], BLOCK_ROWS) + shape[2:], lambda p: (0, p) + (0,) * (n - 2))
    if kind == "program":
        return pl.BlockSpec((1,) + shape[1:], lambda p: (p,) + (0,) * (n - 1))
    return pl.BlockSpec(shape, lambda p: (0,) * n)


def _run(kernel, inputs, outputs, activation, compute_dtype):
    """kernel over the rows in programs of BLOCK_ROWS: a Triton kernel where the program is lowered for a CUDA GPU,
    elsewhere the same kernel in Pallas' interpreter. inputs, outputs: (array or shape, kind) pairs."""
    rows, width = inputs[0][0].shape
    dtype = jnp.dtype(compute_dtype)

    def call(gpu, *arrays):
        # on the GPU float32 matmuls in TF32, as XLA's default precision there; the interpreter's dots are XLA's
        precision = jax.lax.DotAlgorithmPreset.TF32_TF32_F32 if gpu and dtype == jnp.float32 else None
        body = functools.partial(kernel, c=chunk_of(width), width=width, activation=activation,
                                 precision=precision, dtype=dtype)
        return pl.pallas_call(
            body, grid=(rows // BLOCK_ROWS,), in_specs=[_spec(a.shape, kind) for a, kind in inputs],
            out_specs=[_spec(shape, kind) for shape, kind in outputs],
            out_shape=[jax.ShapeDtypeStruct(shape, jnp.float32) for shape, _ in outputs], interpret=not gpu,
            compiler_params=pltriton.CompilerParams(num_warps=NUM_WARPS, num_stages=1) if gpu else None)(*arrays)
    return jax.lax.platform_dependent(*[a for a, _ in inputs], cuda=functools.partial(call, True),
                                      default=functools.partial(call, False))


def _forward(x, leaves, activation, compute_dtype, keep_z):
    rows, width = x.shape
    outputs = [((rows, width), "rows")] + ([((4, rows, width), "layer_rows")] if keep_z else [])
    return _run(_forward_kernel, [(x, "rows")] + [(a, None) for a in leaves], outputs, activation, compute_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _block(x, leaves, activation, compute_dtype):
    return _forward(x, leaves, activation, compute_dtype, keep_z=False)[0]


def _block_fwd(x, leaves, activation, compute_dtype):
    y, z = _forward(x, leaves, activation, compute_dtype, keep_z=True)
    return y, (x, z, leaves)  # the block's own parameters, no copy of them


def _block_bwd(activation, compute_dtype, residuals, dy):
    x, z, leaves = residuals
    rows, width = x.shape
    programs = rows // BLOCK_ROWS
    dx, h, dz, dscale, dln_bias = _run(
        _backward_kernel, [(x, "rows"), (z, "layer_rows")] + [(a, None) for a in leaves[:4] + leaves[8:]]
        + [(dy, "rows")],
        [((rows, width), "rows"), ((4, rows, width), "layer_rows"), ((4, rows, width), "layer_rows"),
         ((programs, 4, width), "program"), ((programs, 4, width), "program")], activation, compute_dtype)
    dtype = jnp.dtype(compute_dtype)
    dkernel = jnp.einsum("lrk,lrn->lkn", h.astype(dtype), dz.astype(dtype), preferred_element_type=jnp.float32)
    grads = (dkernel, jnp.sum(dz, axis=1), jnp.sum(dscale, axis=0), jnp.sum(dln_bias, axis=0))
    return dx, tuple(g[layer] for g in grads for layer in range(4))


_block.defvjp(_block_fwd, _block_bwd)


def fused_residual_block(x: jax.Array, params: dict, activation: str, compute_dtype: str) -> jax.Array:
    """ResidualBlock's output (4 x Dense, LayerNorm, activation; plus x) from its flax params, as fused kernels."""
    leaves = tuple(params[f"{module}_{i}"][name] for module, name in
                   (("Dense", "kernel"), ("Dense", "bias"), ("LayerNorm", "scale"), ("LayerNorm", "bias"))
                   for i in range(4))
    shape, width = x.shape, x.shape[-1]
    chunk_of(width)
    x = x.reshape(-1, width)
    pad = -x.shape[0] % BLOCK_ROWS  # rows of zeros to a whole number of programs (sliced off: their cotangent is 0)
    y = _block(jnp.pad(x, ((0, pad), (0, 0))) if pad else x, leaves, activation, compute_dtype)
    return y[:x.shape[0]].reshape(shape)
