"""`bash benchmark.sh paper --slurm` and tools/slurm.py against a real SLURM: tools/local_slurm.sh starts
a single-node cluster (Debian's slurmctld, slurmd and munge; .ci/run installs them) on free ports in a
temporary directory, a tiny reacher sweep (2 depths x 2 seeds) runs as one job array, two tasks at a
time; one task is killed with scancel after its first checkpoint, reported as failed with its logs,
resubmitted alone, continues its run from the checkpoint, and the collected summary has every run.
Skipped, with the reason, where the cluster cannot be started (no packages, not root); with
CRL_REQUIRE_SLURM=1 (.ci/run) that is a failure instead. The plan and refusals need no cluster."""

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 20
# tests/test_e2e.py's tiny reacher run (12 training steps per epoch), with 20 epochs
TINY = ("--num-envs 4 --episode-length 20 --num-eval-envs 2 --num-epochs 20 --unroll-length 10 --num-sgd-steps 2 "
        "--batch-size 16 --max-replay-size 60 --min-replay-size 20 --width 16 --checkpoint-every 1")
STEPS = str(80 + EPOCHS * 12 * 40)  # prefill (20 steps x 4 envs) + 20 epochs of 12 x 40 env steps


def _bash(*args, env=None, timeout=120):
    env = dict(env or os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def _slurm_py(*args, env, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "slurm.py"), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def _free_port_pair():
    for port in range(27817, 28817, 2):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    pytest.skip("no two free ports for slurmctld and slurmd")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """SLURM_CONF of a running single-node cluster; stopped after the module's tests."""
    state = tmp_path_factory.mktemp("slurm")
    tool = os.path.join(ROOT, "tools", "local_slurm.sh")
    proc = subprocess.run(["bash", tool, "start", str(state), "--port", str(_free_port_pair())],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        reason = f"SLURM cannot be started here: {proc.stderr.strip()}"
        if os.environ.get("CRL_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        subprocess.run(["bash", tool, "stop", str(state)], capture_output=True, timeout=120)
        pytest.skip(reason)
    yield str(state / "slurm.conf")
    subprocess.run(["bash", tool, "stop", str(state)], capture_output=True, timeout=120)


def test_slurm_dry_run_prints_the_array_and_writes_nothing(tmp_path):
    proc = _bash("paper", "--slurm", "--dry-run", "--envs", "reacher", "--depths", "4", "8", "--seeds", "1", "2", "3",
                 "--total-env-steps", "1000", "--partition", "gpu", "--time", "1-00:00:00", "--max-parallel", "5",
                 "--sbatch-args", "--account=rl --cpus-per-task=8", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "plan: 6 runs" in out and "dry run: nothing submitted, nothing written" in out
    for line in ("#SBATCH --array=1-6%5", "#SBATCH --gpus-per-task=1", "#SBATCH --partition=gpu",
                 "#SBATCH --time=1-00:00:00", "#SBATCH --signal=B:USR1@600", "#SBATCH --requeue",
                 "#SBATCH --account=rl", "#SBATCH --cpus-per-task=8"):
        assert line + "\n" in out, line
    # the task runs the local suite's command (its flags from plan.tsv) with --runs-dir RESULTS/runs/LABEL
    assert '"$python" "$script" "${args[@]}" --runs-dir "$runs" "${resume[@]}"' in out
    assert "crl_depth__reacher__d8__s3: " in out and os.listdir(tmp_path) == []


def test_slurm_refusals(tmp_path):
    for args, message in [(("quick", "--slurm"), "--slurm does not apply to the quick suite"),
                          (("paper", "--partition", "gpu"), "--partition needs --slurm"),
                          (("paper", "--slurm", "--max-parallel", "0"), "--max-parallel needs a positive integer"),
                          (("paper", "--slurm", "--envs", "reacher", "--total-env-steps", "100", "--time", "0:05:00"),
                           "--time 0:05:00: give more than 20 minutes")]:
        proc = _bash(*args, "--results-root", str(tmp_path))
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and os.listdir(tmp_path) == []
    proc = _slurm_py("status", str(tmp_path), env=os.environ)
    assert proc.returncode == 2 and "not a `benchmark.sh paper --slurm` results directory" in proc.stderr


def _run_dir(results, label):
    (name,) = os.listdir(os.path.join(results, "runs", label))
    return os.path.join(results, "runs", label, name)


def test_slurm_sweep_kill_resubmit_collect(cluster, tmp_path):
    env = dict(os.environ, SLURM_CONF=cluster)  # and the session's JAX compilation cache (tests/conftest.py)
    t0 = time.time()
    proc = _bash("paper", "--slurm", "--envs", "reacher", "--depths", "4", "8", "--seeds", "1", "2",
                 "--total-env-steps", STEPS, "--extra", TINY, "--gpus-per-task", "0", "--max-parallel", "2",
                 "--results-root", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = re.search(r"submitted job array (\d+): 4 tasks", proc.stdout).group(1)
    (results,) = [str(p) for p in tmp_path.iterdir()]
    labels = [f"crl_depth__reacher__d{d}__s{s}" for d in (4, 8) for s in (1, 2)]

    # kill the last task with scancel once it has a checkpoint
    victim = labels[3]
    deadline = time.time() + 400
    while not glob.glob(os.path.join(results, "runs", victim, "*", "state.msgpack")):
        assert time.time() < deadline, "task 4 wrote no checkpoint"
        time.sleep(0.1)
    subprocess.run(["scancel", f"{job}_4"], check=True, env=env)
    with open(os.path.join(_run_dir(results, victim), "metrics.jsonl")) as f:
        assert len(f.readlines()) < EPOCHS + 1, "the run finished before scancel"

    proc = _slurm_py("status", results, "--wait", "--poll", "1", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "4 runs: 3 done, 1 failed" in out, out
    assert f"[4] failed     {victim}  exit 143 (SIGTERM: scancel, preemption or time limit)" in out, out
    assert f"log: {results}/logs/{victim}.log" in out and f"log: {results}/slurm/{job}_4.out" in out
    assert f"python tools/slurm.py resubmit {results}" in out
    # at most two tasks at a time (--max-parallel 2): from the tasks' own start and end times
    spans = []
    for label in labels:
        with open(os.path.join(results, "slurm", "status", f"{label}.tsv")) as f:
            job_id, _, start, wall, _ = f.read().splitlines()[-1].split("\t")
        spans.append((int(start), int(start) + int(wall)))
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) <= 2

    proc = _slurm_py("collect", results, env=env)  # with a failed run: the summary lists it, exit 1
    assert proc.returncode == 1 and f"{victim}: exit status 143" in open(os.path.join(results, "summary.md")).read()

    proc = _slurm_py("resubmit", results, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"resubmitted 1 runs as job array \d+ \(tasks 4\)", proc.stdout), proc.stdout
    proc = _slurm_py("status", results, "--wait", "--poll", "1", env=env)
    assert proc.returncode == 0 and "4 runs: 4 done" in proc.stdout, proc.stdout + proc.stderr
    with open(os.path.join(results, "logs", f"{victim}.log")) as f:
        log = f.read()
    assert log.count("=== slurm job") == 2 and "SIGTERM: stopping" in log
    assert f"--resume {_run_dir(results, victim)}" in log and "resuming from" in log

    proc = _slurm_py("collect", results, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(os.path.join(results, "runs.tsv")) as f:
        rows = [line.split("\t") for line in f.read().splitlines()[1:]]
    assert [(r[0], r[5]) for r in rows] == [(label, "0") for label in labels]
    for label in labels:  # every run: complete, one line per epoch (the resumed one too), its networks
        run_dir = _run_dir(results, label)
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            assert [json.loads(line)["epoch"] for line in f] == list(range(EPOCHS + 1)), label
        assert os.path.exists(os.path.join(run_dir, "checkpoint.msgpack"))
    summary = open(os.path.join(results, "summary.md")).read()
    assert "| crl_depth | reacher | depth 4 | 2 |" in summary and "| crl_depth | reacher | depth 8 | 2 |" in summary
    assert "No problems" in summary and os.path.exists(os.path.join(results, "curves_reacher.png"))
    print(f"slurm sweep, kill, resubmit and collect: {time.time() - t0:.0f}s")
