"""Command line: every flag documented, bad input refused with one line and exit status 2 before
any work (no run directory)."""

import dataclasses
import os
import subprocess
import sys

import jax
import pytest

import crl_depth as C

NUM_LOCAL = len(jax.local_devices())

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tiny settings that are valid; each bad case changes one thing
OK = dict(env_id="reacher", num_envs=4, episode_length=10, num_eval_envs=2, total_env_steps=2000, num_epochs=2,
          unroll_length=5, num_sgd_steps=2, batch_size=8, max_replay_size=50, min_replay_size=10, width=8)

BAD = [  # (override, words the message must contain)
    (dict(depth=6), "--depth must be a positive multiple of 4 (got 6)"),
    (dict(depth=0), "--depth must be a positive multiple of 4"),
    (dict(actor_depth=10), "--actor-depth must be a positive multiple of 4"),
    (dict(critic_depth=-4), "--critic-depth must be a positive multiple of 4"),
    (dict(num_envs=0), "--num-envs must be positive"),
    (dict(width=-1), "--width must be positive"),
    (dict(fused_block=True), "--fused-block takes a --width of 16, 32, 48, 64, 96, 128, 192, 256, 384, 512 (got 8)"),
    (dict(fused_block=True, width=1024), "--fused-block takes a --width of 16, 32, 48, 64, 96, 128, 192, 256"),
    (dict(fused_block=True, width=240), "(got 240)"),  # 15 x 15 tiles of 16 a layer
    (dict(fused_block=True, width=16, layer_norm=False), "--fused-block runs the block with LayerNorm and its skip"),
    (dict(fused_block=True, width=16, residual=False), "--fused-block runs the block with LayerNorm and its skip"),
    (dict(batch_size=0), "--batch-size must be positive"),
    (dict(actor_lr=0.0), "--actor-lr must be positive"),
    (dict(gamma=1.0), "--gamma must be in (0, 1)"),
    (dict(min_replay_size=60), "--min-replay-size (60) must not exceed --max-replay-size (50)"),
    (dict(min_replay_size=5), "must be at least --episode-length"),
    (dict(num_sgd_steps=5, batch_size=8), "larger than what a training step yields"),
    (dict(batch_size=40), "larger than what a training step yields"),
    (dict(total_env_steps=50), "--total-env-steps 50 is too small"),
    (dict(env_id="cheetah"), "unknown --env-id 'cheetah'; valid ids: reacher, ant, humanoid"),
    (dict(num_seeds=0), "--num-seeds must be positive (got 0)"),
    (dict(num_seeds=2, render=True), "--render works on one run: not with --num-seeds 2"),
    (dict(num_seeds=3, save_buffer=True), "--save-buffer works on one run: not with --num-seeds 3"),
    (dict(num_devices=-1), f"--num-devices must be in [0, {NUM_LOCAL}]"),
    (dict(num_devices=NUM_LOCAL + 1), f"--num-devices must be in [0, {NUM_LOCAL}] (0: all {NUM_LOCAL} local devices; "
                                      f"got {NUM_LOCAL + 1})"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_validate_args_rejects(override, message):
    args = C.Args(**{**OK, **override})
    error = C.validate_args(args)
    assert error is not None and message in error and "\n" not in error


def test_validate_args_accepts_tiny_and_paper_defaults():
    assert C.validate_args(C.Args(**OK)) is None
    assert C.validate_args(C.Args()) is None
    for width in (16, 48, 512):  # the fused block's widths, from the smallest to the widest
        assert C.validate_args(C.Args(**{**OK, "fused_block": True, "width": width})) is None


def _run(*flags, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "crl_depth.py"), *flags], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags,message", [
    (["--depth", "6"], "error: --depth must be a positive multiple of 4 (got 6)"),
    (["--env-id", "cheetah"], "error: unknown --env-id 'cheetah'; valid ids: reacher, ant, humanoid"),
    (["--batch-size", "100000"], "error: --num-sgd-steps x --batch-size (800 x 100000) is larger than what a training step yields"),
])
def test_cli_exit_status_2_one_line_no_run_dir(flags, message, tmp_path):
    proc = _run(*flags, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message)
    # quiet imports: nothing at all on stdout before the refusal (no "Failed to import warp"), and on
    # stderr nothing but the error line (no brax maintenance warning)
    assert proc.stdout == "" and proc.stderr.strip() == lines[0], proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_rejects_bad_choice_before_work(tmp_path):
    proc = _run("--activation", "tanh", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2 and "tanh" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_help_documents_every_flag(tmp_path):
    proc = _run("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for field in dataclasses.fields(C.Args):
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool or field.type == "bool":
            assert flag in proc.stdout or "--no-" + field.name.replace("_", "-") in proc.stdout, flag
        else:
            assert flag in proc.stdout, flag
    for switch in ("--no-layer-norm", "--no-residual", "--remat", "--track", "--render"):
        assert switch in proc.stdout
