"""`bash benchmark.sh replicate` (tools/replicate.py): the plan against hand computations (minimums in order, then
more epochs, items left out or cut, a finished deeper run fixing its item's epochs), costs from a throughput file
and from a gpu.jsonl of benchmark.sh gpu, the dry run's projected minutes, the run watcher stopping a run by the
plan and by the budget, the refusals, and `replicate --tiny` end to end (one module-scoped run: three tiny runs of
point_u_maze; the report's rows against the runs' metrics and the paper's curves by hand)."""

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import curves as C  # noqa: E402
import gpu_bench  # noqa: E402
import replicate as R  # noqa: E402


def _bash(*args, cwd=ROOT, timeout=120):
    return subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), "replicate", *args], capture_output=True,
                          text=True, env=dict(os.environ, PYTHON=sys.executable), timeout=timeout, cwd=cwd)


def _item(name, min_epochs, *runs):
    """runs: (key, state, epochs done)."""
    return {"name": name, "min_epochs": min_epochs,
            "runs": [{"label": str(k), "key": k, "state": st, "epochs": e} for k, st, e in runs]}


COSTS = {"a4": (10.0, 5.0), "b8": (20.0, 4.0), "b4": (15.0, 2.0), "c8": (30.0, 10.0)}  # (start s, s an epoch)


def _cost(known):
    return lambda key: {"start_s": known[key][0], "epoch_s": known[key][1], "source": "test"} if key in known else None


def test_plan_minimums_first_then_more_epochs_in_order():
    items = [_item("A", 2, ("a4", "pending", 0)), _item("B", 3, ("b8", "pending", 0), ("b4", "pending", 0)),
             _item("C", 4, ("c8", "pending", 0))]
    p = R.plan(items, _cost(COSTS), 100.0, 6)
    # by hand: A at 2 = 10 + 2*5 = 20 (80 left); B at 3 = 20 + 3*4 + 15 + 3*2 = 53 (27 left); C at 4 = 30 + 40 > 27: out.
    # Then A one epoch at a time (5 each) to 6: 27 - 4*5 = 7 left; B one more (4 + 2 = 6): 1 left; another 6 > 1.
    assert p["epochs"] == {"A": 6, "B": 4, "C": 0}
    assert p["need_s"]["A"] == 10 + 6 * 5 and p["need_s"]["B"] == 20 + 4 * 4 + 15 + 4 * 2
    assert p["left_s"] == pytest.approx(100 - (10 + 6 * 5) - (20 + 4 * 4 + 15 + 4 * 2))
    assert p["why"]["C"] == f"left out: needs {70 / 60:.1f} min for its minimum of 4 epochs, {27 / 60:.1f} min left"


def test_plan_keeps_a_later_unknown_items_turn():
    """C's cost unknown: no item before it gets more than its minimum; C is planned at its minimum, measured later."""
    costs = {k: v for k, v in COSTS.items() if k != "c8"}
    items = [_item("A", 2, ("a4", "pending", 0)), _item("B", 3, ("b8", "pending", 0), ("b4", "pending", 0)),
             _item("C", 4, ("c8", "pending", 0))]
    p = R.plan(items, _cost(costs), 100.0, 6)
    assert p["epochs"] == {"A": 2, "B": 3, "C": 4} and p["need_s"]["C"] is None
    lines = R.plan_lines(items, p, _cost(costs), 540.0, 0.0)
    assert any("c8 (to run): 4 epochs; cost not known yet" in line for line in lines)
    assert lines[-1] == f"projected: {(20 + 53) / 60:.1f} min in all, of the 9-minute budget; and 1 run of cost not known yet"


def test_plan_of_a_running_and_a_finished_item():
    # B's deeper run has trained 2 epochs (its start paid); 20 s left: at its minimum 3 it needs (3-2)*4 + 15 + 3*2 =
    # 25 s, more than is left: cut to 2 epochs, 0 + 15 + 2*2 = 19 s
    items = [_item("A", 2, ("a4", "done", 6)), _item("B", 3, ("b8", "running", 2), ("b4", "pending", 0))]
    p = R.plan(items, _cost(COSTS), 20.0, 6)
    assert p["epochs"] == {"A": 6, "B": 2} and p["need_s"] == {"A": 0.0, "B": 19.0}
    assert p["why"]["B"].startswith("cut to 2 epochs (its minimum: 3)")
    # the deeper run finished after 5 epochs: the shallower runs 5 too, whatever the minimum or the time
    items = [_item("B", 7, ("b8", "done", 5), ("b4", "pending", 0))]
    p = R.plan(items, _cost(COSTS), 1.0, 10)
    assert p["epochs"] == {"B": 5} and p["need_s"]["B"] == 15 + 5 * 2


