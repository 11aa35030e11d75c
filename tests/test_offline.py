"""crl_depth_offline.py: both dataset formats load into the buffer layout, relabelling never crosses an
episode boundary of the dataset, bad input is refused with one line and exit status 2, OGBench's
evaluation loop counts success as it should, and a tiny end-to-end run trains on a buffer saved by a
tiny `crl_depth.py --save-buffer` run."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import crl_datasets as D
import crl_depth_offline as O

pytest.register_assert_rewrite("tests.run_dir_helpers")
from tests.run_dir_helpers import load_params  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "crl_depth_offline.py")
# crl_depth.py: 4 envs x 300 steps with 20-step episodes; the buffer keeps the latest 60 per env
ONLINE_TINY = ["--env-id", "reacher", "--num-envs", "4", "--episode-length", "20", "--num-eval-envs", "2",
               "--total-env-steps", "1200", "--num-epochs", "2", "--unroll-length", "10", "--num-sgd-steps", "2",
               "--batch-size", "16", "--max-replay-size", "60", "--min-replay-size", "20", "--width", "16",
               "--depth", "4"]
OFFLINE_TINY = ["--num-gradient-steps", "8", "--eval-every", "4", "--num-sgd-steps", "2", "--batch-size", "16",
                "--width", "16", "--num-eval-envs", "2"]


def _args(dataset, **kw):
    return O.Args(**{**dict(dataset=str(dataset), batch_size=4, num_sgd_steps=2, eval_every=2, num_gradient_steps=4),
                     **kw})


def _run(*flags, cwd, timeout=120):
    return subprocess.run([sys.executable, SCRIPT, *flags], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# --- synthetic datasets ---------------------------------------------------------------------------
def _crl_buffer(path, num_steps=30, num_envs=3, state_dim=10, action_dim=2, **override):
    """A buffer.npz with the documented keys, reacher layout; episode id of (t, e) = (t + e) // 10."""
    t = np.arange(num_steps)[:, None] + np.arange(num_envs)[None, :]
    rng = np.random.default_rng(0)
    files = dict(format="crl_depth_buffer", version=1, env_id="reacher",
                 state=rng.normal(size=(num_steps, num_envs, state_dim)).astype(np.float32),
                 action=rng.uniform(-1, 1, size=(num_steps, num_envs, action_dim)).astype(np.float32),
                 episode_id=(t // 10).astype(np.int32), obs_dim=10, goal_start=4, goal_end=7, episode_length=10)
    files.update(override)
    np.savez(path, **files)
    return files


LENGTHS = [5, 9, 7, 12, 6, 8, 10, 4, 11, 7]  # episode lengths of the OGBench-format datasets


def _ogbench_raw(path, lengths=LENGTHS, extra_dim=2):
    """OGBench's file layout: per episode [s0..s_L] (its last action unused) with terminals = 1 on the
    last step. Observation features: (episode, t in episode, global index, noise...)."""
    rng = np.random.default_rng(1)
    episode = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
    t = np.concatenate([np.arange(n) for n in lengths])
    index = np.arange(len(t))
    obs = np.concatenate([np.stack([episode, t, index], 1), rng.normal(size=(len(t), extra_dim))], 1)
    terminals = np.concatenate([np.eye(n)[-1] for n in lengths])
    actions = rng.uniform(-1, 1, size=(len(t), 3))
    np.savez(path, observations=obs.astype(np.float32), actions=actions.astype(np.float32),
             terminals=terminals.astype(np.float32))
    return obs.astype(np.float32), actions.astype(np.float32), terminals


# --- loading ---------------------------------------------------------------------------------------
def test_load_crl_buffer(tmp_path):
    files = _crl_buffer(tmp_path / "buffer.npz")
    data = O.read_dataset(_args(tmp_path / "buffer.npz"))
    assert data.kind == "crl" and data.env_id == "reacher"
    assert (data.obs_dim, data.goal_start, data.goal_end) == (10, 4, 7)
    assert data.window == 10 and data.episode_length == 10 and data.num_dropped == 0
    np.testing.assert_array_equal(data.state, files["state"])
    np.testing.assert_array_equal(data.action, files["action"])
    np.testing.assert_array_equal(data.episode_id, files["episode_id"])
    same = files["episode_id"][1:] == files["episode_id"][:-1]
    assert data.num_transitions == int(same.sum())


def test_load_ogbench_raw_layout(tmp_path):
    obs, actions, _ = _ogbench_raw(tmp_path / "antmaze-tiny-navigate-v0.npz")
    data = O.read_dataset(_args(tmp_path / "antmaze-tiny-navigate-v0.npz", obs_dim=5, goal_start=0, goal_end=3,
                                num_columns=3))
    n = len(obs)
    assert data.kind == "ogbench" and data.env_id == "antmaze-tiny-navigate-v0"
    assert data.window == max(LENGTHS)  # the longest episode
    length = n // 3
    assert data.state.shape == (length, 3, 5) and data.num_dropped == n - 3 * length
    # column c holds steps c*length ... (c+1)*length - 1 in order
    np.testing.assert_array_equal(data.state[:, :, 2], np.arange(3 * length).reshape(3, length).T)
    np.testing.assert_array_equal(data.action, np.swapaxes(actions[: 3 * length].reshape(3, length, 3), 0, 1))
    # episode ids from the terminals are the episodes written into the observations
    np.testing.assert_array_equal(data.episode_id, data.state[:, :, 0].astype(np.int32))
    # default columns: min(256, steps // window)
    assert O.read_dataset(_args(tmp_path / "antmaze-tiny-navigate-v0.npz", obs_dim=5, goal_start=0,
                                goal_end=3)).state.shape[1] == n // max(LENGTHS)


def test_load_ogbench_with_next_observations_and_timeouts(tmp_path):
    """D4RL-style rows (s, a, s'): ends from terminals, from timeouts, and from a break s' != next s;
    each episode's final s' becomes its last step (a goal, never a source)."""
    lengths = [4, 6, 5]
    states = [np.stack([np.full(n + 1, i), np.arange(n + 1)], 1) for i, n in enumerate(lengths)]
    obs = np.concatenate([s[:-1] for s in states]).astype(np.float32)
    next_obs = np.concatenate([s[1:] for s in states]).astype(np.float32)
    ends = np.cumsum(lengths) - 1
    terminals, timeouts = np.zeros(len(obs)), np.zeros(len(obs))
    terminals[ends[0]] = 1  # episode 0 ends by termination, episode 1 by timeout, episode 2 by the data's end
    timeouts[ends[1]] = 1
    actions = np.random.default_rng(0).uniform(-1, 1, size=(len(obs), 2)).astype(np.float32)
    np.savez(tmp_path / "d.npz", observations=obs, next_observations=next_obs, actions=actions,
             terminals=terminals, timeouts=timeouts)
    data = O.read_dataset(_args(tmp_path / "d.npz", obs_dim=2, goal_start=0, goal_end=2, num_columns=1, batch_size=2))
    expected = np.concatenate(states)  # every episode with its final state
    np.testing.assert_array_equal(data.state[:, 0], expected)
    np.testing.assert_array_equal(data.episode_id[:, 0], expected[:, 0])
    rows = np.concatenate([np.arange(n) + sum(lengths[:i]) + i for i, n in enumerate(lengths)])
    np.testing.assert_array_equal(data.action[rows, 0], actions)
    assert data.num_transitions == sum(lengths)
    # a break in the chain without any terminal or timeout also ends an episode
    np.savez(tmp_path / "e.npz", observations=obs, next_observations=next_obs, actions=actions,
             terminals=np.zeros(len(obs)))
    data = O.read_dataset(_args(tmp_path / "e.npz", obs_dim=2, goal_start=0, goal_end=2, num_columns=1, batch_size=2))
    np.testing.assert_array_equal(data.episode_id[:, 0], expected[:, 0])


def test_relabelling_respects_dataset_episodes(tmp_path):
    _ogbench_raw(tmp_path / "d.npz")
    data = O.read_dataset(_args(tmp_path / "d.npz", obs_dim=5, goal_start=0, goal_end=3, num_columns=3,
                                window_length=15))
    buf = O.offline_buffer(data)
    window = 15
    for i in range(10):
        d = O.buffer_sample(buf, jax.random.PRNGKey(i), window, gamma=0.9, goal_start=0, goal_end=3)
        state, goal, valid, k = (np.asarray(d[n]) for n in ("state", "goal", "valid", "k"))
        v = valid.astype(bool)
        assert v.sum() > 0
        assert np.all(goal[v, 0] == state[v, 0])  # the same episode of the dataset
        assert np.all(goal[v, 1] > state[v, 1])  # strictly later in it
        np.testing.assert_array_equal(goal[v, 2] - state[v, 2], k[v])  # the dataset's step k ahead
        # invalid exactly where the window holds no later step of the episode (an episode's last step included)
        index = state[:, 2].reshape(3, window).astype(int)
        episode = state[:, 0].reshape(3, window)
        has_future = np.zeros_like(episode, dtype=bool)
        has_future[:, :-1] = episode[:, 1:] == episode[:, :-1]
        np.testing.assert_array_equal(valid.reshape(3, window), has_future)
        assert np.all(np.diff(index, axis=1) == 1)  # consecutive dataset steps
        batches = O.shuffle_into_batches(jax.random.PRNGKey(100 + i), d, 4, 8)
        b_state, b_goal = np.asarray(batches["state"]), np.asarray(batches["goal"])
        assert np.all(b_goal[..., 0] == b_state[..., 0]) and np.all(b_goal[..., 1] > b_state[..., 1])


# --- bad input -------------------------------------------------------------------------------------
def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _bad_cases(tmp):
    """(file, overrides, words the message must contain)."""
    obs = np.zeros((40, 4), np.float32)
    act = np.zeros((40, 2), np.float32)
    term = (np.arange(40) % 10 == 9).astype(np.float32)
    og = dict(obs_dim=4, goal_start=0, goal_end=2)
    return [
        (tmp / "missing.npz", {}, "no such file"),
        (_write(tmp / "keys.npz", foo=np.zeros(3)), {}, "neither a crl_depth.py buffer"),
        (_write(tmp / "noterm.npz", observations=obs, actions=act), og, "missing key(s) terminals of an OGBench"),
        (_write(tmp / "crlkeys.npz", format="crl_depth_buffer", env_id="reacher"), {}, "missing key(s) version"),
        (_write(tmp / "rows.npz", observations=obs, actions=act[:30], terminals=term), og,
         "shape mismatch: actions (30, 2) does not match observations (40, 4)"),
        (_write(tmp / "dim.npz", observations=obs, actions=act, terminals=term), dict(og, obs_dim=5),
         "shape mismatch: --obs-dim 5 but the dataset's observations have 4 features"),
        (_write(tmp / "noslice.npz", observations=obs, actions=act, terminals=term), {}, "needs --obs-dim"),
        (_write(tmp / "few.npz", observations=obs[:8], actions=act[:8], terminals=term[:8]), dict(og, batch_size=8),
         "too few transitions: the dataset has 7 steps"),
        (_write(tmp / "range.npz", observations=obs, actions=act + 1.5, terminals=term), og, "actions outside [-1, 1]"),
        (_write(tmp / "pickled.npz", observations=np.array([{}, 1], dtype=object)), {}, "not a readable .npz"),
        (_write(tmp / "nan.npz", observations=obs * np.nan, actions=act, terminals=term), og, "non-finite"),
        (_text(tmp / "table.csv", "observations,actions\n0,1\n"), {}, "table.csv: not an .npz file"),
        (_text(tmp / "empty.npz", ""), {}, "empty.npz: not an .npz file"),
    ]


def _text(path, text):
    path.write_text(text)
    return path


def test_load_dataset_rejects_bad_input(tmp_path):
    _crl_buffer(tmp_path / "feat.npz", state_dim=9)
    _crl_buffer(tmp_path / "other.npz")
    cases = _bad_cases(tmp_path) + [
        (tmp_path / "feat.npz", {}, "shape mismatch between dataset and env: the buffer has 9 state features"),
        (tmp_path / "other.npz", dict(env_id="ant"), "--env-id ant does not match the buffer's env reacher"),
        (tmp_path / "other.npz", dict(num_columns=2), "--num-columns applies to OGBench datasets only"),
        (tmp_path / "other.npz", dict(batch_size=8, num_sgd_steps=4, eval_every=4),
         "larger than what a relabelling round yields: columns x (window - 1) = 27"),
    ]
    for path, override, message in cases:
        with pytest.raises(D.DatasetError) as info:
            O.read_dataset(_args(path, **override))
        assert message in str(info.value) and "\n" not in str(info.value), (path, str(info.value))


def test_env_shape_check(tmp_path):
    _crl_buffer(tmp_path / "b.npz", action_dim=3)
    data = O.read_dataset(_args(tmp_path / "b.npz"))
    D.check_env_shapes(data, obs_size=13, action_size=3)
    with pytest.raises(D.DatasetError, match="shape mismatch between dataset and env reacher"):
        D.check_env_shapes(data, obs_size=13, action_size=2)


@pytest.mark.parametrize("override,message", [
    (dict(dataset=""), "--dataset is required"),
    (dict(depth=6), "--depth must be a positive multiple of 4 (got 6)"),
    (dict(eval_every=3), "--eval-every (3) must be a multiple of --num-sgd-steps (2)"),
    (dict(num_gradient_steps=5), "--num-gradient-steps (5) must be a multiple of --eval-every (2)"),
    (dict(bc_coef=-1.0), "--bc-coef must be >= 0"),
    (dict(goal_start=0), "--goal-start and --goal-end go together"),
    (dict(batch_size=1), "--batch-size must be at least 2"),
])
def test_validate_args_rejects(override, message):
    override = dict(override)
    error = O.validate_args(_args(override.pop("dataset", "d.npz"), **override))
    assert error is not None and message in error and "\n" not in error
    assert O.validate_args(_args("d.npz")) is None and O.validate_args(O.Args(dataset="d.npz")) is None


def test_cli_bad_input_exit_2_one_line_nothing_written(tmp_path):
    _write(tmp_path / "keys.npz", foo=np.zeros(3))
    _write(tmp_path / "few.npz", observations=np.zeros((8, 4)), actions=np.zeros((8, 2)),
           terminals=np.zeros(8))
    _crl_buffer(tmp_path / "act3.npz", action_dim=3)  # reacher has 2 actuators: found once the env is built
    for flags, message in [
        (["--dataset", "missing.npz"], "error: --dataset missing.npz: no such file"),
        (["--dataset", "keys.npz"], "error: --dataset keys.npz: neither a crl_depth.py buffer"),
        (["--dataset", "few.npz", "--obs-dim", "4", "--goal-start", "0", "--goal-end", "2"],
         "error: too few transitions: the dataset has 7 steps with a later step of the same episode"),
        (["--dataset", "act3.npz", "--batch-size", "4", "--num-sgd-steps", "2", "--eval-every", "2",
          "--num-gradient-steps", "2"],
         "error: shape mismatch between dataset and env reacher: the env has observations of 13 and actions of 2"),
        (["--depth", "6", "--dataset", "keys.npz"], "error: --depth must be a positive multiple of 4 (got 6)"),
        (["--num-epochs", "0", "--dataset", "keys.npz"], "error: --num-epochs must be positive (got 0)"),
        (["--dataset", str(_text(tmp_path / "table.csv", "observations,actions\n0,1\n"))],
         f"error: --dataset {tmp_path / 'table.csv'}: not an .npz file"),
    ]:
        proc = _run(*flags, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
        assert proc.returncode == 2, (flags, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith(message), (flags, proc.stderr)
        assert not (tmp_path / "runs").exists()


def test_help_documents_every_flag(tmp_path):
    proc = _run("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for field in dataclasses.fields(O.Args):
        flag = "--" + field.name.replace("_", "-")
        assert flag in proc.stdout or "--no-" + field.name.replace("_", "-") in proc.stdout, flag
    assert "--bc-coef" in proc.stdout and "docs/offline.md" in proc.stdout


# --- OGBench evaluation (with stand-in envs: the ogbench package is optional) ---------------------------
class _Space:
    def __init__(self, n):
        self.shape = (n,)


class _FakeOGBenchEnv:
    """Reaches its goal at step 2 * task_id, whatever the actions, and then terminates (OGBench's
    default); observations [x, 0, 0], goals [task_id, 7, 7]; truncates after 50 steps."""

    def __init__(self):
        self.unwrapped = dataclasses.make_dataclass("U", [("task_infos", list)])([{}] * 5)
        self.observation_space, self.action_space = _Space(3), _Space(2)
        self.received = []

    def reset(self, seed=None, options=None):
        self.task, self.t, self.seed = options["task_id"], 0, seed
        self.received.append([])
        return np.zeros(3), {"goal": np.array([self.task, 7.0, 7.0])}

    def step(self, action):
        self.t += 1
        self.received[-1].append(np.array(action))
        success = self.t == 2 * self.task
        return np.array([self.t, 0.0, 0.0]), 0.0, success, self.t >= 50, {"success": float(success)}


def test_ogbench_evaluation_loop():
    envs = [_FakeOGBenchEnv() for _ in range(7)]  # tasks 1, 2, 3, 4, 5, 1, 2
    args = _args("d.npz", obs_dim=3, goal_start=0, goal_end=1, episode_length=8)
    nets = O.make_networks(4, 4, 8, 4, 2)
    params = nets.actor.init(jax.random.PRNGKey(0), np.zeros((1, 4), np.float32))
    out = O.make_ogbench_evaluate(args, envs, nets)(params, jax.random.PRNGKey(1))
    # success at steps 2, 4, 6, 8 for tasks 1-4; task 5 (step 10) runs into the 8-step limit
    assert [e.task for e in envs] == [1, 2, 3, 4, 5, 1, 2]
    assert len({e.seed for e in envs}) == 7
    steps = np.array([2, 4, 6, 8, 8, 2, 4])
    assert out["eval/episode_length"] == pytest.approx(steps.mean())
    assert out["eval/success_any"] == pytest.approx(6 / 7) and out["eval/time_at_goal"] == pytest.approx(6 / 7)
    # the actor saw [observation, goal slice]: the first action of env 3 (task 4) is tanh(mean([0, 0, 0, 4]))
    expected = np.tanh(np.asarray(nets.actor.apply(params, np.array([[0.0, 0.0, 0.0, 4.0]], np.float32))[0]))[0]
    np.testing.assert_allclose(envs[3].received[0][0], expected, rtol=1e-5, atol=1e-6)
    assert [len(e.received[0]) for e in envs] == list(steps)


def test_without_ogbench_a_note_and_no_envs(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ogbench", None)  # import ogbench -> ImportError
    _ogbench_raw(tmp_path / "d.npz")
    data = O.read_dataset(_args(tmp_path / "d.npz", obs_dim=5, goal_start=0, goal_end=3))
    envs, note = O.make_ogbench_envs(data, 2)
    assert envs is None and "ogbench package is not installed" in note and "\n" not in note


# --- end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_buffer(tmp_path_factory):
    runs = tmp_path_factory.mktemp("online") / "runs"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "crl_depth.py"), *ONLINE_TINY, "--runs-dir", str(runs),
                           "--save-buffer"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list(runs.iterdir())
    return run_dir / "buffer.npz"


@pytest.mark.slow  # a reacher run of crl_depth.py saves the buffer
def test_save_buffer_writes_documented_npz(saved_buffer):
    with np.load(saved_buffer, allow_pickle=False) as f:
        files = {k: f[k] for k in f.files}
    assert set(files) == set(D.CRL_KEYS)
    assert str(files["format"]) == "crl_depth_buffer" and int(files["version"]) == 1
    assert str(files["env_id"]) == "reacher" and int(files["episode_length"]) == 20
    assert (int(files["obs_dim"]), int(files["goal_start"]), int(files["goal_end"])) == (10, 4, 7)
    assert files["state"].shape == (60, 4, 10) and files["action"].shape == (60, 4, 2)
    assert np.all(np.isfinite(files["state"])) and np.all(np.abs(files["action"]) <= 1)
    # oldest first: each env ran 300 steps of 20-step episodes (reacher never terminates), the buffer
    # keeps steps 240..299, so the episode ids are 12, 13, 14 in runs of 20
    np.testing.assert_array_equal(files["episode_id"], np.repeat((np.arange(240, 300) // 20)[:, None], 4, 1))
    # an episode's first state is a reset: joint angles within 0.1 of zero, so cos >= cos(0.1)
    starts = files["state"][::20]
    assert np.all(starts[..., :2] >= np.cos(0.1) - 1e-6)


@pytest.mark.slow  # on the reacher run's saved buffer
def test_offline_end_to_end_on_saved_buffer(saved_buffer, tmp_path):
    proc = _run("--dataset", str(saved_buffer), *OFFLINE_TINY, "--depth", "8", "--runs-dir", str(tmp_path / "runs"),
                cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert run_dir.name.startswith("reacher__crl_depth_offline__1__")
    args = json.loads((run_dir / "args.json").read_text())
    assert args["depth"] == 8 and args["env_id"] == "reacher" and args["dataset_format"] == "crl"
    assert (args["window_length"], args["num_columns"], args["episode_length"]) == (20, 4, 20)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2] and [r["gradient_steps"] for r in lines] == [0, 4, 8]
    for record in lines:
        for name, value in record.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
        assert 0 <= record["eval/time_at_goal"] <= 20
    for name in ("eval/time_at_goal", "eval/success_any", "eval/dist", "offline/critic_accuracy", "offline/bc_mse",
                 "offline/q_policy", "offline/q_data", "losses/critic", "losses/actor", "actor/bc_mse",
                 "critic/categorical_accuracy", "buffer/valid_fraction", "charts/gradient_steps_per_s"):
        assert name in lines[-1], name
    assert 0 < lines[-1]["buffer/valid_fraction"] < 1  # episode ends are in the windows, never trained on
    assert "epoch 2/2" in proc.stdout and "time at goal" in proc.stdout and "not installed" not in proc.stdout
    ckpt = load_params(run_dir / "checkpoint.msgpack")
    assert set(ckpt) == {"actor", "critic", "log_alpha"} and set(ckpt["critic"]) == {"phi", "psi"}
    assert ckpt["actor"]["params"]["trunk"]["blocks"]["Dense_0"]["kernel"].shape == (2, 16, 16)  # depth 8


def test_offline_end_to_end_ogbench_without_package(tmp_path):
    _ogbench_raw(tmp_path / "antmaze-tiny-navigate-v0.npz", lengths=[12] * 20)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "no_ogbench"))  # the package is not in the venv either
    (tmp_path / "no_ogbench").mkdir()
    (tmp_path / "no_ogbench" / "ogbench.py").write_text("raise ImportError('ogbench is not installed here')\n")
    proc = subprocess.run([sys.executable, SCRIPT, "--dataset", "antmaze-tiny-navigate-v0.npz", "--obs-dim", "5",
                           "--goal-start", "0", "--goal-end", "3", *OFFLINE_TINY, "--depth", "4", "--runs-dir",
                           str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ogbench package is not installed") == 1
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert run_dir.name.startswith("antmaze-tiny-navigate-v0__crl_depth_offline__1__")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert not any(k.startswith("eval/") for r in lines for k in r)  # no placeholder evaluation
    assert all(math.isfinite(r["offline/critic_accuracy"]) for r in lines)
    args = json.loads((run_dir / "args.json").read_text())
    assert (args["dataset_format"], args["window_length"], args["num_columns"]) == ("ogbench", 12, 20)
    assert (run_dir / "checkpoint.msgpack").exists()
