"""crl_collector_learner.py's --num-seeds (the whole training state, all three agents
included, vmapped over a seed axis) and --num-devices (envs, buffer and SGD batches split across
devices; on CPU with XLA_FLAGS=--xla_force_host_platform_device_count=2). Each seed of a multi-seed
run must be the run that --seed alone gives, and a 2-device run the 1-device run, up to
floating-point rounding (exact before any training step; see tests/test_parallel.py for why not bit
for bit after it)."""

import glob
import os
import subprocess
import sys

import flax
import numpy as np
import pytest

import crl_collector_learner as C
import crl_runs as R

pytest.register_assert_rewrite("tests.run_dir_helpers")
from tests.run_dir_helpers import (assert_same_run, assert_seeds_are_single_runs, error_lines,  # noqa: E402
                                   flat_params, load_params, read_records, run_line, run_script, subprocess_env)

pytestmark = pytest.mark.slow  # seeds and devices: runs compared with runs: python -m pytest tests/ -m slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "crl_collector_learner.py")
# 80 prefill env steps, then 2 epochs of 2 training steps of 40 env steps
TINY = ["--env-id", "point_u_maze", "--num-envs", "4", "--episode-length", "20", "--num-eval-envs", "2",
        "--total-env-steps", "240", "--num-epochs", "2", "--unroll-length", "10", "--num-sgd-steps", "2",
        "--batch-size", "16", "--max-replay-size", "60", "--min-replay-size", "20", "--width", "16",
        "--collector-depth", "4", "--deep-learner-depth", "8", "--shallow-learner-depth", "4"]
