"""Long runs (docs/long_runs.md): a run SIGKILLed mid-checkpoint and resumed ends bit-identical to an
uninterrupted one; the divergence guard stops on NaN with the last good checkpoint intact; bad
flags, corrupt or mismatched checkpoints and unwritable directories are refused with one line,
exit status 2, nothing on disk changed. The subprocesses share a persistent JAX compilation cache,
so only the first one pays the full compile."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import crl_depth as C
import crl_runs as R

pytest.register_assert_rewrite("tests.run_dir_helpers")
from tests.run_dir_helpers import (edit_args, error_lines, metrics, npz_bytes, replace_state, resume_dir,  # noqa: E402
                                   right_magic_wrong_payload, snapshot, start_and_kill, state_epoch, subprocess_env,
                                   truncate)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--env-id", "point_u_maze", "--num-envs", "4", "--episode-length", "20", "--num-eval-envs", "2",
        "--total-env-steps", "2000", "--num-epochs", "4", "--unroll-length", "10", "--num-sgd-steps", "2",
        "--batch-size", "16", "--max-replay-size", "60", "--min-replay-size", "20", "--width", "16",
        "--depth", "8", "--checkpoint-every", "1"]
TIMING = ("charts/sps",)  # plus every time/* key


def _cmd(*flags):
    return [sys.executable, os.path.join(ROOT, "crl_depth.py"), *flags]


def _faulty(*flags):
    """crl_depth.py with a fault injected from outside (tests/faults.py): flags are the fault's, then the run's."""
    fault, value, *rest = flags
    return [sys.executable, os.path.join(ROOT, "tests", "faults.py"), fault, value, "crl_depth.py", *rest]


def _metrics(run_dir):
    return metrics(run_dir, TIMING)


def _state_epoch(path):
    return state_epoch(path, R.STATE_MAGIC)


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


def _start_and_kill_at(tmp, cache, hook_epoch, *extra):
    """Starts the 4-epoch run, waits until it hangs after writing epoch hook_epoch's state.msgpack.tmp
    (before the rename), SIGKILLs it; returns the run directory."""
    return start_and_kill(_faulty("--stall-at-epoch", str(hook_epoch), *TINY, "--runs-dir", str(tmp / "runs"), *extra),
                          tmp, subprocess_env(cache))


def test_kill_and_resume_matches_an_uninterrupted_run(straight_run, tmp_path, cache):
    run_dir = _start_and_kill_at(tmp_path, cache, 2)
    # killed mid-checkpoint: epoch 2 is logged and its .tmp written, the complete checkpoint is epoch 1's
    assert (run_dir / "state.msgpack.tmp").exists() and _state_epoch(run_dir / "state.msgpack") == 1
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1, 2]
    assert not (run_dir / "checkpoint.msgpack").exists()
    proc = subprocess.run(_cmd("--resume", str(run_dir)), capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=subprocess_env(cache))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from" in proc.stdout and "at epoch 1" in proc.stdout and "epoch 4/4" in proc.stdout
    assert not (run_dir / "state.msgpack.tmp").exists()
    # same final parameters, optimiser states, env state, buffer and keys, bit for bit; same metrics
    assert (run_dir / "state.msgpack").read_bytes() == (straight_run / "state.msgpack").read_bytes()
    assert (run_dir / "checkpoint.msgpack").read_bytes() == (straight_run / "checkpoint.msgpack").read_bytes()
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1, 2, 3, 4]
    assert _metrics(run_dir) == _metrics(straight_run)


def test_divergence_guard_keeps_last_good_checkpoint_and_resume_refills_buffer(straight_run, tmp_path, cache):
    runs = tmp_path / "runs"
    proc = subprocess.run(_faulty("--nan-at-epoch", "3", *TINY, "--runs-dir", str(runs), "--no-checkpoint-buffer"),
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=subprocess_env(cache))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (run_dir,) = list(runs.iterdir())
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: non-finite ") and "losses/alpha (nan)" in errors[0]
    assert "train/params_finite (nan)" in errors[0]  # every metric is checked, the parameters' flag included
    assert "at epoch 3; last good checkpoint: " + str(run_dir / "state.msgpack") in errors[0]
    assert _state_epoch(run_dir / "state.msgpack") == 2 and not (run_dir / "state.msgpack.tmp").exists()
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
    assert records[-1]["env_steps"] == 2000 + 80  # the refill's random steps count


# (flags, how to spoil the copied run directory, words of the one error line); exit status 2 for all
BAD = [
    (["--checkpoint-every", "0"], None, "--checkpoint-every must be positive (got 0)"),
    (["--resume", "/nonexistent/run"], None, "--resume /nonexistent/run: not a run directory (no args.json in it)"),
    (["--depth", "16"], None, "--depth 16 conflicts with the run's 8"),
    (["--depth", "4"], None, "--depth 4 conflicts with the run's 8"),  # the default, given explicitly
    (["--no-layer-norm"], None, "--layer-norm False conflicts with the run's True"),
    (["--env-id", "ant"], None, "--env-id ant conflicts with the run's point_u_maze"),
    (["--critic-lr", "0.1"], None, "--critic-lr 0.1 conflicts with the run's 0.0003"),
    (["--num-seeds", "2"], None, "--num-seeds 2 conflicts with the run's 1"),
    (["--compute-dtype", "bfloat16"], None, "--compute-dtype bfloat16 conflicts with the run's float32"),
    ([], lambda d, t: edit_args(d, num_seeds=2), "(differs in: num_seeds)"),
    (["--num-epochs", "8", "--total-env-steps", "9000"], None, "--num-epochs 8 --total-env-steps 9000 change the "
     "run's epoch (12 training steps of 40 env steps); give --num-epochs 8 alone (the total follows: 3,920) or a "
     "--total-env-steps from 3,920 to 4,239"),
    (["--num-epochs", "3"], None, "--num-epochs 3 ends the run before its checkpoint's epoch 4"),
    (["--num-epochs", "0"], None, "--num-epochs must be positive (got 0)"),
    ([], lambda d, t: (d / "state.msgpack").unlink(), "no state.msgpack in it"),
    ([], lambda d, t: truncate(d), "is truncated or corrupt (checksum mismatch"),
    ([], lambda d, t: replace_state(d, (d / "checkpoint.msgpack").read_bytes()),
     "is a 'crl_depth_networks' checkpoint, not a 'crl_depth_state' one"),
    ([], lambda d, t: replace_state(d, npz_bytes(t)), "is not a crl_depth state checkpoint (wrong magic bytes)"),
    ([], lambda d, t: replace_state(d, right_magic_wrong_payload(R.STATE_MAGIC)), "is not a readable state checkpoint"),
    ([], lambda d, t: edit_args(d, depth=4), "is for env point_u_maze actor depth 8 critic depth 8 width 16, this run "
                                              "is env point_u_maze actor depth 4 critic depth 4 width 16"),
    ([], lambda d, t: edit_args(d, env_id="ant"), "is for env point_u_maze actor depth 8 critic depth 8 width 16, this "
                                                   "run is env ant"),
    ([], lambda d, t: (d / "args.json").write_text("{not json"), "cannot read args.json"),
    ([], lambda d, t: edit_args(d, no_such_flag=1), "args.json is not a crl_depth.py args file"),
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


def test_resume_may_extend_a_run_when_the_epoch_stays_the_same(straight_run):
    args = C.cli(["--resume", str(straight_run), "--num-epochs", "8", "--total-env-steps", str(2000 + 4 * 480),
                  "--track"])
    assert args.num_epochs == 8 and args.depth == 8 and args.width == 16 and args.track
    assert C.schedule(args)[2] == 12
    args = C.cli(["--resume", str(straight_run), "--num-epochs=8", "--total-env-steps", "3920", "--no-checkpoint-buffer"])
    assert args.num_epochs == 8 and not args.checkpoint_buffer and args.env_id == "point_u_maze" and args.depth == 8
    # --num-epochs alone: the epochs keep their 12 training steps, the total follows (80 prefill + 8 x 12 x 40)
    args = C.cli(["--resume", str(straight_run), "--num-epochs", "8"])
    assert (args.num_epochs, args.total_env_steps, C.schedule(args)[2]) == (8, 3920, 12)


def test_extending_a_run_from_the_command_line(straight_run, tmp_path, cache):
    """The README's way to extend a finished run, one flag: --num-epochs 5 continues it by an epoch of the same
    env steps; args.json records the new total; the score line covers the whole run."""
    run_dir = resume_dir(straight_run, tmp_path)
    proc = subprocess.run(_cmd("--resume", str(run_dir), "--num-epochs", "5"),
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=subprocess_env(cache))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from" in proc.stdout and "epoch 5/5" in proc.stdout
    records = _metrics(run_dir)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4, 5] and _state_epoch(run_dir / "state.msgpack") == 5
    assert records[5]["env_steps"] - records[4]["env_steps"] == records[4]["env_steps"] - records[3]["env_steps"] == 480
    assert json.loads((run_dir / "args.json").read_text())["total_env_steps"] == 80 + 5 * 480
    score = np.mean([r["eval/time_at_goal"] for r in records[1:]])
    assert f"score (time at goal, mean of the last 5 evaluations, out of 20): {score:.1f}" in proc.stdout


def test_unwritable_run_directory_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:
        C.main(C.cli([*TINY, "--runs-dir", str(tmp_path / "file" / "runs")]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: cannot write the run directory" in err and len(err.strip().splitlines()) == 1


def test_failed_checkpoint_write_leaves_previous_file_and_no_tmp(tmp_path, monkeypatch):
    path = str(tmp_path / "state.msgpack")
    R.atomic_write(path, [b"old complete file"])
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(R.CheckpointWriteError, match="No space left on device"):
        R.atomic_write(path, [b"new file that does not fit"])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert open(path, "rb").read() == b"old complete file" and os.listdir(tmp_path) == ["state.msgpack"]
    with pytest.raises(R.CheckpointWriteError, match="cannot write"):
        R.atomic_write(str(tmp_path / "missing" / "state.msgpack"), [b"x"])


def test_wandb_run_id_is_kept_and_reused_by_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    args = C.Args(track=True, wandb_project_name="crl-depth-test", wandb_mode="offline", runs_dir=str(tmp_path))
    ids = []
    for resume in (None, str(run_dir)):  # the run, then its resume
        run = R.Run(dataclasses.replace(args, resume=resume), args.env_id, {}, str, "env_steps")
        run.dir, run.resume_epoch = str(run_dir), None if resume is None else 0
        run.open()
        ids.append(run.wandb.run.id)
        run.wandb.finish()
    assert ids[0] == ids[1] == (run_dir / "wandb_id.txt").read_text()


def test_runs_started_in_the_same_second_never_share_a_directory(tmp_path, monkeypatch):
    """Three runs of the same env, experiment name and seed started in the same second (a shell loop over
    depths in the background): the second and third get the name with -2 and -3, each its own args.json."""
    monkeypatch.setattr(R.time, "time", lambda: 1796000000.5)
    dirs = []
    for depth in (4, 16, 64):
        run = R.Run(C.Args(env_id="reacher", depth=depth, runs_dir=str(tmp_path)), "reacher", {}, str, "env_steps")
        run.open()
        dirs.append(run.dir)
    first = str(tmp_path / "reacher__crl_depth__1__1796000000")
    assert dirs == [first, first + "-2", first + "-3"]
    assert [json.loads(open(os.path.join(d, "args.json")).read())["depth"] for d in dirs] == [4, 16, 64]
