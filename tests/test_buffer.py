"""Replay buffer: circular insert, relabelling from the strict future of the same episode only,
P(k) proportional to gamma^k, and batches made only of relabelled transitions."""

import jax
import jax.numpy as jnp
import numpy as np

import crl_depth as C


def _fill(num_envs, max_size, steps, episode_len_fn, chunk=7):
    """Inserts `steps` steps per env in chunks; state = (env, global step t, episode id, t again)."""
    buf = C.buffer_init(max_size, num_envs, obs_dim=4, action_size=1)
    t_all = np.arange(steps)
    eid = np.stack([episode_len_fn(e, t_all) for e in range(num_envs)], axis=1)  # [steps, envs]
    for s in range(0, steps, chunk):
        t = t_all[s : s + chunk]
        state = np.stack([np.broadcast_to(np.arange(num_envs), (len(t), num_envs)),
                          np.broadcast_to(t[:, None], (len(t), num_envs)),
                          eid[s : s + chunk], np.broadcast_to(t[:, None], (len(t), num_envs))], -1)
        action = state[..., 1:2] * 10.0
        buf = C.buffer_insert(buf, jnp.asarray(state, jnp.float32), jnp.asarray(action, jnp.float32),
                              jnp.asarray(eid[s : s + chunk], jnp.int32))
    return buf, eid


