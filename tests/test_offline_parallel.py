"""--num-seeds for crl_depth_offline.py: the agent, key and counters get a leading seed axis and the
epoch, diagnostics and evaluation are vmapped over it, with the dataset shared by all seeds (one
copy, not mapped). Each seed of a multi-seed run must be the run that --seed alone gives, up to
floating-point rounding: the batched (vmapped) matmuls add in another order, so losses agree to
~0.1% after one epoch, not bit for bit; before any training step (epoch 0) they agree exactly. A
multi-seed run resumed from its checkpoint ends bit-identical to an uninterrupted one. The dataset
is tests/run_dir_helpers.py's tiny OGBench-format file with the ogbench package hidden (no
env evaluation); the subprocesses share a persistent JAX compilation cache."""

import glob
import os
import shutil
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

import crl_depth_offline as O

pytest.register_assert_rewrite("tests.run_dir_helpers")
from tests.run_dir_helpers import (assert_same_run, assert_seeds_are_single_runs, error_lines,  # noqa: E402
                                   flat_params, load_params, make_dataset, no_ogbench_dir, read_records,
                                   run_line, run_script, subprocess_env, untimed)

pytestmark = pytest.mark.slow  # seeds and devices: runs compared with runs: python -m pytest tests/ -m slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "crl_depth_offline.py")
# 2 epochs of one relabelling round (2 SGD steps of 16) each, a checkpoint every epoch
TINY = ["--obs-dim", "5", "--goal-start", "0", "--goal-end", "3", "--num-gradient-steps", "4", "--eval-every", "2",
        "--num-sgd-steps", "2", "--batch-size", "16", "--width", "16", "--depth", "4", "--checkpoint-every", "1"]
# continuous training metrics compared across runs
COMPARED = ("losses/critic", "losses/actor", "losses/alpha", "critic/logsumexp", "actor/entropy", "actor/alpha",
            "actor/bc_mse", "offline/critic_loss", "offline/bc_mse", "offline/q_policy", "offline/q_data")
