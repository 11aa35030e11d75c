"""--fused-block (crl_kernels.py): the residual block as fused kernels gives the plain block's numbers, forward and
backward, alone and inside the SGD update (stacked networks, the layer scan, remat, seeds, padded rows); and its
kernels lower to Triton kernels for a CUDA GPU. On a CPU the kernels run in Pallas' interpreter."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_depth as C
from crl_kernels import BLOCK_ROWS, chunk_of, fused_residual_block


def _block_params(width, key):
    """A ResidualBlock's parameters, LayerNorm's scale and bias moved off their init so that they count."""
    block = C.ResidualBlock(width, True, "swish", True)
    params = block.init(key, jnp.zeros((1, width)), None)["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _plain(x, params, activation, compute_dtype="float32"):
    block = C.ResidualBlock(x.shape[-1], True, activation, True, compute_dtype)
    return block.apply({"params": params}, x, None)[0]


def _float64_loop(x, params, activation):
    """The block in numpy float64, row by row and layer by layer."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        h = x[r]
        for i in range(4):
            z = h @ np.asarray(params[f"Dense_{i}"]["kernel"], np.float64) + np.asarray(params[f"Dense_{i}"]["bias"])
            var = max(np.mean(z * z) - np.mean(z) ** 2, 0.0)
            a = (z - np.mean(z)) / np.sqrt(var + 1e-6) * np.asarray(params[f"LayerNorm_{i}"]["scale"]) \
                + np.asarray(params[f"LayerNorm_{i}"]["bias"])
            h = a / (1 + np.exp(-a)) if activation == "swish" else np.maximum(a, 0.0)
        out[r] = h + x[r]
    return out


@pytest.mark.parametrize("activation,width", [("swish", 256), ("relu", 96)])
def test_the_fused_block_gives_the_plain_blocks_output_and_gradients(activation, width):
    """width 256: 2 x 2 tiles of 128 per layer; 96: 3 x 3 tiles of 32."""
    assert width // chunk_of(width) > 1
    rows = 2 * BLOCK_ROWS + 5  # rows not a whole number of kernel programs: padded
    key_p, key_x, key_dy = jax.random.split(jax.random.PRNGKey(0), 3)
    params = _block_params(width, key_p)
    x = jax.random.normal(key_x, (rows, width))
    fused = lambda x, p: fused_residual_block(x, p, activation, "float32")
    plain = lambda x, p: _plain(x, p, activation)
    y, vjp = jax.vjp(fused, x, params)
    y_plain, vjp_plain = jax.vjp(plain, x, params)
    np.testing.assert_allclose(y, _float64_loop(x, params, activation), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, y_plain, rtol=1e-5, atol=1e-5)
    dy = jax.random.normal(key_dy, y.shape)
    grads, grads_plain = vjp(dy), vjp_plain(dy)
    assert jax.tree.structure(grads) == jax.tree.structure(grads_plain)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        g_plain = dict(jax.tree_util.tree_leaves_with_path(grads_plain))[path]
        scale = float(jnp.max(jnp.abs(g_plain)))
        assert scale > 1e-3, path  # every gradient is there to compare
        np.testing.assert_allclose(g, g_plain, atol=2e-5 * scale, rtol=0, err_msg=jax.tree_util.keystr(path))


def _update_setup(fused, remat=False, compute_dtype="float32", depths=(8, 4)):
    # actor depth 8 and critic depth 4: the actor's trunk alone, the critic's three calls stacked into one;
    # width 48: 3 x 3 tiles of 16 per layer
    nets = C.make_networks(*depths, 48, 16, 3, remat=remat, compute_dtype=compute_dtype, fused=fused)
    opts = C.Optimizers(C.adam(3e-4), C.adam(3e-4), C.adam(3e-4))
    return nets, opts


def _batch(rows, key=jax.random.PRNGKey(1)):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"state": jax.random.normal(k1, (rows, 10)), "goal": jax.random.normal(k2, (rows, 4)),
            "action": jax.random.uniform(k3, (rows, 3), minval=-1.0, maxval=1.0)}


# bfloat16: the plain block rounds each Dense output and bias sum to bfloat16, the kernels accumulate in float32.
# seeds: 1 runs the update as --num-seeds 1 does (no seed axis; 32 rows, whole kernel programs); 2 puts two seeds on
# a leading axis as --num-seeds 2 does (the kernels under vmap; 24 rows, padded to 32 in the kernels). Without remat
# each trunk's blocks run in one kernel each way (depths 16 and 8: 4 and 2 blocks), with remat one block at a time
@pytest.mark.parametrize("remat,compute_dtype,rtol,seeds,depths", [
    (False, "float32", 1e-4, 1, (16, 8)), (False, "float32", 1e-4, 2, (8, 4)), (False, "bfloat16", 6e-2, 1, (8, 4)),
    (True, "float32", 1e-4, 2, (8, 4)), (True, "bfloat16", 6e-2, 2, (8, 4))])
