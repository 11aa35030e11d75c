"""`bash benchmark.sh gpu` (tools/gpu_bench.py) at --tiny sizes on the CPU: one item of each stage runs
for real in its own process and writes a JSON line with numbers; a timed-out item is a row, not a
crash; bad input is one line and exit status 2, nothing written; the table's seeds and bfloat16
comparisons, computed from records."""

import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import pytest  # noqa: E402

import gpu_bench  # noqa: E402

NUMERIC = {"train_d4": ("compile_s", "step_s", "train_env_steps_per_s", "eval_s", "env_steps_per_s_with_eval",
                        "projected_hours", "xla_bytes"),
           "fit_d1024": ("largest_batch",),
           "seeds4_d4": ("compile_s", "step_s", "train_env_steps_per_s"),
           "env_humanoid": ("compile_s", "step_s", "env_steps_per_s")}


def _bash(*args, timeout=300):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("OUT", None)
    return subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), "gpu", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def _records(out):
    return [json.loads(line) for line in (out / "gpu.jsonl").read_text().splitlines()]


def test_tiny_one_item_of_every_stage(tmp_path):
    out = tmp_path / "r"
    # a CPU shared with other work compiles slowly: more time per item than the GPU limits give
    proc = _bash("--tiny", "--out", str(out), "--wheels", str(tmp_path / "none"), "--item-timeout", "150",
                 "--only", *NUMERIC)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta, *recs = _records(out)
    assert meta["item"] == "meta" and meta["tiny"] is True
    assert [r["item"] for r in recs] == list(NUMERIC) and [r["stage"] for r in recs] == [1, 2, 3, 4]
    for r in recs:
        assert r["status"] == "ok" and r["backend"] == "cpu", r
        for field in NUMERIC[r["item"]]:
            assert isinstance(r[field], (int, float)) and r[field] > 0, (r["item"], field, r.get(field))
    d4, fit, seeds, env = recs
    assert d4["env_steps_per_call"] == 4 * 5 and seeds["env_steps_per_call"] == 4 * 4 * 5  # seeds x envs x unroll
    assert d4["train_env_steps_per_s"] > d4["env_steps_per_s_with_eval"] and d4["params_finite"] is True
    assert len(d4["step_times_s"]) == 3 and d4["step_s"] == statistics.median(d4["step_times_s"][1:])  # after a warm-up
    assert fit["largest_batch"] == 16 and [t["batch_size"] for t in fit["tried"]] == [8, 16]
    assert env["env_steps_per_s"] * env["step_s"] == pytest.approx(env["env_steps_per_call"]) and env["env_steps_per_call"] == 4 * 5
    md = (out / "gpu.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line.split("|")[2].strip() in NUMERIC]
    assert len(rows) == 4 and all("| ok |" in row for row in rows)
    assert "| 4 | 1.48 | 18,769 |" in md and "| 64 | 10.99 | 2,528 |" in md  # the paper's, 100M steps / hours
    assert md in proc.stdout
    proc = _bash("--tiny", "--out", str(out), "--only", "env_ant")
    assert proc.returncode == 1 and "refusing to overwrite" in proc.stderr


def test_timed_out_item_is_a_row(tmp_path):
    out = tmp_path / "r"
    proc = _bash("--tiny", "--out", str(out), "--wheels", str(tmp_path / "none"), "--only", "env_ant", "train_d64",
                 "--item-timeout", "1", timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    recs = _records(out)[1:]
    assert [(r["item"], r["status"]) for r in recs] == [("train_d64", "timeout"), ("env_ant", "timeout")]
    assert all(r["error"].startswith("timed out after 1 s") and r["wall_s"] < 10 for r in recs)
    rows = [line for line in (out / "gpu.md").read_text().splitlines() if "| timeout: timed out after 1 s" in line]
    assert len(rows) == 2


def test_bad_input_and_dry_run(tmp_path):
    for args, message in ((["--bogus"], "unrecognized arguments: --bogus"),
                          (["--only", "train_d5"], "unknown item 'train_d5'"),
                          (["--budget", "0"], "positive seconds")):
        proc = _bash(*args, "--results-root", str(tmp_path), timeout=30)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, args
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    proc = _bash("--dry-run", "--results-root", str(tmp_path), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "plan: " in proc.stdout and "11 items" in proc.stdout and "dry run: nothing run" in proc.stdout
    limits = [int(line.split("(")[1].split(" s)")[0]) for line in proc.stdout.splitlines() if line.startswith("  [")]
    assert len(limits) == 11 and 30 + sum(limits) < 8 * 60  # the wheels' 30 s included
    assert os.listdir(tmp_path) == []


def test_table_compares_seeds_and_bfloat16_to_their_baselines():
    meta = {"item": "meta", "tiny": False, "date": "2026-01-01 00:00", "commit": "abc", "machine": "m",
            "gpu": "NVIDIA H200", "python": "3.12"}
    recs = [{"item": "train_d4", "stage": 1, "what": "w", "status": "ok", "train_env_steps_per_s": 20_000.0,
             "env_steps_per_s_with_eval": 19_000.0, "eval_s": 2.0, "step_s": 1.5, "compile_s": 30.0,
             "projected_hours": 1.46, "backend": "gpu", "device": "H200", "jax": "0.11.2"},
            {"item": "train_d64", "stage": 1, "what": "w", "status": "ok", "step_s": 4.0},
            {"item": "seeds4_d4", "stage": 3, "what": "w", "status": "ok", "train_env_steps_per_s": 50_000.0},
            {"item": "seeds8_d4", "stage": 3, "what": "w", "status": "timeout", "error": "timed out after 40 s"},
            {"item": "bf16_d64", "stage": 3, "what": "w", "status": "ok", "step_s": 3.0}]
    md = gpu_bench.table(recs, meta)
    assert "4 seeds: 2.50x the env steps/s of 1 seed" in md and "8 seeds" not in md
    assert "bfloat16 / float32 step time at depth 64: 0.75" in md
    assert "| 4 | 1.48 | 18,769 | 19,000 | 20,000 | 1.46 |" in md
    assert "| 3 | seeds8_d4 | w | timeout: timed out after 40 s |" in md
    assert "device: H200 (gpu)" in md and "jax 0.11.2" in md
