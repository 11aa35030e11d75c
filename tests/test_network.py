"""The residual network: structure, values against an unrolled float64 reference, graph size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_depth as C


def _init(module, in_dim, seed=0):
    return jax.jit(module.init)(jax.random.PRNGKey(seed), jnp.zeros((1, in_dim)))


def _randomise(params, seed):
    """Non-trivial LayerNorm scales/biases and Dense biases, so the reference checks their use."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [x + 0.1 * rng.normal(size=x.shape).astype(np.float32) for x in leaves])


def _reference_trunk(p, x, depth, layer_norm, activation, residual):
    """Plain numpy float64 forward pass with the layers unrolled in a Python loop."""
    act = (lambda h: h / (1 + np.exp(-h))) if activation == "swish" else (lambda h: np.maximum(h, 0))
    f64 = lambda a: np.asarray(a, np.float64)

    def ln(h, q):
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mu) / np.sqrt(var + 1e-6) * f64(q["scale"]) + f64(q["bias"])

    h = x @ f64(p["Dense_0"]["kernel"]) + f64(p["Dense_0"]["bias"])
    h = act(ln(h, p["LayerNorm_0"]) if layer_norm else h)
    blocks = p["blocks"]
    for b in range(depth // 4):
        z = h
        for layer in range(4):
            z = z @ f64(blocks[f"Dense_{layer}"]["kernel"][b]) + f64(blocks[f"Dense_{layer}"]["bias"][b])
            if layer_norm:
                z = ln(z, {k: v[b] for k, v in blocks[f"LayerNorm_{layer}"].items()})
            z = act(z)
        h = z + h if residual else z
    return h


@pytest.mark.parametrize("depth", [4, 8, 16])
@pytest.mark.parametrize("layer_norm,activation,residual",
                         [(True, "swish", True), (False, "swish", True), (True, "relu", True), (True, "swish", False)])
def test_encoder_matches_unrolled_reference(depth, layer_norm, activation, residual):
    trunk = C.ResidualTrunk(depth, 16, layer_norm, activation, residual)
    enc = C.Encoder(trunk, 5)
    params = _randomise(_init(enc, 7), depth)
    x = np.random.default_rng(1).normal(size=(3, 7)).astype(np.float32)
    got = np.asarray(jax.jit(enc.apply)(params, jnp.asarray(x)))
    p = params["params"]
    ref = _reference_trunk(p["trunk"], x.astype(np.float64), depth, layer_norm, activation, residual)
    ref = ref @ np.asarray(p["Dense_0"]["kernel"], np.float64) + np.asarray(p["Dense_0"]["bias"], np.float64)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("depth", [4, 8, 64])
def test_layer_count_and_shapes(depth):
    width = 8
    params = _init(C.Encoder(C.ResidualTrunk(depth, width), 3), 5)["params"]
    trunk = params["trunk"]
    blocks = trunk["blocks"]
    dense_in_blocks = sorted(k for k in blocks if k.startswith("Dense"))
    assert dense_in_blocks == [f"Dense_{i}" for i in range(4)]
    for name in dense_in_blocks:
        assert blocks[name]["kernel"].shape == (depth // 4, width, width)
    # depth Dense layers in the blocks + the input layer + the output head
    total_dense = sum(blocks[n]["kernel"].shape[0] for n in dense_in_blocks) + 1 + 1
    assert total_dense == depth + 2
    assert trunk["Dense_0"]["kernel"].shape == (5, width)
    assert params["Dense_0"]["kernel"].shape == (width, 3)
    assert len([k for k in blocks if k.startswith("LayerNorm")]) == 4


def test_no_layer_norm_has_no_layer_norm_params():
    params = _init(C.Encoder(C.ResidualTrunk(8, 8, layer_norm=False), 3), 5)["params"]
    names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert not any("LayerNorm" in n for n in names)


def test_residual_skip_is_after_each_block():
    """Zeroed block kernels make each block output act(LN(0)) = 0: with the skip the trunk returns the
    input layer's output unchanged; without it, zeros."""
    for residual in (True, False):
        trunk = C.ResidualTrunk(8, 8, residual=residual)
        params = _randomise(_init(trunk, 4), 0)
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.zeros_like(x) if "blocks" in jax.tree_util.keystr(path) and "Dense" in jax.tree_util.keystr(path) else x,
            params)
        # with zero LayerNorm bias too, every block output is exactly swish(0) = 0
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.zeros_like(x) if "blocks" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path) else x,
            params)
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4)), jnp.float32)
        out = np.asarray(jax.jit(trunk.apply)(params, x))
        p = params["params"]
        first = _reference_trunk(p, np.asarray(x, np.float64), 0, True, "swish", True)
        np.testing.assert_allclose(out, first if residual else np.zeros_like(first), atol=1e-5)