def test_fused_networks_give_each_seeds_plain_sgd_gradients(remat, compute_dtype, rtol, seeds, depths):
    """Each seed's losses and gradients held to the plain networks'."""
    plain_nets, opts = _update_setup(False, remat, compute_dtype, depths)
    fused_nets, _ = _update_setup(True, remat, compute_dtype, depths)
    on_seeds = (lambda f: f) if seeds == 1 else jax.vmap
    keys, batch_keys, sample_keys = (jax.random.split(jax.random.PRNGKey(i), 2) for i in (0, 3, 2))
    if seeds == 1:
        keys, batch_keys, sample_keys = keys[0], batch_keys[0], sample_keys[0]
    agents = on_seeds(lambda k: C.agent_init(k, plain_nets, opts, 10, 4, 3))(keys)
    fused_agents = on_seeds(lambda k: C.agent_init(k, fused_nets, opts, 10, 4, 3))(keys)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(agents), jax.tree.leaves(fused_agents)))
    params = (agents.actor_params, agents.critic_params, agents.log_alpha)
    batches = on_seeds(lambda k: _batch(32 if seeds == 1 else 24, k))(batch_keys)

    def grads(nets):
        grad = jax.grad(lambda p, b, k: C.sgd_losses(p, nets, b, k, -3.0, 0.1), has_aux=True)
        out = jax.jit(on_seeds(grad))(params, batches, sample_keys)
        return out if seeds > 1 else jax.tree.map(lambda x: x[None], out)  # a seed axis of 1
    (g_plain, m_plain), (g_fused, m_fused) = grads(plain_nets), grads(fused_nets)
    for name in m_plain:
        np.testing.assert_allclose(m_fused[name], m_plain[name], rtol=rtol, atol=rtol, err_msg=name)
    plain_leaves = dict(jax.tree_util.tree_leaves_with_path(g_plain))
    for path, g in jax.tree_util.tree_leaves_with_path(g_fused):
        for seed in range(seeds):
            g_ref = plain_leaves[path][seed]
            scale = float(jnp.max(jnp.abs(g_ref)))
            np.testing.assert_allclose(g[seed], g_ref, atol=rtol * max(scale, 1e-6), rtol=0,
                                       err_msg=f"seed {seed} {jax.tree_util.keystr(path)}")


def _cuda_update_text(nets, opts, agent):
    """The SGD update on a batch of 512, lowered for a CUDA GPU (shapes only: nothing runs)."""
    update = C.make_sgd_update(nets, opts, -3.0, 0.1)
    return jax.jit(update).trace(agent, jax.eval_shape(lambda: _batch(512)), jax.random.PRNGKey(0)).lower(
        lowering_platforms=("cuda",)).as_text()


def test_the_fused_update_lowers_to_triton_kernels_for_a_cuda_gpu():
    """Pallas lowers the kernels to Triton on this CPU (what a GPU's XLA then compiles): one kernel forward and one
    backward for the actor's trunk and for the critic's stacked trunks."""
    nets, opts = _update_setup(True)
    agent = jax.eval_shape(lambda: C.agent_init(jax.random.PRNGKey(0), nets, opts, 10, 4, 3))
    assert _cuda_update_text(nets, opts, agent).count("__gpu$xla.gpu.triton") == 4
    forward_only = jax.jit(lambda p, x: nets.actor.apply(p, x)).trace(
        agent.actor_params, jax.ShapeDtypeStruct((512, 14), jnp.float32)).lower(lowering_platforms=("cuda",))
    assert forward_only.as_text().count("__gpu$xla.gpu.triton") == 1


def test_the_fused_updates_lowered_program_is_the_same_size_at_depth_64_and_1024():
    """A trunk's blocks are a loop inside its kernels whatever the depth: the same Triton calls and as many lines
    of the program lowered for a CUDA GPU at depth 64 as at depth 1024."""
    def lowered(depth):
        nets, opts = _update_setup(True, depths=(depth, depth))
        return _cuda_update_text(nets, opts, jax.eval_shape(
            lambda: C.agent_init(jax.random.PRNGKey(0), nets, opts, 10, 4, 3)))

    text64, text1024 = lowered(64), lowered(1024)
    assert text64.count("__gpu$xla.gpu.triton") == text1024.count("__gpu$xla.gpu.triton") == 4
    assert text64.count("\n") == text1024.count("\n")