def test_circular_insert_keeps_latest_in_order():
    buf, _ = _fill(num_envs=3, max_size=20, steps=53, episode_len_fn=lambda e, t: t // 5)
    assert int(buf.size) == 20
    oldest = (int(buf.ptr) - int(buf.size)) % 20
    rows = (oldest + np.arange(20)) % 20
    t_stored = np.asarray(buf.state)[rows, 0, 1]
    np.testing.assert_array_equal(t_stored, np.arange(33, 53))
    np.testing.assert_array_equal(np.asarray(buf.action)[rows, 1, 0], np.arange(33, 53) * 10.0)


def test_relabelled_goals_come_from_strict_future_of_same_episode():
    # episodes of varying lengths per env, buffer wrapped around several times
    lens = lambda e, t: (t // (3 + 4 * e)).astype(np.int32)
    buf, _ = _fill(num_envs=4, max_size=64, steps=150, episode_len_fn=lens)
    window = 30
    for i in range(20):
        d = C.buffer_sample(buf, jax.random.PRNGKey(i), window, gamma=0.9, goal_start=0, goal_end=4)
        state, goal, valid, k = (np.asarray(d[n]) for n in ("state", "goal", "valid", "k"))
        assert state.shape == (4 * window, 4) and goal.shape == (4 * window, 4)
        v = valid.astype(bool)
        assert v.sum() > 0
        assert np.all(goal[v, 0] == state[v, 0])  # same env
        assert np.all(goal[v, 2] == state[v, 2])  # same episode
        assert np.all(goal[v, 1] > state[v, 1])  # strictly future
        np.testing.assert_array_equal(goal[v, 1] - state[v, 1], k[v])
        assert np.all(goal[v, 1] - state[v, 1] < window)  # inside the sampled window
        # windows are consecutive stored steps of one env, all inside the buffer's 64 latest
        assert np.all(state[:, 1] >= 150 - 64)
        per_env = state[:, 1].reshape(4, window)
        assert np.all(np.diff(per_env, axis=1) == 1)
        # invalid exactly where no later step of the same episode is in the window
        ids = state[:, 2].reshape(4, window)
        has_future = np.zeros_like(ids, dtype=bool)
        for e in range(4):
            for t in range(window):
                has_future[e, t] = np.any(ids[e, t + 1 :] == ids[e, t])
        np.testing.assert_array_equal(v, has_future.ravel())


def test_offsets_follow_truncated_geometric_gamma_k():
    """On one long episode, the empirical law of k over all window positions matches
    sum_t P_t(k) with P_t(k) = gamma^k / sum_{j=1..K_t} gamma^j, K_t = W - 1 - t."""
    gamma, window, num_envs = 0.97, 120, 64
    buf, _ = _fill(num_envs=num_envs, max_size=400, steps=400, episode_len_fn=lambda e, t: np.zeros_like(t))
    counts = np.zeros(window)
    head = np.zeros(window)  # draws at window positions t < 20, where K_t >= 99: P(k) ~ gamma^k
    n_draws = 0
    for i in range(40):
        d = C.buffer_sample(buf, jax.random.PRNGKey(100 + i), window, gamma, 0, 4)
        k, valid = np.asarray(d["k"]), np.asarray(d["valid"])
        counts += np.bincount(k[valid], minlength=window)
        t = np.arange(len(k)) % window
        head += np.bincount(k[valid & (t < 20)], minlength=window)
        n_draws += valid.sum()
    expected = np.zeros(window)
    for t in range(window - 1):
        horizon = window - 1 - t
        p = gamma ** np.arange(1, horizon + 1, dtype=np.float64)
        expected[1 : horizon + 1] += p / p.sum()
    expected /= window - 1
    empirical = counts / n_draws
    assert counts[0] == 0
    sd = np.sqrt(expected * (1 - expected) / n_draws)
    assert np.all(np.abs(empirical - expected) <= 5 * sd + 1e-4), np.max(np.abs(empirical - expected) / (sd + 1e-12))
    # the geometric shape itself: log-count falls by log(gamma) per step of k
    ks = np.arange(1, 60)
    slope = np.polyfit(ks, np.log(head[ks]), 1, w=np.sqrt(head[ks]))[0]
    np.testing.assert_allclose(np.exp(slope), gamma, atol=0.005)


def test_batches_never_contain_invalid_transitions():
    n = 50
    data = {"state": jnp.arange(n, dtype=jnp.float32)[:, None], "action": jnp.zeros((n, 1)),
            "goal": jnp.zeros((n, 1)), "valid": jnp.arange(n) % 5 != 0, "k": jnp.ones(n, jnp.int32)}
    b = C.shuffle_into_batches(jax.random.PRNGKey(0), data, num_batches=4, batch_size=10)
    ids = np.asarray(b["state"][..., 0]).ravel().astype(int)
    assert b["state"].shape == (4, 10, 1)
    assert len(set(ids)) == 40 and all(i % 5 != 0 for i in ids)  # no repeats when enough are valid
    b = C.shuffle_into_batches(jax.random.PRNGKey(1), data, num_batches=6, batch_size=10)  # 60 > 40 valid
    ids = np.asarray(b["state"][..., 0]).ravel().astype(int)
    assert all(i % 5 != 0 for i in ids) and len(set(ids)) == 40


def test_prefill_acts_with_the_untrained_actor():
    """The prefill's actions are the stochastic actor's at its initial parameters: replaying the keys
    of the first unroll by hand and calling the actor gives the buffer's actions (as the paper's code)."""
    import crl_envs as E

    args = C.Args(env_id="reacher", num_envs=4, episode_length=20, unroll_length=10, min_replay_size=20,
                  max_replay_size=60, num_sgd_steps=2, batch_size=16, total_env_steps=1040, num_epochs=2, width=16,
                  depth=8)
    env = E.VecGoalEnv(E.make_env("reacher"), args.num_envs, args.episode_length)
    nets = C.make_networks(8, 8, 16, 64, env.action_size)
    opts = C.Optimizers(C.adam(3e-4), C.adam(3e-4), C.adam(3e-4))
    agent = C.agent_init(jax.random.PRNGKey(1), nets, opts, 10, 3, env.action_size)
    ts = C.TrainState(agent=agent, env_state=jax.jit(env.reset)(jax.random.PRNGKey(2)),
                      buffer=C.buffer_init(60, 4, 10, env.action_size), key=jax.random.PRNGKey(3),
                      env_steps=jnp.zeros((), jnp.int32))
    prefill, _ = C.make_train_fns(args, env, nets, opts, (4, 7))
    actions = np.asarray(jax.jit(prefill)(ts).buffer.action)
    _, key = jax.random.split(ts.key)  # collect's unroll key
    env_state, step = ts.env_state, jax.jit(env.step)
    for t in range(args.unroll_length):
        key, key_act = jax.random.split(key)
        mean, log_std = nets.actor.apply(agent.actor_params, env_state.obs)
        want = C.sample_tanh_gaussian(key_act, mean, log_std)[0]
        np.testing.assert_allclose(actions[t], np.asarray(want), rtol=1e-4, atol=1e-5)
        env_state = step(env_state, want)
    assert np.all(np.abs(actions[:20]) <= 1) and np.any(actions[:20] != 0)
