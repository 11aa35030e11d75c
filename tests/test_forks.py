"""A fork runs: each script, copied into an empty directory beside the six modules (crl_envs.py,
crl_runs.py, crl_plots.py, crl_datasets.py, crl_estimate.py, crl_kernels.py, unchanged) and edited there as a researcher would, trains
one tiny epoch, writes its checkpoint and continues from it with --resume --num-epochs 2 (one flag) for a
second epoch. Every edit is asserted to apply exactly once, so this test fails loudly when a script changes
under it; nothing but the fork's own file is edited. The forks: a fixed entropy coefficient, a dot-product
critic, a target critic, symmetric InfoNCE without a metric the console line shows plus a new field of the
training state (in each of the three scripts), offline CRL with another actor loss and no behaviour cloning,
and a collector / learner run with a third learner. The crl_depth.py fork of the dropped metric runs in the
default test tier, the others under -m slow."""

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import flax
import numpy as np
import pytest

import crl_runs as R

pytest.register_assert_rewrite("tests.run_dir_helpers")
from tests.run_dir_helpers import make_dataset, no_ogbench_dir, read_records, read_state  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("crl_envs.py", "crl_runs.py", "crl_plots.py", "crl_datasets.py", "crl_estimate.py", "crl_kernels.py")
# one training step of 4 envs x 10 steps per epoch after a prefill of 80 env steps: epoch 1 ends at 120
ONLINE = ["--env-id", "point_u_maze", "--num-envs", "4", "--episode-length", "20", "--num-eval-envs", "2",
          "--unroll-length", "10", "--num-sgd-steps", "1", "--batch-size", "16", "--max-replay-size", "60",
          "--min-replay-size", "20", "--width", "16", "--depth", "4", "--num-epochs", "1", "--total-env-steps", "120"]
ONLINE_RESUME = ["--num-epochs", "2"]  # one more epoch of the same length (the total follows)
OFFLINE = ["--obs-dim", "5", "--goal-start", "0", "--goal-end", "3", "--num-gradient-steps", "2", "--eval-every", "2",
           "--num-sgd-steps", "2", "--batch-size", "16", "--width", "16", "--depth", "4"]
OFFLINE_RESUME = ["--num-epochs", "2"]  # one more epoch of --eval-every gradient steps


def fork(directory, script, name, edits):
    """directory/name: script with every (old, new) of edits applied, beside a copy of each module."""
    directory.mkdir()
    for module in MODULES:
        shutil.copy(os.path.join(ROOT, module), directory / module)
    text = open(os.path.join(ROOT, script)).read()
    for old, new in edits:
        assert text.count(old) == 1, f"{script} changed: this edit of the {name} fork no longer applies:\n{old}"
        text = text.replace(old, new)
    (directory / name).write_text(text)
    return directory / name


# the fork's run, then its --resume, in one interpreter (one import of jax, not two), from the fork's
# directory, with the session's XLA flags (tests/conftest.py: XLA's optimisation passes off)
DRIVER = """import glob, json, runpy, sys
script, flags, resume_flags = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
sys.argv = [script, *flags]
runpy.run_path(script, run_name="__main__")
(run_dir,) = glob.glob("runs/*")
sys.argv = [script, "--resume", run_dir, *resume_flags]
runpy.run_path(script, run_name="__main__")
"""