TIMING = ("charts/gradient_steps_per_s",)  # plus every time/* key


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(JAX cache dir, dir shadowing ogbench, the dataset)."""
    tmp = tmp_path_factory.mktemp("offline_parallel")
    return tmp / "jax_cache", no_ogbench_dir(tmp / "no_ogbench"), make_dataset(tmp / "antmaze-tiny-navigate-v0.npz")


def _subprocess(setup, cwd, *flags):
    cache, no_ogbench, _ = setup
    env = subprocess_env(cache, PYTHONPATH=str(no_ogbench))  # hides the optional ogbench package: no env evaluation
    proc = subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True, timeout=900, cwd=cwd,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _run(setup, tmp_path_factory, name, *flags, devices=1):
    cache, no_ogbench, dataset = setup
    tmp = tmp_path_factory.mktemp(name)
    return run_script([sys.executable, SCRIPT, "--dataset", str(dataset), *TINY, *flags, "--runs-dir",
                       str(tmp / "runs")], tmp, cache, devices, PYTHONPATH=str(no_ogbench))


def _untimed(records):
    return untimed(records, TIMING)


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    """--seed 1 and --seed 2, each alone."""
    return {seed: _run(setup, tmp_path_factory, f"seed{seed}", "--seed", str(seed)) for seed in (1, 2)}


@pytest.fixture(scope="module")
def two_seeds(setup, tmp_path_factory):
    """--num-seeds 2 (seeds 1 and 2 in one process)."""
    return _run(setup, tmp_path_factory, "seeds12", "--num-seeds", "2")


def _assert_same_run(records, reference, params, reference_params, other_seed_params):
    """Same run up to rounding: exact before training, the timings aside; same gradient steps and
    seed, losses within 0.2% after one epoch and 2% after two; final parameters within 1% of the
    reference and 50 times closer to it than to the run of another seed."""
    assert_same_run(records, reference, params, reference_params, other_seed_params, COMPARED,
                    ("gradient_steps", "seed"), lambda got, want: (_untimed([got]), _untimed([want])))


def test_two_seeds_in_one_process_equal_two_single_runs(single, two_seeds):
    run_dir, records, stdout = two_seeds
    assert "seeds 1, 2 in one process" in stdout and "(seeds: " in stdout
    assert os.path.basename(run_dir).startswith("antmaze-tiny-navigate-v0__crl_depth_offline__1-2__")
    assert_seeds_are_single_runs(run_dir, records, single, _assert_same_run)
    # the two seeds are different runs
    assert records[-1]["losses/critic"] != records[-2]["losses/critic"]
    # a single run keeps its names: seed in the run name, checkpoint.msgpack, a seed field per record
    assert os.path.basename(single[1][0]).startswith("antmaze-tiny-navigate-v0__crl_depth_offline__1__")
    assert [r["seed"] for r in single[2][1]] == [2, 2, 2]


def test_two_devices_equal_one_device(single, setup, tmp_path_factory):
    """--num-devices: each SGD batch split across 2 (forced CPU) devices, the dataset and networks
    replicated: the run of one device up to rounding."""
    run_dir, records, stdout = _run(setup, tmp_path_factory, "devices2", devices=2)
    assert "| 2 devices, batches split" in stdout
    _assert_same_run(records, single[1][1], load_params(os.path.join(run_dir, "checkpoint.msgpack")),
                     load_params(os.path.join(single[1][0], "checkpoint.msgpack")),
                     load_params(os.path.join(single[2][0], "checkpoint.msgpack")))
    # --num-devices 1 on the same 2-device machine: one device, no split
    run_dir, records, stdout = _run(setup, tmp_path_factory, "devices1", "--num-devices", "1", devices=2)
    assert "batches split" not in run_line(stdout) and run_line(stdout).endswith("backend cpu")
    assert _untimed(records) == _untimed(single[1][1])
    # a batch that does not split evenly: refused before any work
    env = subprocess_env(setup[0], PYTHONPATH=str(setup[1]), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, SCRIPT, "--dataset", str(setup[2]), *TINY, "--batch-size", "15"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path_factory.mktemp("odd"), env=env)
    assert proc.returncode == 2 and error_lines(proc.stderr) == [
        "error: --batch-size (15) must be a multiple of the number of devices (2, all local ones; set --num-devices)"]


def test_bfloat16_run_is_the_float32_run_rounded(single, setup, tmp_path_factory):
    """--compute-dtype bfloat16 end to end: the matmuls really change (epoch-0 diagnostics differ from
    float32's), the losses stay finite and close, and the final parameters are far closer to the
    float32 run of the same seed than to another seed's."""
    run_dir, records, stdout = _run(setup, tmp_path_factory, "bf16", "--compute-dtype", "bfloat16")
    assert run_line(stdout).endswith("| bfloat16 matmuls")
    reference = single[1][1]
    assert records[0]["offline/critic_loss"] != reference[0]["offline/critic_loss"]
    for got, want in zip(records, reference):
        trained = ("losses/critic", "losses/actor") if got["epoch"] else ()
        for name in ("offline/critic_loss", "offline/bc_mse") + trained:
            assert np.isfinite(got[name])
            np.testing.assert_allclose(got[name], want[name], rtol=5e-2, err_msg=name)
    p, ref, other = (flat_params(load_params(os.path.join(d, "checkpoint.msgpack")))
                     for d in (run_dir, single[1][0], single[2][0]))
    distance, seeds_apart = np.linalg.norm(p - ref), np.linalg.norm(other - ref)
    assert 0 < distance < 2e-3 * np.linalg.norm(ref) and distance < seeds_apart / 100, (distance, seeds_apart)


def test_state_has_a_seed_axis_and_no_dataset(two_seeds, single):
    for run_dir, num_seeds in ((two_seeds[0], 2), (single[1][0], 1)):
        blob = open(os.path.join(run_dir, "state.msgpack"), "rb").read()
        restored = flax.serialization.msgpack_restore(blob[48:])
        assert restored["header"]["num_seeds"] == num_seeds and restored["header"]["version"] == O.STATE_VERSION == 4
        ts = restored["state"]["ts"]
        assert set(ts) == {"agent", "key", "gradient_steps"}  # not the dataset
        assert ts["gradient_steps"].tolist() == [4] * num_seeds and ts["key"].shape == (num_seeds, 2)
        leaves = flax.traverse_util.flatten_dict(ts["agent"], sep="/")
        assert all(np.shape(x)[0] == num_seeds for x in leaves.values() if x is not None)
        assert restored["state"]["key_eval"].shape == (num_seeds, 2)


def test_two_seed_run_resumed_equals_an_uninterrupted_one(two_seeds, setup, tmp_path):
    """Stopped after epoch 1 (--num-gradient-steps 2), then resumed to epoch 2: bit-identical."""
    stdout = _subprocess(setup, tmp_path, "--dataset", str(setup[2]), *TINY, "--num-seeds", "2",
                         "--num-gradient-steps", "2", "--runs-dir", str(tmp_path / "runs"))
    assert "epoch 1/1" in stdout
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    stdout = _subprocess(setup, tmp_path, "--resume", run_dir, "--num-gradient-steps", "4")
    assert "at epoch 1 (2 gradient steps)" in stdout and "epoch 2/2" in stdout
    straight = two_seeds[0]
    for name in ("state.msgpack", "checkpoint_seed1.msgpack", "checkpoint_seed2.msgpack"):
        assert open(os.path.join(run_dir, name), "rb").read() == open(os.path.join(straight, name), "rb").read(), name
    assert _untimed(read_records(run_dir)) == _untimed(read_records(straight))


def test_resume_refuses_another_num_seeds(two_seeds, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ogbench", None)  # as in the subprocesses: no OGBench env
    run_dir = tmp_path / "run"
    shutil.copytree(two_seeds[0], run_dir)
    argv = ["--resume", str(run_dir), "--num-seeds", "1"]
    with pytest.raises(SystemExit) as exit_info:
        O.main(O.cli(argv))
    assert exit_info.value.code == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "--num-seeds 1 conflicts with the run's 2" in errors[0], errors


def test_num_seeds_must_be_positive():
    assert O.validate_args(O.Args(dataset="d.npz", num_seeds=0)) == "--num-seeds must be positive (got 0)"
    assert O.validate_args(O.Args(dataset="d.npz", num_seeds=3)) is None


def test_num_devices_checked():
    num_local = len(jax.local_devices())
    assert O.validate_args(O.Args(dataset="d.npz", num_devices=num_local + 1)) == (
        f"--num-devices must be in [0, {num_local}] (0: all {num_local} local devices; got {num_local + 1})")
    assert O.validate_args(O.Args(dataset="d.npz", num_devices=-1)).startswith("--num-devices must be in")
    assert O.validate_args(O.Args(dataset="d.npz", num_devices=num_local)) is None


class _Space:
    def __init__(self, n):
        self.shape = (n,)


class _FakeOGBenchEnv:
    """Stands in for an OGBench env (the package is optional): observations of 5 features, actions of
    3, goal [task_id, 0, 0, 0, 0], success at step 2 * task_id; records its reset seeds and actions."""

    def __init__(self):
        self.unwrapped = type("U", (), {"task_infos": [{}] * 5})()
        self.observation_space, self.action_space = _Space(5), _Space(3)
        self.spec = type("S", (), {"max_episode_steps": 6})()
        self.seeds, self.actions = [], []

    def reset(self, seed=None, options=None):
        self.task, self.t = options["task_id"], 0
        self.seeds.append(seed)
        return np.zeros(5), {"goal": np.array([self.task, 0.0, 0.0, 0.0, 0.0])}

    def step(self, action):
        self.t += 1
        self.actions.append(np.array(action))
        success = self.t == 2 * self.task
        return np.array([self.t, 0.0, 0.0, 0.0, 0.0]), 0.0, success, False, {"success": float(success)}


def test_ogbench_evaluation_runs_each_seed_in_turn(setup, tmp_path, monkeypatch):
    """With OGBench envs (gym: not vmapped) every seed is evaluated in turn with its own actor and
    evaluation key: seed 2 of a 2-seed run sees exactly what a --seed 2 run sees before training."""
    made = []

    def fake_envs(data, num_envs):
        made.append([_FakeOGBenchEnv() for _ in range(num_envs)])
        return made[-1], None

    monkeypatch.setattr(O, "make_ogbench_envs", fake_envs)
    flags = ["--dataset", str(setup[2]), *TINY, "--num-gradient-steps", "2", "--num-eval-envs", "2"]
    for name, extra in (("both", ["--num-seeds", "2"]), ("seed2", ["--seed", "2"])):
        argv = [*flags, *extra, "--runs-dir", str(tmp_path / name)]
        O.main(O.cli(argv))
    (run_dir,) = glob.glob(str(tmp_path / "both" / "*"))
    records = read_records(run_dir)
    assert [(r["epoch"], r["seed"]) for r in records] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    # tasks 1 and 2: at the goal (and terminated) after 2 and 4 steps
    assert all(r["eval/episode_length"] == 3 and r["eval/success_any"] == 1 for r in records)
    both, alone = made
    # per evaluation: seed 1's episodes, then seed 2's
    for steps, env_both, env_alone in zip((2, 4), both, alone):
        assert len(env_both.seeds) == 2 * len(env_alone.seeds) == 4
        assert env_both.seeds[1] == env_alone.seeds[0] != env_both.seeds[0]  # seed 2's key at epoch 0
        # seed 2's untrained actor, exactly
        np.testing.assert_array_equal(env_both.actions[steps : 2 * steps], env_alone.actions[:steps])
        assert not np.array_equal(env_both.actions[:steps], env_alone.actions[:steps])
