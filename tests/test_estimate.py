"""--estimate: what a run needs from the shapes alone. The counting of FLOPs against a hand count; each
script's estimate against a state really built at the same tiny settings; --remat's effect; nothing written."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_estimate as X

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flops_count_every_scan_iteration():
    """A matmul inside a scan of length 7 inside a scan of length 3 counts 21 times, 2 m n k each (the loop
    XLA's cost analysis would count once); a while loop counts once and is reported."""
    m, k, n = 5, 6, 4

    def f(x, w):
        def inner(c, _):
            return c, c @ w
        def outer(c, _):
            return c, jax.lax.scan(inner, c, None, length=7)[1]
        return jax.lax.scan(outer, x, None, length=3)[1]

    x, w = jnp.ones((m, k)), jnp.ones((k, n))
    flops, whiles = X.jaxpr_flops(jax.make_jaxpr(f)(x, w))
    assert flops == 3 * 7 * 2 * m * n * k and whiles == 0
    g = lambda x: jax.lax.while_loop(lambda c: c[0] < 10, lambda c: (c[0] + 1, c[1] @ jnp.ones((k, k))), (0, x))[1]
    flops, whiles = X.jaxpr_flops(jax.make_jaxpr(g)(x))
    assert whiles == 1 and flops >= 2 * m * k * k


def test_tree_bytes_and_size():
    tree = {"a": jax.ShapeDtypeStruct((3, 4), jnp.float32), "b": [np.zeros((2,), np.int8), jnp.zeros((5,), jnp.bfloat16)]}
    assert X.tree_size(tree) == 12 + 2 + 5
    assert X.tree_bytes(tree) == 12 * 4 + 2 * 1 + 5 * 2


def test_flops_grow_with_depth():
    """The update's counted FLOPs grow with the number of residual blocks (XLA's own count would not: the
    trunk is one scanned block)."""
    import crl_depth as C

    def update_flops(depth):
        nets = C.make_networks(depth, depth, 32, 16, 2)
        opts = C.Optimizers(C.adam(1e-3), C.adam(1e-3), C.adam(1e-3))
        agent = jax.eval_shape(lambda k: C.agent_init(k, nets, opts, 4, 2, 2), jax.random.PRNGKey(0))
        batch = {"state": jax.ShapeDtypeStruct((16, 4), jnp.float32), "action": jax.ShapeDtypeStruct((16, 2), jnp.float32),
                 "goal": jax.ShapeDtypeStruct((16, 2), jnp.float32)}
        return X.jaxpr_flops(jax.make_jaxpr(C.make_sgd_update(nets, opts, -1.0, 0.1))(agent, batch, jax.random.PRNGKey(0)))[0]

    f4, f16, f64 = update_flops(4), update_flops(16), update_flops(64)
    assert 2.5 * f4 < f16 < 4.5 * f4 and 3.5 * f16 < f64 < 4.5 * f16


# depth 16: four residual blocks, so that --remat has activations to drop
ONLINE = ["--env-id", "point_u_maze", "--num-envs", "4", "--episode-length", "20", "--num-eval-envs", "2",
          "--unroll-length", "10", "--num-sgd-steps", "2", "--batch-size", "16", "--max-replay-size", "60",
          "--min-replay-size", "20", "--width", "32", "--depth", "16", "--num-epochs", "1", "--total-env-steps", "120"]


@pytest.fixture(scope="module")
def online_estimate(tmp_path_factory):
    """crl_depth.py --estimate at tiny settings, in this process: its report and output; nothing may be written."""
    import contextlib
    import io

    import crl_depth as C

    tmp = tmp_path_factory.mktemp("estimate")
    args = C.cli([*ONLINE, "--runs-dir", str(tmp / "runs"), "--estimate"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report = C.estimate_run(args)
    return args, report, out.getvalue(), tmp


def test_estimate_state_sizes_are_those_of_a_built_state(online_estimate):
    """Parameter counts and the bytes of every state part equal those of a state really built at the same settings."""
    import crl_depth as C
    import crl_envs as E

    args, report, _, _ = online_estimate
    spec, env, _ = E.make_vec_envs(args.env_id, args.num_envs, args.num_eval_envs, args.episode_length)
    nets = C.make_networks(args.depth, args.depth, args.width, args.repr_dim, env.action_size)
    opts = C.Optimizers(C.adam(args.actor_lr), C.adam(args.critic_lr), C.adam(args.alpha_lr))
    agent = C.agent_init(jax.random.PRNGKey(0), nets, opts, spec.obs_dim, spec.goal_end - spec.goal_start,
                         env.action_size)
    buffer = C.buffer_init(args.max_replay_size, args.num_envs, spec.obs_dim, env.action_size)
    env_state = env.reset(jax.random.PRNGKey(1))
    nbytes = lambda tree: sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))
    assert report["params"] == {"actor": sum(np.size(x) for x in jax.tree.leaves(agent.actor_params)),
                                "critic": sum(np.size(x) for x in jax.tree.leaves(agent.critic_params))}
    assert report["state_bytes"] == {
        "parameters": nbytes((agent.actor_params, agent.critic_params, agent.log_alpha)),
        "optimiser states": nbytes((agent.actor_opt, agent.critic_opt, agent.alpha_opt)),
        "replay buffer": nbytes(buffer), "env states": nbytes(env_state)}


def test_estimate_compiles_every_program_and_writes_nothing(online_estimate):
    args, report, out, tmp = online_estimate
    assert not (tmp / "runs").exists() and list(tmp.iterdir()) == []
    assert report["backend"] == jax.default_backend() and f"backend {jax.default_backend()}" in out
    for name in ("prefill", "epoch", "evaluation"):
        f = report["programs"][name]
        assert f["compile_s"] > 0 and f["arguments"] > 0 and f["peak"] >= f["arguments"] and f["flops"] > 0, name
    epoch = report["programs"]["epoch"]
    assert epoch["donated"] > 0  # the epoch donates the training state
    # per training step at least the critic's forward pass on every SGD batch
    assert epoch["flops_per_step"] > args.num_sgd_steps * 2 * args.batch_size * report["params"]["critic"]
    (line,) = [x for x in out.splitlines() if x.startswith("estimate-json: ")][:1]
    assert json.loads(line.split(": ", 1)[1])["programs"]["epoch"]["peak"] == epoch["peak"]


def test_estimate_shows_what_remat_saves(online_estimate):
    """Without --remat the estimate repeats with it: at depth 16 the epoch's temporaries shrink, its FLOPs grow
    (the forward pass of every block is recomputed in the backward pass)."""
    _, report, out, _ = online_estimate
    without, with_remat = report["programs"]["epoch"], report["compared"]["programs"]["epoch"]
    assert "remat True" in report["compared"]["title"] and "without -> with --remat" in out
    assert with_remat["temporaries"] < without["temporaries"]
    assert with_remat["flops_per_step"] > without["flops_per_step"]


def test_estimate_of_a_run_directory_and_bad_flags(tmp_path):
    """--resume RUN_DIR --estimate estimates the run's own settings (its args.json); bad flags are refused
    with one line and exit status 2, as without --estimate."""
    import dataclasses

    import crl_depth as C

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = dataclasses.asdict(C.cli([*ONLINE, "--width", "24"]))
    (run_dir / "args.json").write_text(json.dumps({**saved, "resume": None}))
    args = C.cli(["--resume", str(run_dir), "--estimate"])
    assert args.width == 24 and args.estimate and args.depth == 16
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "crl_depth.py"), *ONLINE, "--depth", "6", "--estimate",
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --depth must be a positive multiple of 4 (got 6)"
    assert not (tmp_path / "runs").exists()


