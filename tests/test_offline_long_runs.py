"""Long runs of crl_depth_offline.py (docs/long_runs.md): a run SIGKILLed mid-checkpoint and resumed
ends bit-identical to an uninterrupted one; the divergence guard stops on NaN with the last good
checkpoint intact; bad flags, corrupt or mismatched checkpoints, another dataset and unwritable
directories are refused with one line, exit status 2, nothing on disk changed. The dataset is a tiny
OGBench-format file and the ogbench package is hidden, so no env is built or compiled; the
subprocesses share a persistent JAX compilation cache, so only the first one pays the full compile."""

import json
import os
import subprocess
import sys

import flax
import numpy as np
import pytest

import crl_depth_offline as O
import crl_runs as R

pytest.register_assert_rewrite("tests.run_dir_helpers")
from tests.run_dir_helpers import (checksummed, edit_args, error_lines, make_dataset, metrics,  # noqa: E402
                                   no_ogbench_dir, npz_bytes, replace_state, resume_dir, right_magic_wrong_payload,
                                   snapshot, start_and_kill, state_epoch, subprocess_env, truncate)

pytestmark = pytest.mark.slow  # kill-and-resume and bad inputs of the offline runs (crl_depth.py's in the default run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "crl_depth_offline.py")
# 4 epochs of one relabelling round (2 SGD steps of 16) each, a checkpoint every epoch
TINY = ["--obs-dim", "5", "--goal-start", "0", "--goal-end", "3", "--num-gradient-steps", "8", "--eval-every", "2",
        "--num-sgd-steps", "2", "--batch-size", "16", "--width", "16", "--depth", "4", "--checkpoint-every", "1"]
TIMING = ("charts/gradient_steps_per_s",)  # plus every time/* key


def _env(cache, no_ogbench, **extra):
    # PYTHONPATH hides the optional ogbench package: no env evaluation
    return subprocess_env(cache, PYTHONPATH=str(no_ogbench), **extra)


def _cmd(*flags):
    return [sys.executable, SCRIPT, *flags]


def _faulty(*flags):
    """crl_depth_offline.py with a fault injected from outside (tests/faults.py): the fault's flags, then the run's."""
    fault, value, *rest = flags
    return [sys.executable, os.path.join(ROOT, "tests", "faults.py"), fault, value, "crl_depth_offline.py", *rest]


def _metrics(run_dir):
    return metrics(run_dir, TIMING)