def run_and_resume(path, flags, resume_flags, **env):
    """Runs the fork for one epoch (its checkpoint is written after it, the last epoch), then --resume
    for one more; returns (the run directory, its metrics.jsonl records, the output of both)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env
    proc = subprocess.run([sys.executable, "-c", DRIVER, path.name, json.dumps(flags), json.dumps(resume_flags)],
                          capture_output=True, text=True, timeout=900, cwd=path.parent, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = (path.parent / "runs").iterdir()
    assert f"resuming from {os.path.join('runs', run_dir.name, 'state.msgpack')} at epoch 1 " in proc.stdout
    records = read_records(run_dir)
    assert [r["epoch"] for r in records] == [0, 1, 2] and (run_dir / "checkpoint.msgpack").exists()
    for record in records:
        assert all(np.isfinite(v) for v in record.values()), record
    return run_dir, records, proc.stdout


def state_leaves(run_dir):
    """The path names of the training state's leaves in run_dir's state.msgpack."""
    return set(flax.traverse_util.flatten_dict(read_state(run_dir / "state.msgpack", R.STATE_MAGIC)["state"]["ts"],
                                               sep="/"))


@pytest.mark.slow  # a fork's tiny run and its resume
def test_fixed_entropy_coefficient(tmp_path):
    """alpha fixed at 0.05: no alpha loss, no alpha optimiser and no alpha loss metric."""
    path = fork(tmp_path / "fork", "crl_depth.py", "crl_fixed_alpha.py", [
        ("    alpha_opt: Any\n", ""),
        ("    alpha: optax.GradientTransformation\n", ""),
        ("    log_alpha = jnp.zeros(())\n", "    log_alpha = jnp.full((), math.log(0.05))  # fixed\n"),
        ("opts.critic.init(critic_params), opts.alpha.init(log_alpha))", "opts.critic.init(critic_params))"),
        ("    alpha_loss = alpha_loss_fn(log_alpha, log_prob, target_entropy)\n", ""),
        ("    return actor_loss + alpha_loss + critic_loss, ", "    return actor_loss + critic_loss, "),
        ("        log_alpha, alpha_opt = apply(opts.alpha, alpha_grad, agent.alpha_opt, agent.log_alpha)\n", ""),
        ('"losses/alpha": alpha_loss,', ""),
        ("Agent(actor_params, critic_params, log_alpha, actor_opt, critic_opt, alpha_opt)",
         "Agent(actor_params, critic_params, agent.log_alpha, actor_opt, critic_opt)"),
        ("adam(args.critic_lr), adam(args.alpha_lr))", "adam(args.critic_lr))"),
        ("Optimizers(*[optax.adam(1.0)] * 3)", "Optimizers(*[optax.adam(1.0)] * 2)"),
    ])
    run_dir, records, _ = run_and_resume(path, ONLINE, ONLINE_RESUME)
    assert all("losses/alpha" not in r for r in records)
    np.testing.assert_allclose([r["actor/alpha"] for r in records[1:]], 0.05, rtol=1e-6)
    leaves = state_leaves(run_dir)
    assert "agent/log_alpha" in leaves and not any("alpha_opt" in leaf for leaf in leaves)


@pytest.mark.slow  # a fork's tiny run and its resume
def test_dot_product_critic(tmp_path):
    """InfoNCE on phi . psi instead of the L2 energy -||phi - psi|| (which is never positive)."""
    path = fork(tmp_path / "fork", "crl_depth.py", "crl_dot_critic.py", [
        ("    diff = sa_repr[:, None, :] - g_repr[None, :, :]\n    return -jnp.sqrt(jnp.sum(diff**2, axis=-1) + 1e-12)\n",
         "    return sa_repr @ g_repr.T\n"),
        ("    return -jnp.sqrt(jnp.sum((sa_repr - g_repr) ** 2, axis=-1) + 1e-12)\n",
         "    return jnp.sum(sa_repr * g_repr, axis=-1)\n"),
    ])
    _, records, _ = run_and_resume(path, ONLINE, ONLINE_RESUME)
    assert max(max(r["critic/logits_pos"], r["critic/logits_neg"], r["actor/q"]) for r in records[1:]) > 0


@pytest.mark.slow  # a fork's tiny run and its resume
def test_target_critic(tmp_path):
    """A Polyak-averaged copy of the critic in the agent scores the actor's actions; its distance to the
    critic is a new metric."""
    path = fork(tmp_path / "fork", "crl_depth.py", "crl_target_critic.py", [
        ("    alpha_opt: Any\n", "    alpha_opt: Any\n    target_critic_params: Any  # Polyak average of critic_params\n"),
        ("opts.critic.init(critic_params), opts.alpha.init(log_alpha))",
         "opts.critic.init(critic_params), opts.alpha.init(log_alpha), critic_params)"),
        ("    actor_params, critic_params, log_alpha = params\n",
         "    actor_params, critic_params, log_alpha, target_params = params\n"),
        ('    phi_fixed = jax.lax.stop_gradient(critic_params["phi"])',
         '    phi_fixed = jax.lax.stop_gradient(target_params["phi"])'),
        ("jax.lax.stop_gradient(g_repr), action, batch",
         'nets.psi.apply(jax.lax.stop_gradient(target_params["psi"]), batch["goal"]), action, batch'),
        ("        (actor_grads, critic_grads, alpha_grad), metrics = jax.grad(sgd_losses, has_aux=True)(\n"
         "            (agent.actor_params, agent.critic_params, agent.log_alpha), ",
         "        (actor_grads, critic_grads, alpha_grad, _), metrics = jax.grad(sgd_losses, has_aux=True)(\n"
         "            (agent.actor_params, agent.critic_params, agent.log_alpha, agent.target_critic_params), "),
        ("        return Agent(actor_params, critic_params, log_alpha, actor_opt, critic_opt, alpha_opt), metrics\n",
         "        target = jax.tree.map(lambda t, p: 0.9 * t + 0.1 * p, agent.target_critic_params, critic_params)\n"
         '        metrics["critic/target_lag"] = optax.global_norm(jax.tree.map(jnp.subtract, critic_params, target))\n'
         "        return Agent(actor_params, critic_params, log_alpha, actor_opt, critic_opt, alpha_opt, target), metrics\n"),
    ])
    run_dir, records, _ = run_and_resume(path, ONLINE, ONLINE_RESUME)
    assert all(r["critic/target_lag"] > 0 for r in records[1:])
    assert any(leaf.startswith("agent/target_critic_params/phi/") for leaf in state_leaves(run_dir))


# symmetric InfoNCE (each goal also classifies its state-action among the batch's), and the critic's categorical
# accuracy, a metric of the console line, no longer computed; the same edits in all three scripts (the losses block)
SYMMETRIC_INFONCE = [
    ("    loss = jnp.mean(lse - diag) + logsumexp_penalty * jnp.mean(lse**2)\n",
     "    lse_goals = jax.nn.logsumexp(logits, axis=0)\n"
     "    loss = 0.5 * (jnp.mean(lse - diag) + jnp.mean(lse_goals - diag)) + logsumexp_penalty * jnp.mean(lse**2)\n"),
    ('               "critic/categorical_accuracy": jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(n)),\n', ""),
]
# a counter of trained epochs, a new field of the training state, logged as a metric
COUNTER = {
    "crl_depth.py": [
        ("    key: jax.Array\n    env_steps: jax.Array\n",
         "    key: jax.Array\n    env_steps: jax.Array\n    epochs_trained: jax.Array\n"),
        ("key=key, env_steps=jnp.zeros((), jnp.int32))",
         "key=key, env_steps=jnp.zeros((), jnp.int32), epochs_trained=jnp.zeros((), jnp.int32))"),
        ('        metrics["train/params_finite"] = all_finite(ts.agent)\n',
         '        metrics["train/params_finite"] = all_finite(ts.agent)\n'
         "        ts = ts.replace(epochs_trained=ts.epochs_trained + 1)\n"
         '        metrics["train/epochs_trained"] = ts.epochs_trained\n')],
    "crl_collector_learner.py": [
        ("    key: jax.Array\n    env_steps: jax.Array\n",
         "    key: jax.Array\n    env_steps: jax.Array\n    epochs_trained: jax.Array\n"),
        ("key=key, env_steps=jnp.zeros((), jnp.int32))",
         "key=key, env_steps=jnp.zeros((), jnp.int32), epochs_trained=jnp.zeros((), jnp.int32))"),
        ('            metrics[f"{name}/train/params_finite"] = all_finite(agent)\n',
         '            metrics[f"{name}/train/params_finite"] = all_finite(agent)\n'
         "        ts = ts.replace(epochs_trained=ts.epochs_trained + 1)\n"
         '        metrics["train/epochs_trained"] = ts.epochs_trained\n')],
    "crl_depth_offline.py": [
        ("    key: jax.Array\n    gradient_steps: jax.Array\n",
         "    key: jax.Array\n    gradient_steps: jax.Array\n    epochs_trained: jax.Array\n"),
        ("gradient_steps=jnp.zeros((args.num_seeds,), jnp.int32))",
         "gradient_steps=jnp.zeros((args.num_seeds,), jnp.int32),\n"
         "                      epochs_trained=jnp.zeros((args.num_seeds,), jnp.int32))"),
        ("axes = TrainState(agent=0, buffer=None, key=0, gradient_steps=0)",
         "axes = TrainState(agent=0, buffer=None, key=0, gradient_steps=0, epochs_trained=0)"),
        ('        metrics["train/params_finite"] = all_finite(ts.agent)\n',
         '        metrics["train/params_finite"] = all_finite(ts.agent)\n'
         "        ts = ts.replace(epochs_trained=ts.epochs_trained + 1)\n"
         '        metrics["train/epochs_trained"] = ts.epochs_trained\n')],
}


@pytest.mark.parametrize("script", ["crl_depth.py", pytest.param("crl_depth_offline.py", marks=pytest.mark.slow),
                                    pytest.param("crl_collector_learner.py", marks=pytest.mark.slow)])
def test_a_dropped_console_metric_and_a_new_state_field(tmp_path, script):
    """Symmetric InfoNCE without the categorical accuracy that the console line shows (offline: nor the
    diagnostics' accuracy, also shown), and an epoch counter in the training state: the fork trains, prints its
    console lines without the metric, checkpoints, and --resume --num-epochs 2 continues it; the checkpoint
    carries the counter, so the resumed epoch counts on from it."""
    edits = SYMMETRIC_INFONCE + COUNTER[script]
    if script == "crl_depth_offline.py":
        edits.append(('                "offline/critic_accuracy": critic_m["critic/categorical_accuracy"],\n', ""))
    path = fork(tmp_path / "fork", script, "crl_symmetric.py", edits)
    if script == "crl_depth_offline.py":
        flags = ["--dataset", str(make_dataset(tmp_path / "antmaze-tiny-navigate-v0.npz")), *OFFLINE]
        env = {"PYTHONPATH": str(no_ogbench_dir(tmp_path / "no_ogbench"))}
        run_dir, records, stdout = run_and_resume(path, flags, OFFLINE_RESUME, **env)
    elif script == "crl_collector_learner.py":
        online = ONLINE[:ONLINE.index("--depth")] + ONLINE[ONLINE.index("--depth") + 2:]
        run_dir, records, stdout = run_and_resume(path, online + ["--collector-depth", "4", "--deep-learner-depth",
                                                                  "4", "--shallow-learner-depth", "4"], ONLINE_RESUME)
    else:
        run_dir, records, stdout = run_and_resume(path, ONLINE, ONLINE_RESUME)
    assert not any("categorical_accuracy" in name or "critic_accuracy" in name for r in records for name in r)
    epoch_lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3 and "epoch 2/2 |" in epoch_lines[-1] and "| critic " in epoch_lines[-1]
    assert not [line for line in epoch_lines if "acc " in line], epoch_lines
    assert [r["train/epochs_trained"] for r in records[1:]] == [1, 2]
    assert "epochs_trained" in state_leaves(run_dir)


@pytest.mark.slow  # a fork's tiny run and its resume
def test_offline_without_behaviour_cloning(tmp_path):
    """crl_depth_offline.py without --bc-coef (the flag, its check and its term gone) and with a contrastive
    actor loss: the log-probability that the actor's action picks its own goal among the batch's."""
    path = fork(tmp_path / "fork", "crl_depth_offline.py", "crl_offline_contrastive_actor.py", [
        ('    bc_coef: float = 0.1\n    """weight of behaviour cloning, mean ||a_pi - a_data||^2, in the actor loss; 0 '
         "gives pure CRL.\n    0.1 is TD3+BC's balance (alpha 2.5) rescaled to this loss: see docs/offline.md\"\"\"\n", ""),
        ('    if not args.bc_coef >= 0:\n        return f"--bc-coef must be >= 0 (got {args.bc_coef})"\n', ""),
        ("args.logsumexp_penalty, args.bc_coef)", "args.logsumexp_penalty)"),
        ("params | bc coef {args.bc_coef} | {num_epochs}", "params | {num_epochs}"),
        ("    loss = jnp.mean(jnp.exp(log_alpha) * log_prob - q) + bc_coef * bc\n",
         "    logits = l2_energy_matrix(sa_pi_repr, g_repr)  # the actor's action against every goal of the batch\n"
         "    loss = jnp.mean(jnp.exp(log_alpha) * log_prob) - jnp.mean(jnp.diag(jax.nn.log_softmax(logits, axis=1)))\n"),
    ])
    dataset = make_dataset(tmp_path / "antmaze-tiny-navigate-v0.npz")
    hide = no_ogbench_dir(tmp_path / "no_ogbench")  # diagnostics only: no OGBench env evaluation
    _, records, stdout = run_and_resume(path, ["--dataset", str(dataset), *OFFLINE], OFFLINE_RESUME,
                                        PYTHONPATH=str(hide))
    assert "| bc coef" not in stdout and [r["gradient_steps"] for r in records] == [0, 2, 4]


