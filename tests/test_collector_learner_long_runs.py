"""Long runs of crl_collector_learner.py (docs/long_runs.md, as tests/test_long_runs.py for
crl_depth.py): a run of the three agents SIGKILLed mid-checkpoint and resumed ends bit-identical to
an uninterrupted one; the divergence guard stops on a NaN in one learner with the last good
checkpoint intact; bad flags, corrupt or mismatched checkpoints and unwritable directories are
refused with one line, exit status 2, nothing on disk changed. The subprocesses share a persistent
JAX compilation cache, so only the first one pays the full compile."""

import os
import subprocess
import sys

import flax
import numpy as np
import pytest

import crl_collector_learner as C
import crl_runs as R

pytest.register_assert_rewrite("tests.run_dir_helpers")
from tests.run_dir_helpers import (checksummed, edit_args, error_lines, metrics, npz_bytes, read_state,  # noqa: E402
                                   replace_state, resume_dir, right_magic_wrong_payload, snapshot, start_and_kill,
                                   subprocess_env, truncate)

pytestmark = pytest.mark.slow  # kill-and-resume and bad inputs of the collector's runs (crl_depth.py's in the default run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/test_collector_learner.py's tiny settings (the same programs, which the session's JAX cache then
# holds): 80 prefill env steps, then 4 epochs of 2 training steps of 40 env steps
TINY = ["--env-id", "point_u_maze", "--num-envs", "4", "--episode-length", "20", "--num-eval-envs", "2",
        "--total-env-steps", "400", "--num-epochs", "4", "--unroll-length", "10", "--num-sgd-steps", "2",
        "--batch-size", "16", "--max-replay-size", "60", "--min-replay-size", "20", "--width", "16",
        "--collector-depth", "4", "--deep-learner-depth", "8", "--shallow-learner-depth", "4",
        "--checkpoint-every", "1"]
TIMING = ("charts/sps",)  # plus every time/* key


def _cmd(*flags):
    return [sys.executable, os.path.join(ROOT, "crl_collector_learner.py"), *flags]


def _faulty(faults, *flags):
    """crl_collector_learner.py with faults injected from outside: faults are tests/faults.py's flags,
    flags the run's."""
    return [sys.executable, os.path.join(ROOT, "tests", "faults.py"), *faults, "crl_collector_learner.py", *flags]


def _metrics(run_dir):
    return metrics(run_dir, TIMING)


def _state(path):
    return read_state(path, R.STATE_MAGIC)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, cache):
    """Run A: 4 epochs without interruption, a checkpoint every epoch."""
    tmp = tmp_path_factory.mktemp("straight")
    proc = subprocess.run(_cmd(*TINY, "--runs-dir", str(tmp / "runs")), capture_output=True, text=True,
                          timeout=900, cwd=tmp, env=subprocess_env(cache))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list((tmp / "runs").iterdir())
    return run_dir


def test_state_holds_all_three_agents_buffer_and_keys(straight_run):
    saved = _state(straight_run / "state.msgpack")
    assert saved["epoch"] == 4
    header, ts = saved["header"], saved["state"]["ts"]
    assert header["format"] == C.STATE_FORMAT and header["has_buffer"] is True
    assert (header["collector_depth"], header["deep_learner_depth"], header["shallow_learner_depth"]) == (4, 8, 4)
    assert set(ts["learners"]) == {"deep_learner", "shallow_learner"}
    for agent in (ts["agent"], *ts["learners"].values()):
        assert set(agent) == {"actor_params", "critic_params", "log_alpha", "actor_opt", "critic_opt", "alpha_opt"}
    # a leading seed axis (of 1) on every leaf
    assert header["num_seeds"] == 1 and header["version"] == C.STATE_VERSION == 4
    assert ts["buffer"]["state"].shape[:3] == (1, 60, 4) and ts["env_steps"].tolist() == [400]
    assert ts["key"].shape == (1, 2) and saved["state"]["key_eval"].shape == (1, 2)
    assert [r["epoch"] for r in _metrics(straight_run)] == [0, 1, 2, 3, 4]
    record = _metrics(straight_run)[-1]
    assert all(record[f"{name}/train/params_finite"] == 1.0 for name in C.AGENTS)


def _start_and_kill_at(tmp, cache, hook_epoch, *extra):
    """Starts the 4-epoch run, waits until it hangs after writing epoch hook_epoch's state.msgpack.tmp
    (before the rename), SIGKILLs it; returns the run directory."""
    return start_and_kill(_faulty(["--stall-at-epoch", str(hook_epoch)], *TINY, "--runs-dir", str(tmp / "runs"),
                                  *extra), tmp, subprocess_env(cache))