def _state_epoch(path):
    return state_epoch(path, R.STATE_MAGIC)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(JAX cache dir, dir shadowing ogbench, the dataset, another dataset of the same shape)."""
    tmp = tmp_path_factory.mktemp("offline_setup")
    return (tmp / "jax_cache", no_ogbench_dir(tmp / "no_ogbench"), make_dataset(tmp / "antmaze-tiny-navigate-v0.npz"),
            make_dataset(tmp / "other.npz", seed=1))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, setup):
    """Run A: 4 epochs without interruption, a checkpoint every epoch."""
    cache, no_ogbench, dataset, _ = setup
    tmp = tmp_path_factory.mktemp("straight")
    proc = subprocess.run(_cmd("--dataset", str(dataset), *TINY, "--runs-dir", str(tmp / "runs")),
                          capture_output=True, text=True, timeout=900, cwd=tmp, env=_env(cache, no_ogbench))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list((tmp / "runs").iterdir())
    return run_dir


def test_kill_and_resume_matches_an_uninterrupted_run(straight_run, setup, tmp_path):
    cache, no_ogbench, dataset, _ = setup
    run_dir = start_and_kill(_faulty("--stall-at-epoch", "2", "--dataset", str(dataset), *TINY, "--runs-dir",
                                     str(tmp_path / "runs")), tmp_path, _env(cache, no_ogbench))
    # killed mid-checkpoint: epoch 2 is logged and its .tmp written, the complete checkpoint is epoch 1's
    assert (run_dir / "state.msgpack.tmp").exists() and _state_epoch(run_dir / "state.msgpack") == 1
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1, 2]
    assert not (run_dir / "checkpoint.msgpack").exists()
    proc = subprocess.run(_cmd("--resume", str(run_dir)), capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=_env(cache, no_ogbench))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from" in proc.stdout and "at epoch 1 (2 gradient steps)" in proc.stdout
    assert "epoch 4/4" in proc.stdout and "epoch 0 (untrained)" not in proc.stdout
    assert not (run_dir / "state.msgpack.tmp").exists()
    # same final parameters, optimiser states and keys, bit for bit; same metrics; same settings
    assert (run_dir / "state.msgpack").read_bytes() == (straight_run / "state.msgpack").read_bytes()
    assert (run_dir / "checkpoint.msgpack").read_bytes() == (straight_run / "checkpoint.msgpack").read_bytes()
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1, 2, 3, 4]
    assert _metrics(run_dir) == _metrics(straight_run)
    settings = lambda d: {k: v for k, v in json.loads((d / "args.json").read_text()).items() if k != "runs_dir"}
    assert settings(run_dir) == settings(straight_run) and settings(run_dir)["resume"] is None


def test_divergence_guard_keeps_last_good_checkpoint_and_resume_continues(straight_run, setup, tmp_path):
    cache, no_ogbench, dataset, _ = setup
    runs = tmp_path / "runs"
    proc = subprocess.run(_faulty("--nan-at-epoch", "3", "--dataset", str(dataset), *TINY, "--runs-dir", str(runs)),
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=_env(cache, no_ogbench))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (run_dir,) = list(runs.iterdir())
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: non-finite "), proc.stderr
    assert errors[0].endswith("at epoch 3; last good checkpoint: " + str(run_dir / "state.msgpack"))
    assert "losses/alpha (nan)" in errors[0] and "train/params_finite (nan)" in errors[0]
    assert _state_epoch(run_dir / "state.msgpack") == 2 and not (run_dir / "state.msgpack.tmp").exists()
    assert (run_dir / "state.msgpack").read_bytes() != (straight_run / "state.msgpack").read_bytes()
    assert "epoch 4/4" not in proc.stdout and not (run_dir / "checkpoint.msgpack").exists()
    # resume from the good epoch 2 (no NaN hook now): epochs 3 and 4 again, ending as the straight run
    proc = subprocess.run(_cmd("--resume", str(run_dir)), capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=_env(cache, no_ogbench))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "at epoch 2" in proc.stdout
    records = _metrics(run_dir)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert all(np.isfinite(v) for r in records for v in r.values())
    assert records == _metrics(straight_run)
    assert (run_dir / "state.msgpack").read_bytes() == (straight_run / "state.msgpack").read_bytes()


# --- refused inputs (in process: nothing is compiled before the refusal) ---------------------------
def _state_file(header_changes=None, header=None, state=None, source=None):
    """A well-formed state file (right magic, right checksum) with an edited or replaced payload."""
    restored = flax.serialization.msgpack_restore(source.read_bytes()[48:]) if source else {"epoch": 1, "state": {}}
    restored["header"] = header if header is not None else {**restored["header"], **(header_changes or {})}
    if state is not None:
        restored["state"] = state
    payload = flax.serialization.msgpack_serialize(restored)
    return checksummed(R.STATE_MAGIC, payload)


# (flags, how to spoil the copied run directory (run_dir, tmp_path, other dataset), words of the one
# error line); exit status 2 for all
BAD = [
    (["--checkpoint-every", "0"], None, "--checkpoint-every must be positive (got 0)"),
    (["--resume", "/nonexistent/run"], None, "--resume /nonexistent/run: not a run directory (no args.json in it)"),
    (["--depth", "8"], None, "--depth 8 conflicts with the run's 4"),
    (["--no-layer-norm"], None, "--layer-norm False conflicts with the run's True"),
    (["--eval-every", "4"], None, "--eval-every 4 conflicts with the run's 2"),  # the epoch length stays
    (["--bc-coef", "0.5"], None, "--bc-coef 0.5 conflicts with the run's 0.1"),
    (["--dataset", "OTHER"], None, "--dataset OTHER conflicts with the run's"),
    (["--num-gradient-steps", "7"], None, "--num-gradient-steps (7) must be a multiple of --eval-every (2)"),
    (["--num-gradient-steps", "4"], None, "--num-gradient-steps 4 ends the run at epoch 2, before its checkpoint's "
                                          "epoch 4"),
    (["--num-epochs", "1"], None, "ends the run at epoch 1, before its checkpoint's epoch 4"),
    ([], lambda d, t, o: (d / "state.msgpack").unlink(), "no state.msgpack in it"),
    ([], lambda d, t, o: truncate(d), "is truncated or corrupt (checksum mismatch"),
    ([], lambda d, t, o: replace_state(d, (d / "checkpoint.msgpack").read_bytes()),
     "is a 'crl_depth_networks' checkpoint, not a 'crl_depth_offline_state' one"),
    ([], lambda d, t, o: replace_state(d, npz_bytes(t)), "is not a crl_depth state checkpoint (wrong magic bytes)"),
    ([], lambda d, t, o: replace_state(d, right_magic_wrong_payload(R.STATE_MAGIC)),
     "is not a readable state checkpoint"),
    ([], lambda d, t, o: replace_state(d, _state_file(header={"format": "crl_depth_state", "version": 1})),
     "is a 'crl_depth_state' checkpoint, not a 'crl_depth_offline_state' one"),  # crl_depth.py's
    ([], lambda d, t, o: replace_state(d, _state_file(source=d / "state.msgpack", state={"ts": {}, "key_eval": 0})),
     "does not fit this run: agent/"),
    ([], lambda d, t, o: edit_args(d, depth=8), "actor depth 4 critic depth 4 width 16, this run is dataset"),
    ([], lambda d, t, o: edit_args(d, dataset=str(o)), "(differs in: dataset, dataset_sha256)"),
    ([], lambda d, t, o: replace_state(d, _state_file(source=d / "state.msgpack",
                                                       header_changes={"dataset_sha256": "0" * 64})),
     "(differs in: dataset_sha256)"),  # the file at the run's dataset path is not the one it trained on
    ([], lambda d, t, o: edit_args(d, dataset=str(t / "gone.npz")), "no such file"),
    ([], lambda d, t, o: (d / "args.json").write_text("{not json"), "cannot read args.json"),
    ([], lambda d, t, o: edit_args(d, no_such_flag=1), "args.json is not a crl_depth_offline.py args file"),
]


@pytest.mark.parametrize("flags,spoil,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_resume_inputs_are_refused_and_nothing_changes(flags, spoil, message, straight_run, setup, tmp_path,
                                                           capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ogbench", None)  # as in the subprocesses: no OGBench env
    other = setup[3]
    run_dir = resume_dir(straight_run, tmp_path)
    if spoil is not None:
        spoil(run_dir, tmp_path, other)
    before = snapshot(run_dir)
    flags = [str(other) if f == "OTHER" else f for f in flags]
    message = message.replace("OTHER", str(other))
    argv = flags if "--resume" in flags else ["--resume", str(run_dir), *flags]
    with pytest.raises(SystemExit) as exit_info:
        O.main(O.cli(argv))
    assert exit_info.value.code == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and message in errors[0], errors
    assert snapshot(run_dir) == before  # a refused run overwrites nothing


def test_truncated_checkpoint_is_rejected(straight_run, tmp_path):
    good = (straight_run / "state.msgpack").read_bytes()
    header = flax.serialization.msgpack_restore(good[48:])["header"]
    assert R.read_state_file(str(straight_run / "state.msgpack"), header, O.describe_run)[1] == 4
    for size in (0, 10, 16, 47, 48, 100, len(good) // 2, len(good) - 1):
        path = tmp_path / f"cut{size}.msgpack"
        path.write_bytes(good[:size])
        with pytest.raises(R.CheckpointError, match="wrong magic bytes|truncated or corrupt") as info:
            R.read_state_file(str(path), header, O.describe_run)
        assert "\n" not in str(info.value)


def test_resume_may_extend_a_run_when_the_epoch_stays_the_same(straight_run):
    args = O.cli(["--resume", str(straight_run), "--num-gradient-steps=16", "--checkpoint-every", "3", "--track"])
    assert args.num_gradient_steps == 16 and args.checkpoint_every == 3 and args.track
    assert args.depth == 4 and args.width == 16 and args.eval_every == 2 and args.dataset_format == "ogbench"
    args = O.cli(["--resume", str(straight_run), "--num-epochs", "8"])  # 8 epochs of --eval-every 2
    assert (args.num_gradient_steps, args.num_epochs) == (16, None)
    # a flag given with the run's own value is no conflict
    args = O.cli(["--resume", str(straight_run), "--width", "16"])
    assert args.width == 16


def test_unwritable_run_directory_is_refused(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ogbench", None)
    (tmp_path / "file").write_text("not a directory")
    argv = ["--dataset", str(setup[2]), *TINY, "--runs-dir", str(tmp_path / "file" / "runs")]
    with pytest.raises(SystemExit) as exit_info:
        O.main(O.cli(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: cannot write the run directory" in err and len(err.strip().splitlines()) == 1
