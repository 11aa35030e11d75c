"""Losses against plain float64 Python/numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import crl_depth as C


def _rand(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_l2_energy_matrix_matches_loop():
    x, y = _rand(0, 5, 3), _rand(1, 5, 3)
    got = np.asarray(C.l2_energy_matrix(jnp.asarray(x), jnp.asarray(y)))
    ref = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            ref[i, j] = -math.sqrt(sum((float(x[i, d]) - float(y[j, d])) ** 2 for d in range(3)))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(C.l2_energy_pairs(jnp.asarray(x), jnp.asarray(y))), np.diag(ref),
                               rtol=1e-5, atol=1e-5)


def test_energy_gradient_finite_when_representations_coincide():
    x = jnp.ones((4, 3))
    grad = jax.grad(lambda a: jnp.sum(C.l2_energy_matrix(a, x)))(x)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_infonce_matches_loop():
    logits = _rand(2, 6, 6) * 3
    loss, m = C.infonce_loss(jnp.asarray(logits), 0.1)
    lg = logits.astype(np.float64)
    n = lg.shape[0]
    terms, lses, correct = [], [], 0
    for i in range(n):
        lse = math.log(sum(math.exp(lg[i, j]) for j in range(n)))
        lses.append(lse)
        terms.append(-lg[i, i] + lse)
        correct += int(max(range(n), key=lambda j: lg[i, j]) == i)
    ref = sum(terms) / n + 0.1 * sum(v * v for v in lses) / n
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    np.testing.assert_allclose(float(m["critic/logsumexp"]), sum(lses) / n, rtol=1e-5)
    np.testing.assert_allclose(float(m["critic/categorical_accuracy"]), correct / n)
    np.testing.assert_allclose(float(m["critic/logits_pos"]), np.trace(lg) / n, rtol=1e-5)
    off = (lg.sum() - np.trace(lg)) / (n * (n - 1))
    np.testing.assert_allclose(float(m["critic/logits_neg"]), off, rtol=1e-5, atol=1e-6)


def test_infonce_penalty_zero_is_plain_cross_entropy():
    logits = jnp.asarray(_rand(3, 4, 4))
    loss, _ = C.infonce_loss(logits, 0.0)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(4)).mean()
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)


# scale 12: means far beyond tanh's range, saturated actions, where the exact form log(1 - tanh(u)^2)
# would differ from the paper's by ~2|u| - 14 (tens) per dimension
@pytest.mark.parametrize("scale,atol", [(1.0, 1e-4), (12.0, 1e-4)])
def test_tanh_gaussian_log_prob_matches_reference(scale, atol):
    """The paper's form of the tanh correction, log(1 - tanh(u)^2 + 1e-6), against a float64 loop."""
    key = jax.random.PRNGKey(0)
    mean, log_std = scale * _rand(4, 7, 3), np.clip(_rand(5, 7, 3), -5, 2)
    action, log_prob = C.sample_tanh_gaussian(key, jnp.asarray(mean), jnp.asarray(log_std))
    eps = np.asarray(jax.random.normal(key, mean.shape), np.float64)
    u = mean.astype(np.float64) + np.exp(log_std.astype(np.float64)) * eps
    ref = np.zeros(7)
    for i in range(7):
        for d in range(3):
            std = math.exp(float(log_std[i, d]))
            normal = -0.5 * ((u[i, d] - mean[i, d]) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
            ref[i] += normal - math.log(1 - math.tanh(u[i, d]) ** 2 + 1e-6)
    np.testing.assert_allclose(np.asarray(action), np.tanh(u), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(log_prob), ref, rtol=1e-4, atol=atol)
    if scale > 1:  # many dimensions saturated: each of their corrections at its floor, log(1e-6)
        assert np.mean(np.abs(u) > 9) > 0.3


def _tiny_setup(seed=0):
    nets = C.make_networks(4, 4, 16, 8, action_size=2)
    opts = C.Optimizers(C.adam(1e-3), C.adam(1e-3), C.adam(1e-3))
    agent = jax.jit(lambda key: C.agent_init(key, nets, opts, obs_dim=5, goal_dim=2, action_size=2))(
        jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    batch = {"state": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
             "action": jnp.asarray(rng.uniform(-1, 1, size=(8, 2)), jnp.float32),
             "goal": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}
    return nets, opts, agent, batch


def test_actor_and_alpha_losses_match_reference():
    nets, _, agent, batch = _tiny_setup()
    key = jax.random.PRNGKey(3)
    log_alpha = jnp.asarray(-0.7)

    @jax.jit
    def pieces(actor_params, critic_params):
        mean, log_std = nets.actor.apply(actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
        action, log_prob = C.sample_tanh_gaussian(key, mean, log_std)
        phi = nets.phi.apply(critic_params["phi"], jnp.concatenate([batch["state"], action], -1))
        return action, log_prob, phi, nets.psi.apply(critic_params["psi"], batch["goal"])

    action, log_prob, phi, psi = pieces(agent.actor_params, agent.critic_params)
    loss, m = C.actor_loss_fn(log_alpha, log_prob, phi, psi, action, batch["action"], bc_coef=0.5)
    phi, psi = np.asarray(phi, np.float64), np.asarray(psi, np.float64)
    a, lp, data_a = np.asarray(action, np.float64), np.asarray(log_prob, np.float64), np.asarray(batch["action"], np.float64)
    alpha = math.exp(-0.7)
    terms = [alpha * lp[i] + math.sqrt(sum((phi[i, d] - psi[i, d]) ** 2 for d in range(8))) for i in range(8)]
    bc = sum(sum((a[i, d] - data_a[i, d]) ** 2 for d in range(2)) for i in range(8)) / 8
    np.testing.assert_allclose(float(loss), sum(terms) / 8 + 0.5 * bc, rtol=1e-4)
    np.testing.assert_allclose(float(m["actor/bc_mse"]), bc, rtol=1e-4)
    target_entropy = -1.0
    alpha_loss = C.alpha_loss_fn(log_alpha, log_prob, target_entropy)
    np.testing.assert_allclose(float(alpha_loss), alpha * np.mean(-lp - target_entropy), rtol=1e-4)
    # alpha rises when entropy (-log_prob) is below target: gradient of the loss w.r.t. log_alpha
    g = jax.grad(C.alpha_loss_fn)(log_alpha, log_prob, target_entropy)
    np.testing.assert_allclose(float(g), alpha * np.mean(-lp - target_entropy), rtol=1e-4)


def _separate_gradients(nets, agent, batch, key, target_entropy, penalty, bc_coef):
    """The plain reference of the update's gradients: each loss differentiated on its own, every network
    applied on its own (psi(g) twice), the actor loss w.r.t. the actor alone at the step's critic and alpha."""
    def forward(actor_params):
        mean, log_std = nets.actor.apply(actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
        return C.sample_tanh_gaussian(key, mean, log_std)

    def actor_loss(actor_params):
        action, log_prob = forward(actor_params)
        sa = nets.phi.apply(agent.critic_params["phi"], jnp.concatenate([batch["state"], action], -1))
        g = nets.psi.apply(agent.critic_params["psi"], batch["goal"])
        return C.actor_loss_fn(agent.log_alpha, log_prob, sa, g, action, batch["action"], bc_coef)[0]

    def critic_loss(critic_params):
        sa = nets.phi.apply(critic_params["phi"], jnp.concatenate([batch["state"], batch["action"]], -1))
        return C.critic_loss_fn(sa, nets.psi.apply(critic_params["psi"], batch["goal"]), penalty)[0]

    log_prob = forward(agent.actor_params)[1]
    return (jax.grad(actor_loss)(agent.actor_params), jax.grad(critic_loss)(agent.critic_params),
            jax.grad(C.alpha_loss_fn)(agent.log_alpha, log_prob, target_entropy))


@pytest.mark.parametrize("psi_shape", ["as phi", "other width"])
def test_one_backward_pass_gives_each_loss_its_own_gradient(psi_shape):
    """The update's summed losses with their stop-gradients (one backward pass; phi and psi stacked where they
    share a shape) give the gradients of the three losses differentiated separately, in float64; a psi of another
    width (a fork's) runs unstacked and gives them too."""
    jax.config.update("jax_enable_x64", True)
    try:
        nets, opts, agent, batch = _tiny_setup()
        if psi_shape == "other width":
            nets = nets._replace(psi=nets.psi.clone(trunk=nets.psi.trunk.clone(width=24)))
            agent = C.agent_init(jax.random.PRNGKey(0), nets, opts, obs_dim=5, goal_dim=2, action_size=2)
        f64 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, tree)
        agent, batch, key = f64(agent), f64(batch), jax.random.PRNGKey(5)
        grads, _ = jax.jit(jax.grad(C.sgd_losses, has_aux=True), static_argnums=(1, 4, 5, 6))(
            (agent.actor_params, agent.critic_params, agent.log_alpha), nets, batch, key, -1.0, 0.1, 0.3)
        want = jax.jit(_separate_gradients, static_argnums=(0, 4, 5, 6))(nets, agent, batch, key, -1.0, 0.1, 0.3)
        for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6)
        assert len(jax.tree.leaves(grads)) == len(jax.tree.leaves(want)) > 20
        assert any(float(jnp.max(jnp.abs(g))) > 1e-3 for g in jax.tree.leaves(grads[1]["psi"]))
    finally:
        jax.config.update("jax_enable_x64", False)


def test_stacked_apply_equals_separate_applies():
    """phi on two inputs and psi on a narrower one as one vmapped apply: each output as its own apply's."""
    nets, _, agent, batch = _tiny_setup()
    phi, psi = agent.critic_params["phi"], agent.critic_params["psi"]
    sa = jnp.concatenate([batch["state"], batch["action"]], -1)
    calls = [(nets.phi, phi, sa), (nets.psi, psi, batch["goal"]), (nets.phi, phi, sa[::-1])]
    stacked = jax.jit(lambda phi, psi: C.apply_stacked([(m, {"phi": phi, "psi": psi}[k], x) for (m, _, x), k in zip(
        calls, ("phi", "psi", "phi"))]))
    got, hlo = stacked(phi, psi), stacked.lower(phi, psi).as_text()
    assert hlo.count("stablehlo.while") == 1  # one loop over the blocks for all three
    for out, (m, p, x) in zip(got, calls):
        np.testing.assert_allclose(np.asarray(out), np.asarray(m.apply(p, x)), rtol=1e-5, atol=1e-6)


def test_sgd_update_actor_uses_pre_update_critic_and_all_params_move():
    """Actor and alpha update first, on the critic as it was before this step's critic update."""
    nets, opts, agent, batch = _tiny_setup()
    update = C.make_sgd_update(nets, opts, target_entropy=-1.0, logsumexp_penalty=0.1)
    key = jax.random.PRNGKey(7)
    new, metrics = jax.jit(update)(agent, batch, key)
    actor_grads = jax.jit(_separate_gradients, static_argnums=(0, 4, 5, 6))(nets, agent, batch, key, -1.0, 0.1, 0.0)[0]
    updates, _ = opts.actor.update(actor_grads, agent.actor_opt, agent.actor_params)
    expected_actor = optax.apply_updates(agent.actor_params, updates)
    for a, b in zip(jax.tree.leaves(new.actor_params), jax.tree.leaves(expected_actor)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for before, after in ((agent.actor_params, new.actor_params), (agent.critic_params, new.critic_params)):
        assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    assert float(new.log_alpha) != float(agent.log_alpha)
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_critic_training_separates_positives_from_negatives():
    """A few hundred critic steps on fixed data raise the categorical accuracy well above chance."""
    nets, opts, agent, batch = _tiny_setup(1)
    update = jax.jit(C.make_sgd_update(nets, opts, target_entropy=-1.0, logsumexp_penalty=0.1))
    key = jax.random.PRNGKey(0)
    for i in range(300):
        agent, metrics = update(agent, batch, jax.random.fold_in(key, i))
    assert float(metrics["critic/categorical_accuracy"]) > 0.9
    assert float(metrics["critic/logits_pos"]) > float(metrics["critic/logits_neg"])


def test_adam_on_raveled_parameters_is_adam_per_array():
    """The scripts' optimiser (optax.adam on a parameter set raveled into one vector) against Adam written out
    for each array in float64 (b1 0.9, b2 0.999, eps 1e-8, bias-corrected): three steps on a stack of kernels, a
    bias and a scalar, each array moved by its own gradient alone."""
    params = {"blocks": {"kernel": _rand(0, 3, 4, 5), "bias": _rand(1, 3, 5)}, "log_alpha": np.float32(0.3)}
    grads = [jax.tree.map(lambda x, i=i: np.asarray(_rand(10 + i, *np.shape(x)) * (i + 1), np.float32), params)
             for i in range(3)]
    lr, opt = 1e-2, C.adam(1e-2)
    state, got = opt.init(params), params
    for g in grads:
        updates, state = jax.jit(opt.update)(g, state, got)
        got = optax.apply_updates(got, updates)
    for k, (x, ours) in enumerate(zip(jax.tree.leaves(params), jax.tree.leaves(got))):
        p, m, v = np.float64(x), 0.0, 0.0
        for t, g in enumerate(grads, 1):
            gk = np.float64(jax.tree.leaves(g)[k])
            m, v = 0.9 * m + 0.1 * gk, 0.999 * v + 0.001 * gk**2
            p = p - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        ours = np.asarray(ours)
        assert ours.shape == np.shape(x) and ours.dtype == np.float32, k
        np.testing.assert_allclose(ours, p, rtol=1e-6, atol=1e-7, err_msg=str(k))
        assert np.all(ours != x), k