def test_kill_and_resume_matches_an_uninterrupted_run(straight_run, tmp_path, cache):
    run_dir = _start_and_kill_at(tmp_path, cache, 2)
    # killed mid-checkpoint: epoch 2 is logged and its .tmp written, the complete checkpoint is epoch 1's
    assert (run_dir / "state.msgpack.tmp").exists() and _state(run_dir / "state.msgpack")["epoch"] == 1
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1, 2]
    assert not (run_dir / "checkpoint.msgpack").exists()
    proc = subprocess.run(_cmd("--resume", str(run_dir)), capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=subprocess_env(cache))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from" in proc.stdout and "at epoch 1" in proc.stdout and "epoch 4/4" in proc.stdout
    assert "epoch 0 (untrained)" not in proc.stdout and "prefilling" not in proc.stdout
    assert not (run_dir / "state.msgpack.tmp").exists()
    # same final parameters and optimiser states of all three agents, env state, buffer and keys, bit
    # for bit; same metrics, every epoch once
    assert (run_dir / "state.msgpack").read_bytes() == (straight_run / "state.msgpack").read_bytes()
    assert (run_dir / "checkpoint.msgpack").read_bytes() == (straight_run / "checkpoint.msgpack").read_bytes()
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1, 2, 3, 4]
    assert _metrics(run_dir) == _metrics(straight_run)


def test_divergence_guard_keeps_last_good_checkpoint_and_resume_refills_buffer(straight_run, tmp_path, cache):
    runs = tmp_path / "runs"
    # log(alpha) of the deep learner, a learner that never acts, is NaN before epoch 3
    nan = ["--nan-at-epoch", "3", "--nan-leaf", "learners/deep_learner/log_alpha"]
    proc = subprocess.run(_faulty(nan, *TINY, "--runs-dir", str(runs), "--no-checkpoint-buffer"),
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=subprocess_env(cache))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (run_dir,) = list(runs.iterdir())
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: non-finite "), errors
    assert "deep_learner/losses/alpha (nan)" in errors[0] and "deep_learner/train/params_finite (nan)" in errors[0]
    assert "collector/" not in errors[0]  # the collector is fine
    assert errors[0].endswith("at epoch 3; last good checkpoint: " + str(run_dir / "state.msgpack"))
    saved = _state(run_dir / "state.msgpack")
    assert saved["epoch"] == 2 and saved["header"]["has_buffer"] is False and "buffer" not in saved["state"]["ts"]
    assert not (run_dir / "state.msgpack.tmp").exists() and not (run_dir / "checkpoint.msgpack").exists()
    assert "epoch 4/4" not in proc.stdout
    # resume from the good epoch 2 (no NaN hook now): the buffer was not saved, so it is refilled
    proc = subprocess.run(_cmd("--resume", str(run_dir)), capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=subprocess_env(cache))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "holds no replay buffer" in proc.stdout and "refilling" in proc.stdout
    records = _metrics(run_dir)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert records[:3] == _metrics(straight_run)[:3]  # up to the checkpoint: the same run
    assert all(np.isfinite(v) for r in records for v in r.values())
    assert records[-1]["env_steps"] == 400 + 80  # the refill's random steps count


def _foreign_format(run_dir):
    """A valid state file of crl_depth.py's format (same magic and checksum, another header)."""
    saved = _state(run_dir / "state.msgpack")
    saved["header"]["format"] = "crl_depth_state"
    payload = flax.serialization.msgpack_serialize(saved)
    replace_state(run_dir, checksummed(R.STATE_MAGIC, payload))


def _drop_learner(run_dir):
    """A checksummed file of the right header whose state lacks the shallow learner."""
    saved = _state(run_dir / "state.msgpack")
    del saved["state"]["ts"]["learners"]["shallow_learner"]
    payload = flax.serialization.msgpack_serialize(saved)
    replace_state(run_dir, checksummed(R.STATE_MAGIC, payload))


