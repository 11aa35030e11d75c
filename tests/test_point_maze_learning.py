"""CRL learns a maze: crl_depth.py on point_u_maze (about 1.2M env steps, a few minutes of CPU) must end
clearly above the untrained policy on the evaluation layout, whose goals (the far end of the U) are 7
to 10 cells from the start around the wall. The same run checks that --render and --plot-critic work
on a point maze.

The margin: the untrained actor (epoch 0) never reached a far goal in any run seen (success_any 0.00
in every seed), and must stay below 0.05 here. After training, the fraction of evaluation episodes
that reach the goal, averaged over the last two evaluations, must be at least 0.1: the three seeds
of the runs behind docs/point_mazes.md had 0.20 to 0.56 at 1M env steps, so 0.1 leaves a
factor of two below the worst of them, while no policy that does not go round the U reaches it."""

import json
import os
import subprocess
import sys

from run_dir_helpers import subprocess_env
import pytest  # noqa: E402

pytestmark = pytest.mark.slow  # learning on a CPU takes minutes: python -m pytest tests/ -m slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEARN = ["--env-id", "point_u_maze", "--num-envs", "128", "--episode-length", "100", "--num-eval-envs", "64",
         "--unroll-length", "10", "--num-sgd-steps", "32", "--batch-size", "256", "--max-replay-size", "1000",
         "--min-replay-size", "100", "--width", "64", "--depth", "4", "--total-env-steps", "1200000",
         "--num-epochs", "6", "--seed", "1"]


def test_crl_learns_the_point_u_maze(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "crl_depth.py"), *LEARN, "--render", "--plot-critic",
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=1500,
                          cwd=tmp_path, env=subprocess_env(XLA_FLAGS=""))  # XLA default flags: a real run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = list((tmp_path / "runs").iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(7))
    untrained, last = records[0], records[-2:]
    trained = sum(r["eval/success_any"] for r in last) / len(last)
    print(f"success_any untrained {untrained['eval/success_any']:.2f}, last two evaluations {trained:.2f}; "
          f"time at goal {untrained['eval/time_at_goal']:.1f} -> {[round(r['eval/time_at_goal'], 1) for r in last]}")
    assert untrained["eval/success_any"] < 0.05
    assert trained >= 0.1, proc.stdout
    # the same run's pictures: the maze with the point's path, and the critic heatmap
    html = (run_dir / "rollout.html").read_text()
    assert "<svg" in html and "<polyline" in html
    assert (run_dir / "critic_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