def test_costs_from_this_command_files_deeper_runs_and_fewer_seeds():
    measured = {("ant", 8, 3): {"start_s": 50.0, "epoch_s": 20.0}}
    given = {("ant", 8, 3): {"start_s": 1.0, "epoch_s": 1.0, "source": "f"},
             ("humanoid", 4, 1): {"start_s": 40.0, "epoch_s": 15.0, "source": "f"}}
    cost = R.cost_lookup(measured, given)
    assert cost(("ant", 8, 3)) == {"start_s": 50.0, "epoch_s": 20.0, "source": "measured here"}  # before the file
    assert cost(("ant", 4, 3))["epoch_s"] == 20.0 and "an upper bound" in cost(("ant", 4, 3))["source"]
    assert cost(("humanoid", 4, 3))["epoch_s"] == 15.0 * 3 and cost(("humanoid", 4, 3))["start_s"] == 40.0
    assert cost(("arm", 4, 3)) is None and cost(("ant", 16, 3)) is None


def _gpu_row(**kw):
    """A train_d4 row of gpu.jsonl as tools/gpu_bench.py writes it."""
    item = next(i for i in gpu_bench.items(False) if i["name"] == "train_d4")
    return {"item": "train_d4", "stage": 1, "status": "ok", "spec": item["spec"], "paper_train_steps_per_epoch": 31,
            "step_s": 0.5, "step_times_s": [0.9, 0.5, 0.5], "wall_s": 41.9, **kw}