@pytest.mark.slow  # a fork's tiny run and its resume
def test_collector_learner_with_a_third_learner(tmp_path):
    """A fourth agent, mid_learner, trains on the collector's batches and is evaluated beside the others."""
    path = fork(tmp_path / "fork", "crl_collector_learner.py", "crl_three_learners.py", [
        ('AGENTS = ("collector", "deep_learner", "shallow_learner")',
         'AGENTS = ("collector", "deep_learner", "shallow_learner", "mid_learner")'),
        ("acts (a positive multiple of 4)\"\"\"\n# SHARED BLOCK: network flags",
         'acts (a positive multiple of 4)"""\n    mid_learner_depth: int = 16\n    """depth of the third learner"""\n'
         "# SHARED BLOCK: network flags"),
    ])
    depths = ["--collector-depth", "4", "--deep-learner-depth", "4", "--shallow-learner-depth", "4",
              "--mid-learner-depth", "4"]
    online = ONLINE[:ONLINE.index("--depth")] + ONLINE[ONLINE.index("--depth") + 2:]  # no --depth flag here
    run_dir, records, stdout = run_and_resume(path, online + depths, ONLINE_RESUME)
    assert "time at goal (collector/deep/shallow/mid)" in stdout
    assert all(f"mid_learner/{name}" in r for r in records[1:] for name in ("eval/time_at_goal", "losses/critic"))
    assert set(R.read_networks(str(run_dir / "checkpoint.msgpack"))[1]) == {"collector", "deep_learner",
                                                                             "shallow_learner", "mid_learner"}


