"""End-to-end: reacher, an ant maze and humanoid each train for two tiny epochs in a subprocess; the run
directory holds args.json, metrics.jsonl (finite numbers, one line per epoch plus the untrained
evaluation) and the checkpoint; --render writes the HTML rollout with the goal body in it, and
--plot-critic the maze's critic heatmap. The ant's body is the same in ant and the ant mazes (its
steps against the paper's code: tests/test_paper_code.py)."""

import json
import math
import os
import struct
import subprocess
import sys

import pytest

import crl_plots
import crl_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--num-envs", "4", "--episode-length", "20", "--num-eval-envs", "2", "--total-env-steps", "1040",
        "--num-epochs", "2", "--unroll-length", "10", "--num-sgd-steps", "2", "--batch-size", "16",
        "--max-replay-size", "60", "--min-replay-size", "20", "--width", "16", "--depth", "8"]


def _train(tmp_path, env_id, *extra):
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "crl_depth.py"), "--env-id", env_id, *TINY,
                           "--runs-dir", str(runs), *extra], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list(runs.iterdir())
    return proc, run_dir


@pytest.mark.parametrize("env_id", ["reacher", pytest.param("ant_u4_maze", marks=pytest.mark.slow),
                                    pytest.param("humanoid", marks=pytest.mark.slow)])  # slow: brax compiles
def test_tiny_run_writes_outputs(env_id, tmp_path):
    extra = {"reacher": ["--render", "--track", "--wandb-mode", "offline"], "ant_u4_maze": ["--plot-critic"]}.get(
        env_id, [])
    proc, run_dir = _train(tmp_path, env_id, *extra)
    assert run_dir.name.startswith(f"{env_id}__crl_depth__1__")
    args = json.loads((run_dir / "args.json").read_text())
    assert args["env_id"] == env_id and args["depth"] == 8
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    for record in lines:
        for name, value in record.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
        assert 0 <= record["eval/time_at_goal"] <= 20 and record["eval/dist"] > 0
    for name in ("losses/critic", "losses/actor", "critic/categorical_accuracy", "critic/logsumexp",
                 "critic/logits_pos", "critic/logits_neg", "actor/alpha", "actor/entropy", "time/compile_s",
                 "charts/sps", "eval/success_any", "eval/dist"):
        assert name in lines[-1]
    assert lines[-1]["env_steps"] > lines[1]["env_steps"] > lines[0]["env_steps"]
    assert "epoch 2/2" in proc.stdout and "time at goal" in proc.stdout and "ETA" in proc.stdout
    ckpt = crl_runs.read_networks(str(run_dir / "checkpoint.msgpack"))[1]
    assert set(ckpt) == {"actor", "critic", "log_alpha"} and set(ckpt["critic"]) == {"phi", "psi"}
    blocks = ckpt["actor"]["params"]["trunk"]["blocks"]["Dense_0"]["kernel"]
    assert blocks.shape == (2, 16, 16)  # depth 8 = 2 blocks
    if env_id == "reacher":
        html = (run_dir / "rollout.html").read_text()
        assert "<html" in html.lower() and len(html) > 1000
        assert list((tmp_path / "wandb").glob("offline-run-*"))  # --track logged offline
    if env_id == "ant_u4_maze":
        head = (run_dir / "critic_heatmap.png").read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == crl_plots.HEATMAP_PANEL_PX
