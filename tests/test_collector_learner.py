"""crl_collector_learner.py: the learners train (their parameters change) but never act (the data
the collector gathers is bit-for-bit that of the same run with the learners removed); all agents
get the same batches (a learner built like the collector, from the same init, ends the epoch with
the collector's parameters); evaluation shows every agent the same envs and goals; bad input is
refused like crl_depth.py's; a tiny end-to-end run writes the three metric families and the plot."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_collector_learner as C
import crl_runs as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "crl_collector_learner.py")
# valid tiny settings: 80 prefill env steps, then 2 training steps of 40 env steps in one epoch
TINY = dict(env_id="point_u_maze", num_envs=4, episode_length=20, num_eval_envs=2, total_env_steps=160, num_epochs=1,
            unroll_length=10, num_sgd_steps=2, batch_size=16, max_replay_size=60, min_replay_size=20, width=16,
            collector_depth=4, deep_learner_depth=8, shallow_learner_depth=4)


def _equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)))


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


@pytest.fixture(scope="module")
def compile_cache():
    """The test session's persistent compilation cache (tests/conftest.py): the end-to-end subprocess,
    at the same tiny settings, loads the prefill, epoch and evaluation programs that the in-process
    runs below compiled instead of compiling them again (a speed-up, nothing more)."""
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


@pytest.fixture(scope="module")
def runs(compile_cache):
    """One prefilled state, then one epoch without learners and one with a deep learner (depth 8)
    and a 'shallow' learner built exactly like the collector (depth 4, the collector's init)."""
    args = C.Args(**TINY)
    spec = C.ENVS[args.env_id]
    env = C.VecGoalEnv(C.make_env(args.env_id), args.num_envs, args.episode_length)
    nets = {name: C.make_networks(depth, depth, args.width, args.repr_dim, env.action_size)
            for name, depth in zip(C.AGENTS, (args.collector_depth, args.deep_learner_depth,
                                              args.shallow_learner_depth))}
    opts = C.Optimizers(C.adam(args.actor_lr), C.adam(args.critic_lr), C.adam(args.alpha_lr))
    key_agent, key_deep, key_env, key = jax.random.split(jax.random.PRNGKey(0), 4)
    init = lambda k, name: C.agent_init(k, nets[name], opts, spec.obs_dim, spec.goal_end - spec.goal_start,
                                        env.action_size)
    collector = init(key_agent, "collector")
    learners = {"deep_learner": init(key_deep, "deep_learner"), "shallow_learner": init(key_agent, "shallow_learner")}
    ts = C.TrainState(agent=collector, learners=learners, env_state=env.reset(key_env),
                      buffer=C.buffer_init(args.max_replay_size, args.num_envs, spec.obs_dim, env.action_size),
                      key=key, env_steps=jnp.zeros((), jnp.int32))
    goal_slice = (spec.goal_start, spec.goal_end)
    prefill, epoch_with = map(jax.jit, C.make_train_fns(args, env, nets["collector"], opts, goal_slice,
                                                       {name: nets[name] for name in learners}))
    epoch_alone = jax.jit(C.make_train_fns(args, env, nets["collector"], opts, goal_slice, {})[1])
    ts = prefill(_copy(ts))  # the untrained collector acts; the learners are only carried along
    alone, metrics_alone = jax.device_get(epoch_alone(_copy(ts.replace(learners={}))))
    with_learners, metrics_with = jax.device_get(epoch_with(_copy(ts)))
    return dict(args=args, nets=nets, init_learners=jax.device_get(learners), prefilled=jax.device_get(ts),
                alone=alone, with_learners=with_learners, metrics_alone=metrics_alone, metrics_with=metrics_with)


def test_learners_never_act_collected_data_identical_without_them(runs):
    alone, with_learners = runs["alone"], runs["with_learners"]
    assert int(with_learners.env_steps) == int(runs["prefilled"].env_steps) + 2 * 40
    assert not _equal(runs["prefilled"].buffer.state, with_learners.buffer.state)  # the epoch did collect
    assert _equal(alone.buffer, with_learners.buffer)
    assert _equal(alone.env_state.obs, with_learners.env_state.obs)
    assert _equal(alone.key, with_learners.key)
    assert _equal(alone.agent, with_learners.agent)  # the collector learns as if it were alone
    for name in ("losses/critic", "losses/actor", "critic/categorical_accuracy"):
        assert runs["metrics_alone"][f"collector/{name}"] == runs["metrics_with"][f"collector/{name}"]


def test_learners_parameters_change(runs):
    for name, before in runs["init_learners"].items():
        after = runs["with_learners"].learners[name]
        for part in ("actor_params", "critic_params"):
            changed = jax.tree.map(lambda x, y: not np.array_equal(x, y), getattr(before, part), getattr(after, part))
            assert all(jax.tree.leaves(changed)), (name, part)  # every kernel and bias moved
        assert float(after.log_alpha) != float(before.log_alpha)
        assert math.isfinite(float(runs["metrics_with"][f"{name}/losses/critic"]))


def test_agents_get_the_same_batches(runs):
    """The shallow learner here has the collector's architecture, init and optimiser; it ends the
    epoch with exactly the collector's parameters only if every SGD step gave both the same batch."""
    ts = runs["with_learners"]
    assert _equal(ts.learners["shallow_learner"], ts.agent)
    metrics = runs["metrics_with"]
    for name in ("losses/critic", "losses/actor", "critic/logits_pos"):
        assert metrics[f"shallow_learner/{name}"] == metrics[f"collector/{name}"]
        assert metrics[f"deep_learner/{name}"] != metrics[f"collector/{name}"]


def test_evaluation_same_envs_and_goals_for_every_agent(runs):
    args, nets, ts = runs["args"], runs["nets"], runs["with_learners"]
    eval_env = C.VecGoalEnv(C.make_env(args.env_id, eval=True), args.num_eval_envs, args.episode_length)
    evaluate = jax.jit(C.make_evaluate(args, eval_env, nets))
    params = {"collector": ts.agent.actor_params, **{n: a.actor_params for n, a in ts.learners.items()}}
    metrics = jax.device_get(evaluate(params, jax.random.PRNGKey(3)))
    assert set(metrics) == {f"{n}/eval/{m}" for n in C.AGENTS
                            for m in ("time_at_goal", "success_any", "dist", "episode_length")}
    # the same actor on the same starts and goals scores exactly the same; a different actor does not
    for m in ("time_at_goal", "dist", "success_any"):
        assert metrics[f"shallow_learner/eval/{m}"] == metrics[f"collector/eval/{m}"]
    assert metrics["deep_learner/eval/dist"] != metrics["collector/eval/dist"]
    assert 0.0 <= metrics["collector/eval/time_at_goal"] <= args.episode_length


@pytest.mark.parametrize("override,message", [
    (dict(collector_depth=6), "--collector-depth must be a positive multiple of 4 (got 6)"),
    (dict(deep_learner_depth=0), "--deep-learner-depth must be a positive multiple of 4 (got 0)"),
    (dict(shallow_learner_depth=-4), "--shallow-learner-depth must be a positive multiple of 4"),
    (dict(batch_size=40), "larger than what a training step yields"),
    (dict(min_replay_size=70), "--min-replay-size (70) must not exceed --max-replay-size (60)"),
    (dict(env_id="cheetah"), "unknown --env-id 'cheetah'; valid ids: reacher, ant, humanoid"),
])
def test_validate_args_rejects(override, message):
    error = C.validate_args(C.Args(**{**TINY, **override}))
    assert error is not None and message in error and "\n" not in error


def test_validate_args_accepts_tiny_and_paper_defaults():
    assert C.validate_args(C.Args(**TINY)) is None
    args = C.Args()
    assert C.validate_args(args) is None
    assert (args.collector_depth, args.deep_learner_depth, args.shallow_learner_depth) == (32, 32, 4)


def test_cli_bad_depth_exit_2_one_line_nothing_written(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--shallow-learner-depth", "6", "--runs-dir", str(tmp_path / "runs")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert [l for l in proc.stderr.splitlines() if l.startswith("error:")] == [
        "error: --shallow-learner-depth must be a positive multiple of 4 (got 6)"]
    # quiet imports: nothing printed but the error line
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()


def test_help_documents_every_flag(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0
    for field in dataclasses.fields(C.Args):
        flag = "--" + field.name.replace("_", "-")
        assert flag in proc.stdout or "--no-" + field.name.replace("_", "-") in proc.stdout, flag
    assert "--depth " not in proc.stdout and "--actor-depth" not in proc.stdout  # replaced by the three depths


def test_tiny_end_to_end_run_writes_three_metric_families_and_plot(tmp_path, compile_cache):
    runs_dir = tmp_path / "runs"
    # two epochs of two training steps each: the programs of the in-process runs above
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "total_env_steps": 240, "num_epochs": 2}.items()]
    proc = subprocess.run([sys.executable, SCRIPT, *flags, "--plot", "--runs-dir", str(runs_dir)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list(runs_dir.iterdir())
    assert run_dir.name.startswith("point_u_maze__crl_collector_learner__1__")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[2]["env_steps"] > records[1]["env_steps"] > records[0]["env_steps"]
    for record in records:
        for name, value in record.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
    for agent in C.AGENTS:
        for name in ("eval/time_at_goal", "eval/success_any", "eval/dist"):
            assert f"{agent}/{name}" in records[0] and f"{agent}/{name}" in records[-1]
            assert 0 <= records[-1][f"{agent}/eval/time_at_goal"] <= 20
        for name in ("losses/critic", "losses/actor", "losses/alpha", "critic/categorical_accuracy", "actor/alpha"):
            assert f"{agent}/{name}" in records[-1]
    for name in ("charts/sps", "time/compile_s", "buffer/valid_fraction"):
        assert name in records[-1]
    assert "epoch 2/2" in proc.stdout and "time at goal (collector/deep/shallow)" in proc.stdout
    _, ckpt = R.read_networks(str(run_dir / "checkpoint.msgpack"))
    assert set(ckpt) == set(C.AGENTS)
    blocks = lambda name: ckpt[name]["actor"]["params"]["trunk"]["blocks"]["Dense_0"]["kernel"].shape
    assert blocks("collector") == (1, 16, 16) and blocks("deep_learner") == (2, 16, 16)
    assert blocks("shallow_learner") == (1, 16, 16)
    png = (run_dir / "time_at_goal.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # several runs: one panel each, side by side (the paper's deep- and shallow-collector figure)
    C.plot_time_at_goal([str(run_dir), str(run_dir)], str(tmp_path / "two.png"))
    width = lambda data: int.from_bytes(data[16:20], "big")
    assert width((tmp_path / "two.png").read_bytes()) > 1.8 * width(png)