def test_init_is_variance_scaling_third_fan_in_uniform_with_zero_bias():
    params = _init(C.Encoder(C.ResidualTrunk(8, 64), 16), 32)["params"]
    k = np.asarray(params["trunk"]["blocks"]["Dense_1"]["kernel"])
    limit = np.sqrt(3 * (1 / 3) / 64)  # uniform(-limit, limit), variance scale / fan_in
    assert np.abs(k).max() <= limit + 1e-7 and np.abs(k).max() > 0.9 * limit
    np.testing.assert_allclose(k.var(), limit**2 / 3, rtol=0.1)
    assert not np.any(np.asarray(params["trunk"]["blocks"]["Dense_1"]["bias"]))
    # every block draws its own weights
    assert not np.allclose(k[0], k[1])


def test_actor_heads_and_log_std_range():
    actor = C.Actor(C.ResidualTrunk(4, 16), 3)
    params = _randomise(_init(actor, 6), 1)
    params = jax.tree.map(lambda x: 50 * x, params)  # push log-std to its bounds
    mean, log_std = jax.jit(actor.apply)(params, jnp.asarray(np.random.default_rng(0).normal(size=(64, 6)), jnp.float32))
    assert mean.shape == log_std.shape == (64, 3)
    assert float(log_std.min()) >= -5.0 and float(log_std.max()) <= 2.0
    assert float(log_std.min()) < -4.0 and float(log_std.max()) > 1.0


def test_depth_flags_set_actor_and_critic_separately():
    nets = C.make_networks(actor_depth=8, critic_depth=16, width=8, repr_dim=4, action_size=2)
    assert nets.actor.trunk.depth == 8 and nets.phi.trunk.depth == 16 and nets.psi.trunk.depth == 16


def _loss_hlo_size(depth, remat=False):
    nets = C.make_networks(depth, depth, 16, 8, action_size=2, remat=remat)
    params = jax.eval_shape(lambda: nets.phi.init(jax.random.PRNGKey(0), jnp.zeros((1, 6))))

    def loss(p, x):
        return jnp.sum(nets.phi.apply(p, x) ** 2)

    lowered = jax.jit(jax.grad(loss)).lower(params, jax.ShapeDtypeStruct((4, 6), jnp.float32))
    jaxpr = jax.make_jaxpr(jax.grad(loss))(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params), jnp.zeros((4, 6)))
    return len(lowered.as_text()), len(jaxpr.eqns)


def test_graph_size_independent_of_depth():
    """Structural: a depth-1024 network's forward+backward graph is no larger than depth 16's (the block scan
    runs 2 blocks a trip from depth 8 on; depth 8's 2 blocks are one trip, which XLA's loop may drop)."""
    for remat in (False, True):
        hlo16, eqns16 = _loss_hlo_size(16, remat)
        hlo1024, eqns1024 = _loss_hlo_size(1024, remat)
        assert eqns1024 == eqns16
        assert hlo1024 <= 1.05 * hlo16, (hlo16, hlo1024)


def test_remat_same_values_and_gradients():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6)), jnp.float32)
    outs = []
    for remat in (False, True):
        enc = C.Encoder(C.ResidualTrunk(8, 16, remat=remat), 4)
        params = _init(enc, 6, seed=3)
        grads = jax.jit(jax.grad(lambda p: jnp.sum(enc.apply(p, x) ** 2)))(params)
        outs.append((jax.jit(enc.apply)(params, x), grads))
    np.testing.assert_allclose(np.asarray(outs[0][0]), np.asarray(outs[1][0]), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(outs[0][1]), jax.tree.leaves(outs[1][1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    enc = C.Encoder(C.ResidualTrunk(8, 16, remat=True), 4)
    params = _init(enc, 6)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(enc.apply(p, x))))(params))
    assert "remat" in jaxpr or "checkpoint" in jaxpr
