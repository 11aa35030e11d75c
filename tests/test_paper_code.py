"""Held to the paper's own code, number for number, on recordings of it (tests/data/paper_code/, whose
README says how they were made): six environments stepped with the paper's actions, and two SGD steps
of the paper's update on given parameters, batch and actor noise."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import State

import crl_depth as C
import crl_envs as E

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "paper_code")
RECORDED_ENVS = ("humanoid", "humanoid_u_maze", "humanoid_big_maze", "ant", "ant_u4_maze", "ant_big_maze")
# max |q ours - q paper| at a step, seen on a 2-core AMD EPYC: at most 8.3e-5 (humanoid mazes, step 1), except
# the humanoid's step 11, 2.5e-4, back to 5.4e-6 at step 12 (the rescaled actions; clipped ones: 3e-2 at step 1)
Q_TOL = 1e-4  # at all steps but one of each env
Q_TOL_ANY = 5e-4  # at every step


def load(name: str) -> dict:
    with np.load(os.path.join(DATA, name)) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module", params=RECORDED_ENVS)
def replayed(request):
    """Our env started from the recorded q[0], qd[0] and goal, then stepped with the recorded actions through
    its own step (action to control, physics, observation), all 50 steps in one jitted scan."""
    env_id = request.param
    rec, env = load(f"paper_{env_id}.npz"), E.make_env(env_id)
    goal = jnp.asarray(rec["obs"][0, env.obs_dim:])
    ps = env.pipeline_init(jnp.asarray(rec["q"][0]), jnp.asarray(rec["qd"][0]))
    zero = jnp.zeros(())
    state = State(ps, jnp.asarray(rec["obs"][0]), zero, zero, {"dist": zero, "success": zero}, {"goal": goal})

    @jax.jit
    def rollout(state, actions):
        def f(s, a):
            s = env.step(s, a)
            return s, (s.pipeline_state.q, s.pipeline_state.qd, s.obs)
        return jax.lax.scan(f, state, actions)[1]

    q, qd, obs = (np.asarray(x) for x in rollout(state, jnp.asarray(rec["actions"])))
    return env_id, env, rec, q, qd, obs


def test_env_steps_as_the_paper_code(replayed):
    """All 50 steps: positions within Q_TOL of the paper's (one step of each env within Q_TOL_ANY), velocities
    and the control step too."""
    env_id, env, rec, q, qd, _ = replayed
    np.testing.assert_allclose(env.dt, rec["dt"], rtol=1e-6)
    err = np.max(np.abs(q - rec["q"][1:]), axis=1)
    msg = f"{env_id}: max |q ours - q paper| per step {np.array2string(err, precision=2)}"
    assert np.all(err <= Q_TOL_ANY) and np.sum(err > Q_TOL) <= 1, msg
    # velocities: a larger scale (up to ~10 m/s after the humanoid's fall), the same relative agreement
    qd_err = np.max(np.abs(qd - rec["qd"][1:]), axis=1) / (1.0 + np.max(np.abs(rec["qd"][1:]), axis=1))
    assert np.all(qd_err <= 1e-2), f"{env_id}: qd off by {np.array2string(qd_err, precision=2)} (relative)"


def test_env_observations_as_the_paper_code(replayed):
    """The observation layouts are the same (state, then goal): ant and its mazes obs = q and qd without the
    target's slide joints, then the goal x, y; humanoid and its mazes obs = q, qd, the centre-of-mass inertia
    and velocity terms and the actuator forces, then the goal x, y, z. The positional part (q) and the goal
    are held to Q_TOL_ANY; the rest, velocities and the quantities built from them, to 1% of its scale."""
    env_id, env, rec, _, _, obs = replayed
    paper = rec["obs"][1:]
    assert obs.shape == paper.shape
    nq = env.sys.q_size() - (2 if env_id.startswith("ant") else 0)
    pos = np.r_[0:nq, env.obs_dim:obs.shape[1]]
    assert np.max(np.abs(obs[:, pos] - paper[:, pos])) <= Q_TOL_ANY
    rest = np.r_[nq:env.obs_dim]
    scale = 1.0 + np.max(np.abs(paper[:, rest]), axis=0)
    assert np.max(np.abs(obs[:, rest] - paper[:, rest]) / scale) <= 1e-2


@pytest.mark.parametrize("env_id", ["humanoid", "humanoid_u_maze", "humanoid_big_maze", "reacher", "ant",
                                    "ant_u4_maze"])
def test_action_to_control_end_points(env_id):
    """Actions -1, 0, 1 give each actuator's control minimum, midpoint and maximum: the humanoids map [-1, 1]
    linearly onto [-0.4, 0.4] (as the paper's humanoid envs), reacher and ant have ranges [-1, 1]."""
    env = E.make_env(env_id)
    lo, hi = (np.asarray(env.sys.actuator.ctrl_range[:, i]) for i in (0, 1))
    n = env.sys.act_size()
    if env_id.startswith("humanoid"):
        want_lo, want_hi = -0.4, 0.4
    else:
        want_lo, want_hi = -1.0, 1.0
    np.testing.assert_allclose(lo, want_lo, rtol=1e-6)
    np.testing.assert_allclose(hi, want_hi, rtol=1e-6)
    for action, want in ((-1.0, lo), (0.0, (lo + hi) / 2), (1.0, hi)):
        np.testing.assert_allclose(np.asarray(env._ctrl(jnp.full(n, action))), want, atol=1e-7)
    a = np.linspace(-1, 1, n).astype(np.float32)  # and linear in between
    np.testing.assert_allclose(np.asarray(env._ctrl(jnp.asarray(a))), lo + (a + 1) * 0.5 * (hi - lo), atol=1e-7)


# --- the update ------------------------------------------------------------------------------------
# What the paper's float64 update computed against ours in float32 (the same parameters and noise), as the
# largest absolute difference seen over both depths and both steps, and the tolerance held here.
TOL = {"fwd": 5e-6,      # seen 2.3e-6: actor mean / log-std, phi and psi representations
       "loss": 2e-6,     # seen 7e-7: actor, alpha and critic losses, mean logsumexp
       "log_prob": 2e-5,  # seen 6e-6
       "grad": 1e-5,     # seen 4.7e-6
       "param": 5e-7}    # seen 1.1e-7: every parameter after the step
PAPER_PREFIX = {"actor": "actor/params/", "phi": "critic/sa_encoder/params/", "psi": "critic/g_encoder/params/"}


def paper_key(net: str, path: tuple, blocks: int) -> list[str]:
    """The paper's names for one of our leaves (a list: our scanned block leaves stack one per block).
    Paper: Dense_0 / LayerNorm_0 the input layer, Dense_{1+4b+l} / LayerNorm_{1+4b+l} layer l of block b, then
    the heads (actor: Dense_{1+4B} mean, Dense_{2+4B} log-std; encoder: Dense_{1+4B})."""
    *mods, leaf = path
    if mods[0] == "trunk" and mods[1] != "blocks":
        names = [mods[1]]
    elif mods[0] == "trunk":
        kind, layer = mods[2].rsplit("_", 1)
        names = [f"{kind}_{1 + 4 * b + int(layer)}" for b in range(blocks)]
    else:
        names = [f"Dense_{(2 if mods[0] == 'log_std' else 1) + 4 * blocks}"]
    return [PAPER_PREFIX[net] + n + "/" + leaf for n in names]


def nets_tree(agent_like) -> dict:
    return {"actor": agent_like[0], "phi": agent_like[1]["phi"], "psi": agent_like[1]["psi"]}


def from_paper(rec: dict, prefix: str, template: dict, blocks: int) -> dict:
    def one(net):
        def leaf(path, x):
            keys = [k.key for k in path]
            vals = [rec[prefix + k] for k in paper_key(net, keys[1:], blocks)]
            v = np.stack(vals) if len(vals) > 1 or keys[2:3] == ["blocks"] else vals[0]
            assert v.shape == x.shape, (keys, v.shape, x.shape)
            return jnp.asarray(v, jnp.float32)
        return jax.tree_util.tree_map_with_path(leaf, template[net])
    return {net: one(net) for net in template}


def max_diff(ours: dict, rec: dict, prefix: str, blocks: int) -> float:
    worst = 0.0
    for net, tree in ours.items():
        for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
            keys = [k.key for k in path]
            want = np.stack([rec[prefix + k] for k in paper_key(net, keys[1:], blocks)])
            worst = max(worst, float(np.max(np.abs(np.asarray(x).reshape(want.shape) - want))))
    return worst


@pytest.mark.parametrize("depth", [4, 8])
def test_update_as_the_paper_code(depth, monkeypatch):
    """Two SGD steps (Adam state carried) of make_sgd_update against the paper's update functions in float64:
    forward outputs, losses, log-probs, every gradient and every updated parameter. The actor's one normal draw
    is the recorded noise (u = mean + std * noise)."""
    rec, batch_np = load(f"update/paper_depth{depth}_f64.npz"), load("update/batch.npz")
    batch = {k: jnp.asarray(batch_np[k], jnp.float32) for k in ("state", "action", "goal")}
    noise = jnp.asarray(batch_np["noise"], jnp.float32)
    monkeypatch.setattr(jax.random, "normal", lambda key, shape, *a, **kw: noise.reshape(shape))
    blocks, action_size, obs_dim, goal_dim = depth // 4, 8, 29, 2
    nets = C.make_networks(depth, depth, 32, 64, action_size)
    opts = C.Optimizers(C.adam(3e-4), C.adam(3e-4), C.adam(3e-4))
    template = C.agent_init(jax.random.PRNGKey(0), nets, opts, obs_dim, goal_dim, action_size)
    params = from_paper(rec, "init/", nets_tree((template.actor_params, template.critic_params)), blocks)
    counts = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
    assert (counts["actor"], counts["phi"] + counts["psi"]) == (int(rec["count/actor"]), int(rec["count/critic"]))
    critic = {"phi": params["phi"], "psi": params["psi"]}
    log_alpha = jnp.asarray(rec["init/alpha/log_alpha"], jnp.float32)
    agent = C.Agent(params["actor"], critic, log_alpha, opts.actor.init(params["actor"]), opts.critic.init(critic),
                    opts.alpha.init(log_alpha))

    mean, log_std = nets.actor.apply(agent.actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
    sa = nets.phi.apply(critic["phi"], jnp.concatenate([batch["state"], batch["action"]], -1))
    g = nets.psi.apply(critic["psi"], batch["goal"])
    for ours, key in ((mean, "actor_mean"), (log_std, "actor_log_std"), (sa, "sa_repr"), (g, "g_repr")):
        assert np.max(np.abs(np.asarray(ours) - rec[f"fwd/{key}"])) <= TOL["fwd"], key

    target_entropy, penalty = -0.5 * action_size, 0.1
    update = jax.jit(C.make_sgd_update(nets, opts, target_entropy, penalty))
    key = jax.random.PRNGKey(0)  # unused by the patched draw

    @jax.jit
    def grads(agent):  # the gradients the update takes (one backward pass), at the agent's parameters
        (g_actor, g_critic, g_alpha), _ = jax.grad(C.sgd_losses, has_aux=True)(
            (agent.actor_params, agent.critic_params, agent.log_alpha), nets, batch, key, target_entropy, penalty)
        mean, log_std = nets.actor.apply(agent.actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
        return g_actor, g_alpha, g_critic, C.sample_tanh_gaussian(key, mean, log_std)[1]
    for step in (1, 2):
        s = f"step{step}/"
        g_actor, g_alpha, g_critic, log_prob = grads(agent)
        assert np.max(np.abs(np.asarray(log_prob) - rec[s + "log_prob"])) <= TOL["log_prob"]
        assert max_diff(nets_tree((g_actor, g_critic)), rec, s + "grad/", blocks) <= TOL["grad"]
        assert abs(float(g_alpha) - rec[s + "grad/alpha/log_alpha"]) <= TOL["grad"]

        agent, m = update(agent, batch, key)
        for ours, paper in (("losses/actor", "loss/actor"), ("losses/alpha", "loss/alpha"),
                            ("losses/critic", "loss/critic"), ("critic/logsumexp", "logsumexp_mean")):
            assert abs(float(m[ours]) - rec[s + paper]) <= TOL["loss"], (step, ours, float(m[ours]), rec[s + paper])
        assert max_diff(nets_tree((agent.actor_params, agent.critic_params)), rec, s + "new/", blocks) <= TOL["param"]
        assert abs(float(agent.log_alpha) - rec[s + "new/alpha/log_alpha"]) <= TOL["param"]
