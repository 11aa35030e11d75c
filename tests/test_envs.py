"""Goal-conditioned envs: observation layout, goal slice, success, termination, auto reset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_depth as C
import crl_envs as E

EXPECTED = {  # env id: (state dim, goal slice, goal dim, action dim)
    "reacher": (10, (4, 7), 3, 2),
    "ant": (29, (0, 2), 2, 8),
    "humanoid": (268, (0, 3), 3, 17),
}


@pytest.fixture(scope="module", params=list(EXPECTED))
def env_case(request):
    env = E.make_env(request.param)
    return request.param, env, jax.jit(env.reset), jax.jit(env.step)


def test_registry_and_layout(env_case):
    env_id, env, reset, _ = env_case
    obs_dim, (gs, ge), goal_dim, act = EXPECTED[env_id]
    spec = C.ENVS[env_id]
    assert (spec.obs_dim, spec.goal_start, spec.goal_end) == (obs_dim, gs, ge)
    assert env.sys.act_size() == act
    state = reset(jax.random.PRNGKey(0))
    assert state.obs.shape == (obs_dim + goal_dim,)
    goal = np.asarray(state.info["goal"])
    np.testing.assert_allclose(np.asarray(state.obs[obs_dim:]), goal)
    # the target body (last two qpos) shows the goal's x, y
    np.testing.assert_allclose(np.asarray(state.pipeline_state.q[-2:]), goal[:2], atol=1e-6)
    np.testing.assert_allclose(float(state.metrics["dist"]), np.linalg.norm(np.asarray(state.obs[gs:ge]) - goal), rtol=1e-5)


def test_goal_slice_is_what_the_spec_says(env_case):
    env_id, env, reset, _ = env_case
    ps = reset(jax.random.PRNGKey(1)).pipeline_state
    state = np.asarray(env._state(ps, jnp.zeros(env.sys.act_size())))
    gs, ge = EXPECTED[env_id][1]
    if env_id in ("ant", "humanoid"):
        np.testing.assert_allclose(state[gs:ge], np.asarray(ps.x.pos[0, : ge - gs]), atol=1e-5)  # torso
        np.testing.assert_allclose(state[: env.sys.q_size() - (2 if env_id == "ant" else 0)],
                                   np.asarray(ps.q[: env.sys.q_size() - (2 if env_id == "ant" else 0)]))
    if env_id == "humanoid":
        np.testing.assert_allclose(state[:3], [0.0, 0.0, 1.4], atol=1e-5)  # fixed start
    if env_id == "reacher":  # tip = link 1 frame + 0.11 along its x axis; cos/sin of both joints
        q = np.asarray(ps.q)
        np.testing.assert_allclose(state[:4], [np.cos(q[0]), np.cos(q[1]), np.sin(q[0]), np.sin(q[1])], atol=1e-6)
        tip = 0.1 * np.array([np.cos(q[0]), np.sin(q[0])]) + 0.11 * np.array([np.cos(q[0] + q[1]), np.sin(q[0] + q[1])])
        np.testing.assert_allclose(state[4:6], tip, atol=1e-4)


def test_goal_sampling_ranges(env_case):
    env_id, env, _, _ = env_case
    goals = np.asarray(jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(2), 256)).info["goal"])
    r = np.linalg.norm(goals[:, :2], axis=1)
    if env_id == "ant":
        np.testing.assert_allclose(r, 10.0, rtol=1e-5)
    elif env_id == "humanoid":
        assert r.min() >= 1.0 and r.max() <= 5.0 and np.allclose(goals[:, 2], 1.25)
    else:
        assert r.max() <= 0.2 and np.allclose(goals[:, 2], 0.01)
    angles = np.arctan2(goals[:, 1], goals[:, 0])
    assert np.histogram(angles, bins=4, range=(-np.pi, np.pi))[0].min() > 30  # uniform angle


def _place(env, state, q_update):
    q = q_update(state.pipeline_state.q)
    ps = env.pipeline_init(q, jnp.zeros(env.sys.qd_size()))
    return state.replace(pipeline_state=ps)


def test_success_and_termination(env_case):
    env_id, env, reset, step = env_case
    state = reset(jax.random.PRNGKey(3))
    goal = state.info["goal"]
    zero = jnp.zeros(env.sys.act_size())
    far = step(state, zero)
    assert float(far.metrics["success"]) == 0.0 and float(far.metrics["dist"]) > env.success_radius
    if env_id == "reacher":  # point the arm at a reachable goal: both links along the goal's bearing
        goal = jnp.array([0.15, 0.1, 0.01])
        state = state.replace(info={**state.info, "goal": goal})
        at = _place(env, state, lambda q: q.at[0].set(jnp.arctan2(0.1, 0.15)).at[1].set(0.0))
        # tip at distance 0.21 on the bearing; goal at 0.18: within 0.05
        out = step(at, zero)
        assert float(out.metrics["success"]) == 1.0 and float(out.done) == 0.0
        return
    at = _place(env, state, lambda q: q.at[0].set(goal[0]).at[1].set(goal[1]))
    out = step(at, zero)
    assert float(out.metrics["success"]) == 1.0, float(out.metrics["dist"])
    assert float(out.done) == 0.0
    # termination: torso z outside the healthy range (ant [0.2, 1.0], humanoid [1.0, 2.0])
    lo, hi = (0.2, 1.0) if env_id == "ant" else (1.0, 2.0)
    for z, expected in ((lo - 0.05, 1.0), (lo + 0.05, 0.0), (hi - 0.05, 0.0), (hi + 0.05, 1.0)):
        placed = _place(env, state, lambda q: q.at[2].set(z)).pipeline_state
        assert float(env._terminated(placed)) == expected, z
    # and step reports done exactly when the state it reaches is out of range
    high = step(_place(env, state, lambda q: q.at[2].set(hi + 0.5)), zero)
    assert float(high.pipeline_state.x.pos[0, 2]) > hi and float(high.done) == 1.0


def test_auto_reset_gives_fresh_start_and_goal_and_counts_episodes():
    venv = E.VecGoalEnv(E.make_env("ant"), num_envs=3, episode_length=5)
    state = jax.jit(venv.reset)(jax.random.PRNGKey(0))
    step = jax.jit(venv.step)
    goals = [np.asarray(state.info["goal"])]
    dones = []
    for _ in range(15):
        state = step(state, jnp.zeros((3, venv.action_size)))
        dones.append(np.asarray(state.done))
        goals.append(np.asarray(state.info["goal"]))
    dones = np.array(dones)
    np.testing.assert_array_equal(dones[:, 0], [0, 0, 0, 0, 1] * 3)  # truncated every 5 steps
    np.testing.assert_array_equal(np.asarray(state.info["episode_id"]), [3, 3, 3])
    np.testing.assert_array_equal(np.asarray(state.info["steps"]), [0, 0, 0])
    # a new goal after every reset, never the first one again
    assert not np.allclose(goals[0], goals[5]) and not np.allclose(goals[5], goals[10])
    assert np.allclose(goals[1], goals[4])


def test_reacher_long_random_rollout_stays_finite():
    venv = E.VecGoalEnv(E.make_env("reacher"), num_envs=8, episode_length=1000)

    @jax.jit
    def rollout(key):
        def f(s, k):
            s = venv.step(s, jax.random.uniform(k, (8, 2), minval=-1, maxval=1))
            return s, s.obs
        return jax.lax.scan(f, venv.reset(key), jax.random.split(key, 1500))[1]

    assert np.all(np.isfinite(np.asarray(rollout(jax.random.PRNGKey(0)))))


def test_unknown_env_id_lists_valid_ones():
    with pytest.raises(ValueError, match="valid ids: reacher, ant, humanoid"):
        E.make_env("cheetah")