THIS_RUN = "env point_u_maze collector depth 4 deep learner depth 8 shallow learner depth 4 width 16"
# (flags, how to spoil the copied run directory, words of the one error line); exit status 2 for all
BAD = [
    (["--checkpoint-every", "0"], None, "--checkpoint-every must be positive (got 0)"),
    (["--resume", "/nonexistent/run"], None, "--resume /nonexistent/run: not a run directory (no args.json in it)"),
    (["--deep-learner-depth", "4"], None, "--deep-learner-depth 4 conflicts with the run's 8"),
    (["--collector-depth", "32"], None, "--collector-depth 32 conflicts with the run's 4"),  # the default, given
    (["--width", "32"], None, "--width 32 conflicts with the run's 16"),
    (["--no-layer-norm"], None, "--layer-norm False conflicts with the run's True"),
    (["--env-id", "ant"], None, "--env-id ant conflicts with the run's point_u_maze"),
    (["--critic-lr", "0.1"], None, "--critic-lr 0.1 conflicts with the run's 0.0003"),
    (["--num-epochs", "8", "--total-env-steps", "5000"], None, "change the run's epoch (2 training steps of 40 env "
     "steps); give --num-epochs 8 alone"),
    (["--num-epochs", "3"], None, "--num-epochs 3 ends the run before its checkpoint's epoch 4"),
    (["--num-epochs", "0"], None, "--num-epochs must be positive (got 0)"),
    # checked against the run's settings first: a flag a resumed run cannot change is named as such
    (["--shallow-learner-depth", "6"], None, "--shallow-learner-depth 6 conflicts with the run's 4"),
    ([], lambda d, t: (d / "state.msgpack").unlink(), "no state.msgpack in it"),
    ([], lambda d, t: truncate(d), "is truncated or corrupt (checksum mismatch"),
    ([], lambda d, t: replace_state(d, (d / "checkpoint.msgpack").read_bytes()),
     "is a 'crl_depth_networks' checkpoint, not a 'crl_collector_learner_state' one"),
    ([], lambda d, t: replace_state(d, npz_bytes(t)), "is not a crl_depth state checkpoint (wrong magic bytes)"),
    ([], lambda d, t: replace_state(d, right_magic_wrong_payload(R.STATE_MAGIC)),
     "is not a readable state checkpoint"),
    ([], lambda d, t: _foreign_format(d), "is a 'crl_depth_state' checkpoint, not a 'crl_collector_learner_state' one"),
    ([], lambda d, t: _drop_learner(d), "does not fit this run: learners/shallow_learner/"),
    ([], lambda d, t: edit_args(d, deep_learner_depth=16),
     f"is for {THIS_RUN}, this run is env point_u_maze collector depth 4 deep learner depth 16 shallow learner depth 4 "
     f"width 16 (differs in: deep_learner_depth)"),
    ([], lambda d, t: edit_args(d, env_id="ant"), f"is for {THIS_RUN}, this run is env ant"),
    ([], lambda d, t: (d / "args.json").write_text("{not json"), "cannot read args.json"),
    ([], lambda d, t: edit_args(d, depth=8), "args.json is not a crl_collector_learner.py args file"),
]


@pytest.mark.parametrize("flags,spoil,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_resume_inputs_are_refused_and_nothing_changes(flags, spoil, message, straight_run, tmp_path, capsys):
    run_dir = resume_dir(straight_run, tmp_path)
    if spoil is not None:
        spoil(run_dir, tmp_path)
    before = snapshot(run_dir)
    argv = flags if "--resume" in flags else ["--resume", str(run_dir), *flags]
    with pytest.raises(SystemExit) as exit_info:
        C.main(C.cli(argv))
    assert exit_info.value.code == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and message in errors[0], errors
    assert snapshot(run_dir) == before  # a refused run overwrites nothing


def test_truncated_checkpoint_is_rejected_on_the_command_line(straight_run, tmp_path, cache):
    run_dir = resume_dir(straight_run, tmp_path)
    truncate(run_dir)
    before = snapshot(run_dir)
    proc = subprocess.run(_cmd("--resume", str(run_dir)), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=subprocess_env(cache))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert error_lines(proc.stderr) == [f"error: {run_dir / 'state.msgpack'} is truncated or corrupt "
                                        f"(checksum mismatch, {len(before['state.msgpack']):,} bytes)"]
    assert not [line for line in proc.stdout.splitlines() if line.startswith(("run ", "compiled"))]  # no work
    assert snapshot(run_dir) == before


def test_resume_may_extend_a_run_when_the_epoch_stays_the_same(straight_run):
    args = C.cli(["--resume", str(straight_run), "--num-epochs", "8", "--total-env-steps", str(400 + 4 * 80),
                  "--track"])
    assert args.num_epochs == 8 and args.width == 16 and args.track
    assert (args.collector_depth, args.deep_learner_depth, args.shallow_learner_depth) == (4, 8, 4)
    assert C.schedule(args)[2] == 2
    args = C.cli(["--resume", str(straight_run), "--num-epochs=8", "--total-env-steps", "720", "--no-checkpoint-buffer",
                  "--plot"])
    assert (args.num_epochs, args.total_env_steps) == (8, 720) and args.resume == str(straight_run)
    assert not args.checkpoint_buffer and args.plot and args.env_id == "point_u_maze" and args.width == 16
    args = C.cli(["--resume", str(straight_run), "--num-epochs", "8"])  # alone: the total follows
    assert (args.num_epochs, args.total_env_steps, C.schedule(args)[2]) == (8, 720, 2)


def test_unwritable_run_directory_is_refused(tmp_path, cache):
    (tmp_path / "file").write_text("not a directory")
    proc = subprocess.run(_cmd(*TINY, "--runs-dir", str(tmp_path / "file" / "runs")), capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=subprocess_env(cache))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: cannot write the run directory"), errors
    assert sorted(os.listdir(tmp_path)) == ["file"]