def test_offline_estimate_sizes_the_dataset_and_writes_nothing(tmp_path):
    """crl_depth_offline.py --estimate on a tiny OGBench-format dataset (no OGBench env: no evaluation program):
    the dataset's bytes are those of the file's arrays as the buffer holds them; nothing is written."""
    pytest.register_assert_rewrite("tests.run_dir_helpers")
    from tests.run_dir_helpers import make_dataset, no_ogbench_dir, subprocess_env

    dataset = make_dataset(tmp_path / "antmaze-tiny-navigate-v0.npz")
    hide = no_ogbench_dir(tmp_path / "no_ogbench")
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "crl_depth_offline.py"), "--dataset", str(dataset),
                           "--obs-dim", "5", "--goal-start", "0", "--goal-end", "3", "--num-gradient-steps", "2",
                           "--eval-every", "2", "--num-sgd-steps", "2", "--batch-size", "16", "--width", "16",
                           "--depth", "8", "--runs-dir", str(tmp_path / "runs"), "--estimate"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=subprocess_env(PYTHONPATH=str(hide)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = [json.loads(x.split(": ", 1)[1]) for x in proc.stdout.splitlines() if x.startswith("estimate-json: ")]
    assert [r["title"].endswith(f"remat {remat}") for r, remat in zip(reports, (False, True))] == [True, True]
    with np.load(dataset) as f:  # the buffer: states and actions as float32, an int32 episode id per step, ptr, size
        n = f["observations"].shape[0]
        want = n * (5 + 3) * 4 + n * 4 + 4 + 4
    assert reports[0]["state_bytes"]["dataset"] == want
    assert set(reports[0]["programs"]) == {"epoch", "diagnostics"}
    assert reports[0]["programs"]["epoch"]["flops_per_step"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory


def test_executed_ops_count_every_loop_trip():
    """A scan of 14 trips executes 7 more body trips than one of 7; loop_trips picks one loop's body; a number
    of trips no loop has is an error."""
    w = jnp.ones((8, 8))

    def text(n):
        f = lambda x: jax.lax.scan(lambda c, _: (jnp.tanh(jnp.sin(c) @ w) @ w, None), x, None, length=n)[0]
        return jax.jit(f).lower(jnp.ones((4, 8))).compile().as_text()

    seven, fourteen = text(7), text(14)
    body = X.executed_ops(seven, loop_trips=7)
    assert body >= 2 and X.executed_ops(fourteen, loop_trips=14) == body  # two dots at least, every trip
    assert X.executed_ops(fourteen) - X.executed_ops(seven) == 7 * body
    # by kind: the same ops, split by what each is; the program's loop trips beside them
    kinds = X.executed_op_kinds(fourteen)
    assert sum(v for k, v in kinds.items() if k != "loop trips") == X.executed_ops(fourteen)
    assert kinds["loop trips"] == 14 and 14 * 2 <= sum(v for k, v in kinds.items() if "dot" in k or "fusion" in k)
    with pytest.raises(ValueError, match="0 while loops of 3 trips"):
        X.executed_ops(seven, loop_trips=3)
    # a loop of unknown trips beside it: one trip of the known loop is still counted, the whole program is not
    g = lambda x: (jax.lax.scan(lambda c, _: (jnp.tanh(jnp.sin(c) @ w) @ w, None), x, None, length=7)[0],
                   jax.lax.while_loop(lambda c: jnp.sum(c) < 100.0, lambda c: c * 2.0 + 1.0, x))
    text = jax.jit(g).lower(jnp.ones((4, 8))).compile().as_text()
    assert X.executed_ops(text, loop_trips=7) == body
    with pytest.raises(ValueError, match="without a known trip count"):
        X.executed_ops(text)
    # a conditional counts as itself and its largest branch
    h = lambda i, x: jax.lax.switch(i, [lambda x: x @ w, lambda x: jnp.sin(x) @ w @ w], x)
    one = jax.jit(lambda x: jnp.sin(x) @ w @ w).lower(jnp.ones((4, 8))).compile().as_text()
    assert X.executed_ops(jax.jit(h).lower(1, jnp.ones((4, 8))).compile().as_text()) >= 1 + X.executed_ops(one)


def sgd_step_ops(depth: int) -> int:
    """HLO ops one SGD step executes inside the training program of crl_depth.py (point_u_maze, the paper's
    width 256 and batch 512, 800 SGD steps of one training step), compiled for the CPU from shapes alone."""
    import crl_depth as C
    import crl_envs as E

    args = C.Args(env_id="point_u_maze", depth=depth)
    spec, env, _ = E.make_vec_envs(args.env_id, args.num_envs, args.num_eval_envs, args.episode_length)
    nets = C.make_networks(depth, depth, args.width, args.repr_dim, env.action_size)
    opts = C.Optimizers(C.adam(3e-4), C.adam(3e-4), C.adam(3e-4))
    _, epoch = C.make_train_fns(args, env, nets, opts, (spec.goal_start, spec.goal_end))

    def fresh(key):
        agent = C.agent_init(key, nets, opts, spec.obs_dim, spec.goal_end - spec.goal_start, env.action_size)
        return C.TrainState(agent=agent, env_state=env.reset(key), key=key, env_steps=jnp.zeros((), jnp.int32),
                            buffer=C.buffer_init(args.max_replay_size, args.num_envs, spec.obs_dim, env.action_size))

    text = jax.jit(epoch).lower(jax.eval_shape(fresh, jax.random.PRNGKey(0))).compile().as_text()
    return X.executed_ops(text, loop_trips=args.num_sgd_steps)


def test_sgd_step_ops_at_depth_64():
    """The deep step's launches: one SGD step at depth 64 executes at most 5,000 HLO ops (two passes through
    the trunks forward, two backward; 4,587 on jax 0.10.2's CPU, 4,675 with Adam per parameter array, 10,994
    when each loss ran its own passes), and only the block loops' trips grow with depth: from depth 64 to 128
    twice the ops that 32 to 64 add."""
    d32, d64, d128 = sgd_step_ops(32), sgd_step_ops(64), sgd_step_ops(128)
    assert d64 <= 5_000, d64
    assert d128 - d64 == 2 * (d64 - d32) > 0, (d32, d64, d128)