def test_crl_runs_names_no_metric_state_field_or_script_flag():
    """crl_runs.py never reads a metric, a field of a training state, agent or buffer, or an Args field
    that RunArgs does not declare (as an attribute or a getattr name): what it needs is passed in."""
    import crl_collector_learner
    import crl_depth
    import crl_depth_offline

    scripts = (crl_depth, crl_depth_offline, crl_collector_learner)
    source = open(os.path.join(ROOT, "crl_runs.py")).read()
    tree = ast.parse(source)
    run_flags = {f.name for f in dataclasses.fields(R.RunArgs)}
    script_flags = {f.name for m in scripts for f in dataclasses.fields(m.Args)} - run_flags
    fields = {f.name for m in scripts for cls in (m.TrainState, m.Agent, m.Buffer) for f in dataclasses.fields(cls)}
    metric_shaped = re.compile(r"[a-z_]+(/[a-z_]+)+")
    metrics = {node.value for m in scripts for node in ast.walk(ast.parse(open(m.__file__).read()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and metric_shaped.fullmatch(node.value)}
    assert {"losses/critic", "losses/alpha", "eval/time_at_goal", "train/params_finite"} <= metrics
    names = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert not [name for name in names if metric_shaped.fullmatch(name)]
    assert not [name for name in metrics if name in source]
    attributes = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)]
    assert not fields & set(attributes), fields & set(attributes)
    def is_args(node):  # args, self.args, or self inside RunArgs
        return (isinstance(node, ast.Name) and node.id == "args"
                or isinstance(node, ast.Attribute) and node.attr == "args")

    run_args = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RunArgs")
    read = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and is_args(node.value)]
    read += [node.attr for node in ast.walk(run_args) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Name) and node.value.id == "self"]
    read += [node.args[1].value for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(
        node.func, "id", None) == "getattr" and is_args(node.args[0]) and isinstance(node.args[1], ast.Constant)]
    assert read and set(read) <= run_flags and not script_flags & set(read), set(read) - run_flags