def test_triton_check_reads_the_three_kernels_of_a_block():
    """tools/triton_check.py's Triton IR (it reaches into jax's Pallas lowering, an internal API): at width 48 each
    kernel holds 4 layers x 3 x 3 tile dots (once: the loop over the blocks is a loop in the kernel); the stores: y,
    the block's input and each layer's z, then dx and each layer's h, dz and LayerNorm gradient sums (4 x 4 x 3
    tiles), then y alone."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import triton_check

    kernels = triton_check.kernel_irs(48, 64, "relu", "float32", blocks=3)  # a stack of 3: the kernels' loop
    assert [ir.count("scf.for") for _, ir in kernels] == [1, 1, 1]
    assert [name for name, _ in kernels] == ["forward (keeps z)", "backward", "forward alone"]
    assert [ir.count("tt.dot ") for _, ir in kernels] == [36, 36, 36]
    assert [ir.count("tt.store") for _, ir in kernels] == [3 + 3 + 12, 3 + 4 * 12, 3]
    # the dots' operands: float32 in TF32 (XLA's default on the GPU), bfloat16 as bfloat16; both accumulate in float32
    for dtype, operands in (("float32", "tensor<16x16xf32> * tensor<16x16xf32>"),
                            ("bfloat16", "tensor<16x16xbf16> * tensor<16x16xbf16>")):
        for _, ir in triton_check.kernel_irs(48, 64, "relu", dtype, blocks=3):
            dots = [line for line in ir.splitlines() if "tt.dot " in line]
            assert len(dots) == 36 and all(operands in d and d.endswith("-> tensor<16x16xf32>") for d in dots)
            assert dtype == "bfloat16" or all("inputPrecision = tf32" in d for d in dots)


def test_estimate_counts_the_fused_blocks_flops_as_the_plain_blocks():
    """crl_estimate's FLOPs (--estimate, bench.py) count a kernel's jaxpr once per program of its grid: the fused
    block's forward and its gradient count within 10% of the plain block's (4 matmuls of 512 x 64 x 64 each way)."""
    import crl_estimate as E

    width, x = 64, jax.random.normal(jax.random.PRNGKey(0), (512, 64))
    block = C.ResidualBlock(width, True, "swish", True)
    params = block.init(jax.random.PRNGKey(1), x, None)
    plain = lambda p, x: block.apply(p, x, None)[0]
    fused = lambda p, x: fused_residual_block(x, p["params"], "swish", "float32")
    for make in (lambda f: f, lambda f: jax.grad(lambda p, x: jnp.sum(f(p, x)), argnums=(0, 1))):
        flops_plain = E.jaxpr_flops(jax.make_jaxpr(make(plain))(params, x))[0]
        flops_fused = E.jaxpr_flops(jax.make_jaxpr(make(fused))(params, x))[0]
        assert flops_plain >= 2 * 512 * width * width * 4 and abs(flops_fused / flops_plain - 1) < 0.1


def test_the_gradients_memory_per_block_is_what_the_blocks_keep():
    """The gradient program's temporary memory grows per block of depth by what the backward pass needs, and no
    more. The plain blocks keep each block's input and its 4 matmuls' outputs (5 x rows x width floats; LayerNorm
    and the activation are recomputed). The fused kernels keep each block's input and its 4 layers' pre-LayerNorm
    outputs (5) and the backward kernel writes each layer's input and the gradient of its Dense output (8) for the
    batched matmul of the kernels' gradients; the custom_vjp keeps the blocks' own parameters, not a stacked copy
    of them (4 x width x width more per block)."""
    width, rows, x = 64, 64, jnp.ones((64, 17))

    def temp_bytes(depth, fused):
        trunk = C.ResidualTrunk(depth, width, fused=fused)
        params = trunk.init(jax.random.PRNGKey(0), x)
        grad = jax.jit(jax.grad(lambda p: jnp.sum(trunk.apply(p, x) ** 2)))
        return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

    per_block = {fused: (temp_bytes(32, fused) - temp_bytes(16, fused)) / 4 for fused in (True, False)}
    plane = rows * width * 4  # bytes of one rows x width float32 array
    slack = 4 * width * 4  # XLA's buffer assignment may add or reuse a little
    assert 5 * plane - slack <= per_block[False] <= 5 * plane + slack, per_block[False] / plane
    assert 12 * plane <= per_block[True] <= 13 * plane + slack, per_block[True] / plane