def test_dry_run_plan_from_a_gpu_bench_result(tmp_path):
    gpu = tmp_path / "gpu.jsonl"
    gpu.write_text(json.dumps({"item": "meta"}) + "\n" + json.dumps(_gpu_row()) + "\n")
    proc = _bash("--dry-run", "--items", "humanoid", "--throughput", "gpu.jsonl", "--out", "never", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # by hand: one seed's epoch 31 x 0.5 s = 15.5 s, three seeds in one process at most 3x: 46.5 s; start 41.9 - 1.9 =
    # 40 s. 9 minutes less the report's 15 s: 525 s. Minimum 5 epochs: 40 + 5 x 46.5 = 272.5 s, then one at a time
    # up to 10: 40 + 10 x 46.5 = 505 s <= 525.
    start, epoch = 41.9 - 1.9, 3 * 31 * 0.5
    assert (f"crl_depth__humanoid__d4__s1-3 (to run): 10 epochs: {(start + 10 * epoch) / 60:.1f} min to go (start "
            f"{start:.0f} s + {epoch:.1f} s an epoch; scaled from 1 seed, x 3/1 (gpu.jsonl item train_d4, no evaluation measured))") \
        in proc.stdout
    projected = float(re.search(r"projected: ([\d.]+) min in all, of the 9-minute budget\n", proc.stdout).group(1))
    assert abs(projected - (start + 10 * epoch) / 60) <= 0.051
    assert "dry run: nothing run, nothing written" in proc.stdout and sorted(os.listdir(tmp_path)) == ["gpu.jsonl"]
    # with the evaluation measured (train_d4_eval), and a shorter budget: fewer epochs, the cost with the evaluation
    gpu.write_text(json.dumps(_gpu_row(eval_s=2.0, wall_s=43.9)) + "\n" + json.dumps(_gpu_row()) + "\n")
    proc = _bash("--dry-run", "--items", "humanoid", "--throughput", str(gpu), "--budget-min", "5", "--seeds", "1")
    epoch = 31 * 0.5 + 2.0  # start 43.9 - 1.9 - 2.0 = 40 s (the row without the evaluation does not replace it)
    # 300 - 15 = 285 s: 40 + 14 x 17.5 > 285 >= 40 + 10 x 17.5: 10 epochs (the target)
    assert f"crl_depth__humanoid__d4__s1 (to run): 10 epochs: {(40 + 10 * epoch) / 60:.1f} min to go" in proc.stdout
    proc = _bash("--dry-run", "--items", "humanoid", "--throughput", str(gpu), "--budget-min", "2", "--seeds", "1")
    # 120 - 15 = 105 s < 40 + 5 x 17.5 = 127.5 s: left out
    assert f"left out: needs {127.5 / 60:.1f} min for its minimum of 5 epochs, " in proc.stdout


def test_refusals_write_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    (tmp_path / "exists").mkdir()
    for args, message in [(["--items", "reacher"], "unknown item 'reacher' (one of: humanoid, ant_hardest_maze"),
                          (["--items", "humanoid", "humanoid"], "an item named twice"),
                          (["--seeds", "0"], "--seeds must be a positive integer"),
                          (["--seeds", "abc"], "argument --seeds: invalid int value: 'abc'"),
                          (["--epochs", "0"], "--epochs must be a positive integer"),
                          (["--budget-min", "0.1"], "--budget-min must be more than"),
                          (["--throughput", "none.jsonl"], "--throughput: no such file: none.jsonl"),
                          (["--throughput", "bad.jsonl"], "--throughput bad.jsonl:1: not JSON"),
                          (["--out", "exists"], "exists already exists; refusing to overwrite it")]:
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        proc = _bash(*args, cwd=str(tmp_path))
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and sorted(str(p) for p in tmp_path.rglob("*")) == before


FAKE_RUN = """import sys, time
print("compiled in 0.1s", flush=True)
print("epoch 0 (untrained) | time at goal 0.0", flush=True)
time.sleep(float(sys.argv[1]))
for k in range(1, 6):
    time.sleep(0.2)
    print(f"epoch {k}/5 | env steps {k} | time at goal 0.0", flush=True)
print("done", flush=True)
"""


def test_watch_stops_a_run_by_the_plan_and_by_the_budget(tmp_path):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    seen = []
    r = R.watch([sys.executable, str(script), "0"], str(tmp_path / "a.log"),
                lambda epoch, t: seen.append((epoch, t)) or epoch < 2, time.monotonic() + 60)
    assert r["stopped"] == "the plan" and [e for e, _ in seen] == [0, 1, 2] and r["wall_s"] < 10
    assert seen[0][1] < seen[1][1] < seen[2][1]  # seconds since the start, as each line came
    log = (tmp_path / "a.log").read_text()
    assert "epoch 2/5" in log and "done" not in log
    t0 = time.monotonic()
    r = R.watch([sys.executable, str(script), "30"], str(tmp_path / "b.log"), lambda e, t: True, time.monotonic() + 2)
    assert r["stopped"] == "the budget" and time.monotonic() - t0 < 15 and r["exit"] != 0
    r = R.watch([sys.executable, str(script), "0"], str(tmp_path / "c.log"), lambda e, t: True, time.monotonic() + 60)
    assert r == {**r, "stopped": None, "exit": 0} and "done" in (tmp_path / "c.log").read_text()


# --- --tiny end to end ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicate") / "res"
    t0 = time.monotonic()
    proc = _bash("--tiny", "--out", str(out), timeout=600)
    return proc, out, time.monotonic() - t0


def _metrics(out, label) -> list:
    (run_dir,) = (out / "runs" / label).iterdir()
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_plans_first_runs_and_stops_within_its_budget(tiny):
    proc, out, wall = tiny
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert text.index("plan:") < text.index("[crl_depth__humanoid__d4__s1-2]")  # the plan before any run
    assert "crl_depth__humanoid__d4__s1-2 (to run): 2 epochs; cost not known yet" in text
    assert wall < R.TINY_BUDGET_MIN * 60
    # humanoid's stand-in stopped at its minimum (2; the next item's cost unknown), the ant's ran the 3 epochs
    md = (out / "replicate.md").read_text()
    assert "| crl_depth__humanoid__d4__s1-2 | 2 | 2 |" in md and md.count("| stopped after its planned epochs |") == 3
    assert "| crl_depth__ant_hardest_maze__d8__s1-2 | 3 | 3 |" in md and "| crl_depth__ant_hardest_maze__d4__s1-2 | 3 | 3 |" in md
    rows = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    assert [(r["env_id"], r["depth"], r["num_seeds"], r["settings"]) for r in rows] == \
        [("point_u_maze", 4, 2, "tiny"), ("point_u_maze", 8, 2, "tiny"), ("point_u_maze", 4, 2, "tiny")]
    assert all(r["start_s"] > 0 and r["epoch_s"] > 0 for r in rows)
    assert (out / "replicate.png").stat().st_size > 5000
    assert re.search(r"replicate finished in [\d.]+ min of the 4-minute budget", text)


def test_tiny_report_against_the_papers_curves_by_hand(tiny):
    """Each row: our seeds' mean and standard error from metrics.jsonl, the paper's value of the item's env at the
    same epoch number (--tiny), z; the verdicts and the depth ordering."""
    _, out, _ = tiny
    md = (out / "replicate.md").read_text()
    with open(os.path.join(ROOT, "tools", "paper_curves", "fig1_main.json")) as f:
        fig1 = json.load(f)
    last = {}
    for env, depth, epochs in (("humanoid", 4, 2), ("ant_hardest_maze", 8, 3), ("ant_hardest_maze", 4, 3)):
        records = _metrics(out, f"crl_depth__{env}__d{depth}__s1-2")
        compared = []
        for epoch in range(1, epochs + 1):
            ours = [r["eval/time_at_goal"] for r in records if r["epoch"] == epoch]
            assert [r["seed"] for r in records if r["epoch"] == epoch] == [1, 2]
            mean, se = statistics.mean(ours), statistics.stdev(ours) / math.sqrt(2)
            pm, ps = fig1[env]["depth_mean"][str(depth)][epoch - 1], fig1[env]["depth_std_error"][str(depth)][epoch - 1]
            z = C.z_score(mean, se, pm, ps)
            steps = next(r["env_steps"] for r in records if r["epoch"] == epoch)
            assert steps == 160 + 160 * epoch  # the tiny prefill and epoch
            row = (f"| {epoch} | {steps:,} | {C.fmt_mean_se(mean, se)} | " + " / ".join(C.fmt_mean_se(v, None) for v in ours)
                   + f" | {C.fmt_mean_se(pm, ps)} | {C.fmt_z(z)} |")
            assert row in md, row
            compared.append(abs(z))
        within = sum(z <= 3 for z in compared)
        assert (f"{env} depth {depth}: {'inside' if within == epochs else 'OUTSIDE'} the paper's band: |ours - paper| <= 3 "
                f"combined s.e. at {within} of {epochs} evaluations") in md
        last[depth] = statistics.mean(r["eval/time_at_goal"] for r in records if r["epoch"] == epochs) if env != "humanoid" else None
    assert "| 3 | " not in md.split("## humanoid depth 4")[1].split("##")[0]  # stopped after epoch 2
    paper = {d: fig1["ant_hardest_maze"]["depth_mean"][str(d)][2] for d in (4, 8)}
    same = (last[8] > last[4]) == (paper[8] > paper[4]) and last[8] != last[4]
    assert re.search(r"ant_hardest_maze: depth ordering at epoch 3: ours .*: " + ("the same" if same else "NOT the same"), md)
    assert "--tiny: point_u_maze at tiny settings stands in for every env" in md


def test_tiny_throughput_file_plans_the_next_call(tiny):
    """The costs this call measured plan the next call up front: every run's epochs and the projected minutes."""
    _, out, _ = tiny
    proc = _bash("--tiny", "--dry-run", "--throughput", str(out / "throughput.jsonl"))
    assert proc.returncode == 0, proc.stderr
    rows = {(r["depth"]): r for r in map(json.loads, (out / "throughput.jsonl").read_text().splitlines())}  # the last of each
    need = {d: rows[d]["start_s"] + 3 * rows[d]["epoch_s"] for d in (4, 8)}  # each run at the target, 3 epochs
    for label, depth in (("humanoid__d4", 4), ("ant_hardest_maze__d8", 8), ("ant_hardest_maze__d4", 4)):
        assert f"crl_depth__{label}__s1-2 (to run): 3 epochs: {need[depth] / 60:.1f} min to go" in proc.stdout
    projected = float(re.search(r"projected: ([\d.]+) min in all, of the 4-minute budget\n", proc.stdout).group(1))
    assert abs(projected - (2 * need[4] + need[8]) / 60) <= 0.051 and "cost not known" not in proc.stdout