@pytest.mark.parametrize("module", ["crl_plots.py", "crl_datasets.py", "crl_estimate.py", "crl_kernels.py"])
def test_other_modules_take_what_they_need_as_arguments(module):
    """crl_plots.py, crl_datasets.py, crl_estimate.py and crl_kernels.py read no script's Args (no `args` at all; crl_plots.py
    reads its own CriticPlotArgs flags, which crl_depth.py's Args inherits), name
    no metric, no field of a training state, agent or buffer, and no script flag (crl_datasets.py: but
    for the keys and fields of its own file format, which share names with offline flags and buffer fields)."""
    import crl_collector_learner
    import crl_datasets
    import crl_depth
    import crl_depth_offline

    scripts = (crl_depth, crl_depth_offline, crl_collector_learner)
    tree = ast.parse(open(os.path.join(ROOT, module)).read())
    import crl_plots

    script_flags = ({f.name for m in scripts for f in dataclasses.fields(m.Args)}  # less the modules' own
                    - {f.name for f in dataclasses.fields(crl_plots.CriticPlotArgs)})
    fields = {f.name for m in scripts for cls in (m.TrainState, m.Agent, m.Buffer) for f in dataclasses.fields(cls)}
    names = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    own = set(crl_datasets.CRL_KEYS) | set(crl_datasets.OfflineData._fields) if module == "crl_datasets.py" else set()
    assert "collector_depth" in script_flags and "num_columns" in script_flags and "agent" in fields
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Name, ast.arg)) and getattr(n, "id", getattr(
        n, "arg", None)) == "args"]
    assert not [name for name in names if re.fullmatch(r"[a-z_]+(/[a-z_]+)+", name)]
    assert not (names & script_flags) - own, (names & script_flags) - own
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not (fields & attributes) - own, (fields & attributes) - own
