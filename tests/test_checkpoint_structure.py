"""Every env id through a checkpoint, for each script, cheaply: the training state's structure comes
from jax.eval_shape (no compile, no env step), is filled with distinct values, written with
crl_runs.save_state, read back with load_state against the same structure, and compared leaf by leaf.
The arms' mjx env state is among them (flax's own serialisation cannot write it), and a state
without its buffer (--no-checkpoint-buffer) must round-trip too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_collector_learner as CL
import crl_depth as C
import crl_depth_offline as O
import crl_envs as E
import crl_runs as R

NUM_ENVS, MAX_SIZE, WIDTH = 2, 4, 16
_env_states = {}


def _env_state(env_id):
    """The structure of the VecGoalEnv state of env_id, one per test session."""
    if env_id not in _env_states:
        env = E.VecGoalEnv(E.make_env(env_id), NUM_ENVS, 4)
        _env_states[env_id] = (env, jax.eval_shape(env.reset, jax.random.PRNGKey(0)))
    return _env_states[env_id]


def _agent(script, env_id, action_size, depth=4):
    spec = E.ENVS[env_id]
    nets = script.make_networks(depth, depth, WIDTH, 8, action_size)
    opts = script.Optimizers(script.adam(1e-3), script.adam(1e-3), script.adam(1e-3))
    return jax.eval_shape(lambda: script.agent_init(jax.random.PRNGKey(0), nets, opts, spec.obs_dim,
                                                    spec.goal_end - spec.goal_start, action_size))


def _online_state(script, env_id, **extra):
    env, env_state = _env_state(env_id)
    spec = E.ENVS[env_id]
    buffer = jax.eval_shape(lambda: script.buffer_init(MAX_SIZE, NUM_ENVS, spec.obs_dim, env.action_size))
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    return script.TrainState(agent=_agent(script, env_id, env.action_size), env_state=env_state, buffer=buffer,
                             key=jax.ShapeDtypeStruct((2,), jnp.uint32), env_steps=scalar, **extra)


def _fill(template):
    """Distinct values in every leaf, of the leaf's shape and dtype."""
    leaves, treedef = jax.tree.flatten(template)
    filled = [(np.arange(np.prod(x.shape, dtype=int)) + i).reshape(x.shape).astype(x.dtype) if x.dtype != bool
              else np.ones(x.shape, bool) for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, filled)


def _round_trip(tmp_path, template, with_buffer=True):
    state = _fill(template)
    header = {"format": "test_state", "env": "x"}
    path = str(tmp_path / "state.msgpack")
    saved = state if with_buffer else state.replace(buffer=None)  # --no-checkpoint-buffer leaves it out
    R.save_state(path, {**header, "has_buffer": with_buffer}, 7, {"ts": saved, "key_eval": jnp.zeros((1, 2), jnp.uint32)})
    file_header, epoch, loaded = R.load_state(path, {**header, "has_buffer": with_buffer}, str, lambda h: {
        "ts": template if h["has_buffer"] else template.replace(buffer=None),
        "key_eval": jax.ShapeDtypeStruct((1, 2), jnp.uint32)})
    loaded, has_buffer = loaded["ts"], file_header["has_buffer"]
    assert epoch == 7 and has_buffer == with_buffer
    if not with_buffer:  # the file holds every leaf but the buffer's
        assert loaded.buffer is None
        state, template = (x.replace(buffer=None) for x in (state, template))
    assert jax.tree.structure(loaded) == jax.tree.structure(template)
    for got, want, shape in zip(jax.tree.leaves(loaded), jax.tree.leaves(state), jax.tree.leaves(template)):
        assert got.shape == shape.shape and got.dtype == shape.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("env_id", list(E.ENVS))
def test_crl_depth_state_of_every_env_round_trips(env_id, tmp_path):
    template = _online_state(C, env_id)
    _round_trip(tmp_path, template)
    _round_trip(tmp_path, template, with_buffer=False)  # --no-checkpoint-buffer


@pytest.mark.parametrize("env_id", list(E.ENVS))
def test_crl_collector_learner_state_of_every_env_round_trips(env_id, tmp_path):
    env, _ = _env_state(env_id)
    learners = {name: _agent(CL, env_id, env.action_size, depth) for name, depth in
                (("deep_learner", 8), ("shallow_learner", 4))}
    _round_trip(tmp_path, _online_state(CL, env_id, learners=learners))


def test_crl_depth_offline_state_round_trips(tmp_path):
    """The offline state holds no env state (its dataset is not saved); one structure serves every env id."""
    buffer = jax.eval_shape(lambda: O.buffer_init(MAX_SIZE, NUM_ENVS, 10, 2))
    template = O.TrainState(agent=_agent(O, "reacher", 2), buffer=buffer, key=jax.ShapeDtypeStruct((2,), jnp.uint32),
                            gradient_steps=jax.ShapeDtypeStruct((), jnp.int32))
    _round_trip(tmp_path, template)


def test_a_state_that_does_not_fit_is_refused(tmp_path):
    """A checkpoint of one env loaded into another env's run names the first leaf that differs."""
    state = _fill(_online_state(C, "reacher"))
    path = str(tmp_path / "state.msgpack")
    R.save_state(path, {"format": "test_state"}, 1, {"ts": state})
    with pytest.raises(R.CheckpointError, match="does not fit this run: agent/"):
        R.load_state(path, {"format": "test_state"}, str, lambda h: {"ts": _online_state(C, "ant")})


@pytest.mark.slow  # an mjx arm's epoch compiles
def test_two_seeds_of_an_arm_trace_through_a_training_epoch():
    """--num-seeds with the mjx backend: the epoch of crl_depth.py, vmapped over 2 seeds, traces on an
    arm's state (jax.eval_shape: the whole prefill and epoch traced, nothing compiled) and keeps the
    state's structure, so the seed axis works for mjx as for brax."""
    args = C.Args(env_id="arm_push_easy", num_envs=NUM_ENVS, episode_length=4, num_eval_envs=1, unroll_length=2,
                  min_replay_size=4, max_replay_size=MAX_SIZE * 2, num_sgd_steps=1, batch_size=2, num_epochs=1,
                  total_env_steps=12, width=WIDTH, num_seeds=2)
    env, env_state = _env_state("arm_push_easy")
    spec = E.ENVS["arm_push_easy"]
    nets = C.make_networks(4, 4, WIDTH, 8, env.action_size)
    opts = C.Optimizers(C.adam(1e-3), C.adam(1e-3), C.adam(1e-3))
    one = C.TrainState(agent=_agent(C, "arm_push_easy", env.action_size), env_state=env_state,
                       buffer=jax.eval_shape(lambda: C.buffer_init(args.max_replay_size, NUM_ENVS, spec.obs_dim,
                                                                   env.action_size)),
                       key=jax.ShapeDtypeStruct((2,), jnp.uint32), env_steps=jax.ShapeDtypeStruct((), jnp.int32))
    two = jax.tree.map(lambda x: jax.ShapeDtypeStruct((2, *x.shape), x.dtype), one)
    prefill, epoch = (R.seed_map(fn, 2) for fn in C.make_train_fns(args, env, nets, opts, (spec.goal_start,
                                                                                          spec.goal_end)))
    after_prefill = jax.eval_shape(prefill, two)
    after_epoch, metrics = jax.eval_shape(epoch, after_prefill)
    assert jax.tree.structure(after_epoch) == jax.tree.structure(two)
    assert all(x.shape[0] == 2 for x in jax.tree.leaves(after_epoch)) and metrics["losses/critic"].shape == (2,)
