"""A clone is the whole product: the repository's tracked files (git ls-files) copied into a temporary
directory with nothing beside it, where `bash benchmark.sh paper --dry-run` prints the paper's plan with
its env-step budgets and the summary of a tiny results folder shows the paper's numbers."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The tracked files alone, in tmp/clone; tmp holds nothing else."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    dest = tmp_path_factory.mktemp("alone") / "clone"
    for rel in filter(None, files.decode().split("\0")):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):  # a file deleted in the working tree but still tracked is left out
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))
    assert os.listdir(os.path.dirname(dest)) == ["clone"]
    return str(dest)


def test_clone_paper_dry_run_prints_the_plan_with_budgets(clone):
    proc = subprocess.run(["bash", "benchmark.sh", "paper", "--dry-run"], cwd=clone, capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    with open(os.path.join(clone, "tools", "paper_numbers.json")) as f:
        budgets = json.load(f)["env_steps"]["values"]
    assert f"plan: {len(budgets) * 5 * 3} runs" in out  # the main table's envs x depths 4..64 x seeds 1 2 3
    for env, steps in budgets.items():
        assert f"--env-id {env} --depth 64 --seed 3 --total-env-steps {steps} " in out, env
    assert "--env-id humanoid_big_maze --depth 4 --seed 1 --total-env-steps 400000000 " in out
    assert "dry run: nothing run, nothing written" in out and not os.path.exists(os.path.join(clone, "benchmark_results"))


def test_clone_summary_shows_the_papers_numbers(clone):
    results = os.path.join(clone, "benchmark_results", "paper__fake")
    for depth in (4, 64):
        run_dir = os.path.join(results, "runs", f"crl_depth__humanoid__d{depth}__s1", "humanoid__crl_depth__1__0")
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "args.json"), "w") as f:
            json.dump({"exp_name": "crl_depth", "env_id": "humanoid", "depth": depth, "seed": 1, "episode_length": 1000}, f)
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps({"epoch": e, "env_steps": 1000 * e, "eval/time_at_goal": 10.0 * e}) + "\n"
                         for e in range(3))
    proc = subprocess.run([sys.executable, "tools/benchmark_summary.py", "summarize", results], cwd=clone,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = open(os.path.join(results, "summary.md")).read()
    assert "| crl_depth | humanoid | depth 4 | 1 | 15.0 | 1000 | 12.6 ± 1.3 |" in text  # last-5 mean of 10, 20
    assert "| crl_depth | humanoid | depth 64 | 1 | 15.0 | 1000 | 649.0 ± 19.0 |" in text
    assert "| 1.48 |" in text and "| 10.99 |" in text  # the paper's hours of these runs