# continuous training metrics of every agent, compared across runs
COMPARED = tuple(f"{agent}/{name}" for agent in C.AGENTS for name in (
    "losses/critic", "losses/actor", "losses/alpha", "critic/logsumexp", "actor/entropy", "actor/alpha"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


def _run(tmp_path_factory, cache, name, *flags, devices=1):
    tmp = tmp_path_factory.mktemp(name)
    return run_script([sys.executable, SCRIPT, *TINY, *flags, "--runs-dir", str(tmp / "runs")], tmp, cache, devices)


@pytest.fixture(scope="module")
def single(tmp_path_factory, cache):
    """--seed 1 and --seed 2, each alone."""
    return {seed: _run(tmp_path_factory, cache, f"seed{seed}", "--seed", str(seed)) for seed in (1, 2)}


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, cache):
    """--num-seeds 2 (seeds 1 and 2 in one process), with the plot."""
    return _run(tmp_path_factory, cache, "seeds12", "--num-seeds", "2", "--plot")


def _assert_same_run(records, reference, params, reference_params, other_seed_params):
    """Same run up to rounding (tests/run_dir_helpers.py's assert_same_run), for all three agents."""
    def untrained(got, want):  # exact but the mean distances, which may differ in float32's last bit: the
        # 2-seed program evaluates the three agents' batched envs in another XLA program (seen in
        # shallow_learner/eval/dist of seed 2: 0.13506305 vs 0.13506304)
        def rounded(record):
            return {k: float(f"{v:.6g}") if k.endswith("/eval/dist") else v for k, v in record.items()}

        return rounded(got), rounded({**want, "time/compile_s": got["time/compile_s"]})

    assert_same_run(records, reference, params, reference_params, other_seed_params, COMPARED, ("env_steps", "seed"),
                    untrained)


def test_two_seeds_in_one_process_equal_two_single_runs(single, two_seeds):
    run_dir, records, stdout = two_seeds
    assert run_line(stdout).endswith("| seeds 1, 2 in one process")
    assert "time at goal (collector/deep/shallow, mean of 2 seeds)" in stdout
    assert os.path.basename(run_dir).startswith("point_u_maze__crl_collector_learner__1-2__")
    assert_seeds_are_single_runs(run_dir, records, single, _assert_same_run)
    assert records[-1]["deep_learner/losses/critic"] != records[-2]["deep_learner/losses/critic"]
    assert set(load_params(os.path.join(run_dir, "checkpoint_seed2.msgpack"))) == set(C.AGENTS)
    # a single run keeps its names: seed in the run name, checkpoint.msgpack, a seed field per record
    assert os.path.basename(single[2][0]).startswith("point_u_maze__crl_collector_learner__2__")
    assert [r["seed"] for r in single[2][1]] == [2, 2, 2]


def test_two_seed_state_has_a_seed_axis_and_the_plot_their_mean(two_seeds):
    run_dir = two_seeds[0]
    blob = open(os.path.join(run_dir, "state.msgpack"), "rb").read()
    restored = flax.serialization.msgpack_restore(blob[48:])
    assert restored["header"]["num_seeds"] == 2 and restored["header"]["version"] == C.STATE_VERSION == 4
    ts = restored["state"]["ts"]
    assert set(ts["learners"]) == set(C.AGENTS[1:])
    leaves = flax.traverse_util.flatten_dict(ts, sep="/")
    assert all(np.shape(x)[0] == 2 for x in leaves.values() if x is not None)
    assert ts["env_steps"].tolist() == [240, 240] and restored["state"]["key_eval"].shape == (2, 2)
    png = open(os.path.join(run_dir, "time_at_goal.png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_two_devices_equal_one_device(single, tmp_path_factory, cache):
    run_dir, records, stdout = _run(tmp_path_factory, cache, "devices2", devices=2)
    assert run_line(stdout).endswith("| 2 devices, envs and batches split")
    _assert_same_run(records, single[1][1], load_params(os.path.join(run_dir, "checkpoint.msgpack")),
                     load_params(os.path.join(single[1][0], "checkpoint.msgpack")),
                     load_params(os.path.join(single[2][0], "checkpoint.msgpack")))


def test_bad_num_seeds_and_devices_refused(tmp_path, cache):
    assert C.validate_args(C.Args(num_seeds=0)) == "--num-seeds must be positive (got 0)"
    assert C.validate_args(C.Args(num_seeds=2, render=True)) == "--render works on one run: not with --num-seeds 2"
    assert C.validate_args(C.Args(num_devices=-1)).startswith("--num-devices must be in [0, ")
    assert C.validate_args(C.Args(num_seeds=8)) is None
    # 2 devices: the envs must split evenly; refused before anything is compiled or written
    env = subprocess_env(cache, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, SCRIPT, *TINY, "--num-envs", "3", "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and error_lines(proc.stderr) == [
        "error: --num-envs (3) must be a multiple of the number of devices (2, all local ones; set --num-devices)"]
    assert not (tmp_path / "runs").exists()


def test_state_shardings_split_envs_and_buffer_replicate_the_three_agents():
    import jax
    import jax.numpy as jnp

    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("envs",))
    nets = C.make_networks(4, 4, 8, 4, 2)
    opts = C.Optimizers(C.adam(1e-3), C.adam(1e-3), C.adam(1e-3))
    agents = jax.vmap(lambda k: C.agent_init(k, nets, opts, 6, 2, 2))(jax.random.split(jax.random.PRNGKey(0), 3))
    ts = C.TrainState(agent=agents, learners={"deep_learner": agents, "shallow_learner": agents},
                      env_state={"obs": jnp.zeros((3, 4, 8))}, buffer=jax.vmap(lambda _: C.buffer_init(10, 4, 6, 2))(
                          jnp.arange(3)), key=jnp.zeros((3, 2), jnp.uint32), env_steps=jnp.zeros(3, jnp.int32))
    sh = R.state_shardings(ts, mesh, {"env_state": 1, "buffer": 2})
    P = jax.sharding.PartitionSpec
    assert sh.buffer.state.spec == P(None, None, "envs") and sh.buffer.ptr.spec == P()
    assert sh.env_state["obs"].spec == P(None, "envs")
    assert all(s.spec == P() for s in jax.tree.leaves((sh.agent, sh.learners, sh.key, sh.env_steps)))
    assert len(jax.tree.leaves(sh.learners)) == 2 * len(jax.tree.leaves(sh.agent)) > 10


def test_two_seed_run_resumed_equals_an_uninterrupted_one(two_seeds, tmp_path, cache):
    """Stopped after epoch 1, then resumed to epoch 2: state and final networks bit-identical."""
    env = subprocess_env(cache)
    first = TINY[:TINY.index("--total-env-steps")] + ["--total-env-steps", "160", "--num-epochs", "1"] + TINY[
        TINY.index("--unroll-length"):]
    for cmd in ([*first, "--num-seeds", "2", "--runs-dir", str(tmp_path / "runs")],
                ["--resume", None, "--total-env-steps", "240", "--num-epochs", "2"]):
        if cmd[0] == "--resume":
            (cmd[1],) = glob.glob(str(tmp_path / "runs" / "*"))
        proc = subprocess.run([sys.executable, SCRIPT, *cmd], capture_output=True, text=True, timeout=900,
                              cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from" in proc.stdout and "epoch 2/2" in proc.stdout
    run_dir, straight = cmd[1], two_seeds[0]
    for name in ("state.msgpack", "checkpoint_seed1.msgpack", "checkpoint_seed2.msgpack"):
        assert open(os.path.join(run_dir, name), "rb").read() == open(os.path.join(straight, name), "rb").read(), name
    untimed = lambda records: [{k: v for k, v in r.items() if not k.startswith(("time/", "charts/"))} for r in records]
    assert untimed(read_records(run_dir)) == untimed(read_records(straight))


def test_bfloat16_run_is_the_float32_run_rounded(single, tmp_path_factory, cache):
    """--compute-dtype bfloat16 end to end for all three agents: the losses stay finite, and each
    agent's final parameters are far closer to the float32 run of the same seed than to another
    seed's (the matmuls really changed: not bit-identical to float32)."""
    run_dir, records, stdout = _run(tmp_path_factory, cache, "bf16", "--compute-dtype", "bfloat16")
    assert run_line(stdout).endswith("| bfloat16 matmuls")
    assert all(np.isfinite(r[name]) for r in records[1:] for name in COMPARED)
    params, ref, other = (load_params(os.path.join(d, "checkpoint.msgpack"))
                          for d in (run_dir, single[1][0], single[2][0]))
    for agent in C.AGENTS:
        p, r, o = (flat_params(x[agent]) for x in (params, ref, other))
        distance, seeds_apart = np.linalg.norm(p - r), np.linalg.norm(o - r)
        assert 0 < distance < 2e-3 * np.linalg.norm(r) and distance < seeds_apart / 100, (agent, distance, seeds_apart)
