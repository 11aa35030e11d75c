"""`bash benchmark.sh replicate` (tools/replicate.py): the plan against hand computations (minimums in order, then
more epochs, items left out or cut, a finished deeper run fixing its item's epochs, no run of unknown cost started
without time for a start and an epoch), costs from a throughput file and from a gpu.jsonl of benchmark.sh gpu (its
start a lower bound), the dry run's projected minutes (none where no cost is known), the run watcher stopping a run
by the plan and by the budget, a stop's waits capped by the time left, the refusals (bad numbers, bad --throughput
rows), and `replicate --tiny` end to end (one module-scoped run of up to three tiny runs of point_u_maze; what holds
however the CPU's contention cuts the plan: every run started has an epoch, the report's rows are the runs' metrics
and the paper's curves by hand)."""

import json
import math
import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench  # noqa: E402
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
    assert lines[-1] == (f"projected: {(20 + 53) / 60:.1f} min in all for the runs of known cost, of the 9-minute "
                         "budget; and 1 run of cost unknown until its own first epoch")
    # no cost known at all: no minutes projected
    p = R.plan(items, _cost({}), 100.0, 6)
    assert p["epochs"] == {"A": 2, "B": 3, "C": 4}
    assert R.plan_lines(items, p, _cost({}), 540.0, 0.0)[-1] == (
        "projected: cost unknown until the first run's first epoch; planned from measurements as they come, within "
        "the 9-minute budget")


def test_plan_starts_no_run_of_unknown_cost_without_the_time_for_one():
    """An item of unknown cost is left out when the time left is not more than the floor: the smallest start and
    first epoch known, else FIRST_EPOCH_FLOOR_S; with no time left whatever the floor."""
    items = lambda: [_item("A", 2, ("a4", "done", 2)), _item("C", 4, ("c8", "pending", 0))]  # noqa: E731
    known = {"a4": (10.0, 5.0)}
    floor = R.first_epoch_floor([{"start_s": 10.0, "epoch_s": 5.0}, {"start_s": 30.0, "epoch_s": 1.0}], False)
    assert floor == (15.0, "the smallest start and first epoch known")
    assert R.first_epoch_floor([], False) == (R.FIRST_EPOCH_FLOOR_S, "the floor before any run is measured")
    assert R.FIRST_EPOCH_FLOOR_S == 60.0
    assert R.first_epoch_floor([], True)[0] == R.TINY_FIRST_EPOCH_FLOOR_S == 10.0
    p = R.plan(items(), _cost(known), 15.0, 6, floor)
    assert p["epochs"]["C"] == 0 and p["why"]["C"] == ("left out: its cost is not known, and 15 s left is not more than "
                                                       "15 s (the smallest start and first epoch known)")
    assert R.plan(items(), _cost(known), 16.0, 6, floor)["epochs"]["C"] == 4  # measured when its turn comes
    for left in (0.0, -3.0):  # no time left: out, whatever the floor
        p = R.plan(items(), _cost(known), left, 6)
        assert p["epochs"]["C"] == 0 and p["why"]["C"] == "left out: no time left"


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
    """A train_d4 row of gpu.jsonl as `tools/bench.py gpu` writes it."""
    item = next(i for i in bench.items(False) if i["name"] == "train_d4")
    return {"item": "train_d4", "stage": 1, "status": "ok", "spec": item["spec"], "paper_train_steps_per_epoch": 31,
            "step_s": 0.5, "step_times_s": [0.9, 0.5, 0.5], "wall_s": 41.9, **kw}


def test_throughput_of_an_item_with_a_variant(tmp_path):
    """train_d64 times a variant (another compile of its step) after its own calls and evaluation, inside its
    wall time: the start left over is the wall time less the step's calls, the evaluation and the variants' (a
    refused one: its compile's attempt)."""
    item = next(i for i in bench.items(False) if i["name"] == "train_d64")
    row = {"item": "train_d64", "stage": 1, "status": "ok", "spec": item["spec"], "paper_train_steps_per_epoch": 31,
           "step_s": 8.0, "step_times_s": [8.0, 8.0], "eval_s": 2.0, "wall_s": 130.0,
           "variants": {"cmdbuf": {"compile_s": 30.0, "step_s": 7.0, "train_env_steps_per_s": 4535.0},  # one call
                        "concurrent": {"compile_s": 20.0, "first_step_s": 9.0, "step_s": 6.0, "step_times_s": [9.0, 6.0]},
                        "refused": {"error": "XlaRuntimeError: INVALID_ARGUMENT", "compile_s": 1.0}}}
    path = tmp_path / "gpu.jsonl"
    path.write_text(json.dumps({"item": "meta"}) + "\n" + json.dumps(row) + "\n")
    cost = R.read_throughput([str(path)], False)[("humanoid", 64, 1)]
    assert cost["start_s"] == 130.0 - 16.0 - 2.0 - 37.0 - 35.0 - 1.0 and cost["epoch_s"] == 31 * 8.0 + 2.0 and cost["with_eval"]


def test_dry_run_plan_from_a_gpu_result(tmp_path):
    gpu = tmp_path / "gpu.jsonl"
    gpu.write_text(json.dumps({"item": "meta"}) + "\n" + json.dumps(_gpu_row()) + "\n")
    proc = _bash("--dry-run", "--items", "humanoid", "--throughput", "gpu.jsonl", "--out", "never", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # by hand: one seed's epoch 31 x 0.5 s = 15.5 s, three seeds in one process at most 3x: 46.5 s; start 41.9 - 1.9 =
    # 40 s, a lower bound (the gpu plan has no prefill). 9 minutes less the 45 s kept: 495 s. Minimum 5 epochs: 40 + 5 x
    # 46.5 = 272.5 s, then one at a time: 40 + 9 x 46.5 = 458.5 s <= 495 < 40 + 10 x 46.5 = 505: 9 epochs.
    start, epoch = 41.9 - 1.9, 3 * 31 * 0.5
    assert (f"crl_depth__humanoid__d4__s1-3 (to run): 9 epochs: at least {(start + 9 * epoch) / 60:.1f} min to go (start "
            f"at least {start:.0f} s + {epoch:.1f} s an epoch; scaled from 1 seed, x 3/1 (gpu.jsonl item train_d4, no "
            "evaluation measured); its start has no prefill: a lower bound)") in proc.stdout
    projected = float(re.search(r"projected: at least ([\d.]+) min in all, of the 9-minute budget\n", proc.stdout).group(1))
    assert abs(projected - (start + 9 * epoch) / 60) <= 0.051
    assert "dry run: nothing run, nothing written" in proc.stdout and sorted(os.listdir(tmp_path)) == ["gpu.jsonl"]
    # with the evaluation measured (train_d4_eval), and a shorter budget: fewer epochs, the cost with the evaluation
    gpu.write_text(json.dumps(_gpu_row(eval_s=2.0, wall_s=43.9)) + "\n" + json.dumps(_gpu_row()) + "\n")
    proc = _bash("--dry-run", "--items", "humanoid", "--throughput", str(gpu), "--budget-min", "5", "--seeds", "1")
    epoch = 31 * 0.5 + 2.0  # start 43.9 - 1.9 - 2.0 = 40 s (the row without the evaluation does not replace it)
    # 300 - 45 = 255 s >= 40 + 10 x 17.5 = 215: 10 epochs (the target)
    assert f"crl_depth__humanoid__d4__s1 (to run): 10 epochs: at least {(40 + 10 * epoch) / 60:.1f} min to go" in proc.stdout
    proc = _bash("--dry-run", "--items", "humanoid", "--throughput", str(gpu), "--budget-min", "2", "--seeds", "1")
    # 120 - 45 = 75 s < 40 + 5 x 17.5 = 127.5 s: left out
    assert f"left out: needs {127.5 / 60:.1f} min for its minimum of 5 epochs, " in proc.stdout


def test_refusals_write_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    row = {"env_id": "point_u_maze", "depth": 4, "num_seeds": 2, "settings": "tiny", "start_s": 9.0, "epoch_s": 1.0}
    rows = {"list.jsonl": [1, 2], "string.jsonl": "start_s", "null.jsonl": {**row, "start_s": None},
            "text.jsonl": {**row, "epoch_s": "1.0"}, "depth.jsonl": {**row, "depth": 4.5},
            "gpu_null.jsonl": _gpu_row(wall_s=None), "gpu_times.jsonl": _gpu_row(step_times_s=[0.5, None])}
    for name, r in rows.items():
        (tmp_path / name).write_text(json.dumps(row) + "\n" + json.dumps(r) + "\n")  # a good line, then the bad one
    (tmp_path / "exists").mkdir()
    for args, message in [(["--items", "reacher"], "unknown item 'reacher' (one of: humanoid, ant_hardest_maze"),
                          (["--items", "humanoid", "humanoid"], "an item named twice"),
                          (["--seeds", "0"], "--seeds must be a positive integer"),
                          (["--seeds", "abc"], "argument --seeds: invalid int value: 'abc'"),
                          (["--epochs", "0"], "--epochs must be a positive integer"),
                          (["--budget-min", "0.1"], "--budget-min must be a finite number of minutes more than 0.75"),
                          (["--budget-min", "inf"], "--budget-min must be a finite number of minutes more than 0.75 "
                                                    "(the share kept for stopping the last run and the report; got inf)"),
                          (["--budget-min", "nan"], "more than 0.75 (the share kept for stopping the last run and the "
                                                    "report; got nan)"),
                          (["--budget-min", "-5"], "report; got -5)"),
                          (["--z-max", "nan"], "--z-max must be a positive finite number (got nan)"),
                          (["--z-max", "inf"], "--z-max must be a positive finite number (got inf)"),
                          (["--z-max", "-1"], "--z-max must be a positive finite number (got -1)"),
                          (["--tiny", "--throughput", "list.jsonl"], "--throughput list.jsonl:2: not a JSON object"),
                          (["--throughput", "string.jsonl"], "--throughput string.jsonl:2: not a JSON object"),
                          (["--tiny", "--throughput", "null.jsonl"], "null.jsonl:2: start_s must be a finite number (got null)"),
                          (["--throughput", "text.jsonl"], "text.jsonl:2: epoch_s must be a finite number (got \"1.0\")"),
                          (["--throughput", "depth.jsonl"], "depth.jsonl:2: depth must be an integer (got 4.5)"),
                          (["--throughput", "gpu_null.jsonl"], "gpu_null.jsonl:2: wall_s must be a finite number (got null)"),
                          (["--throughput", "gpu_times.jsonl"], "gpu_times.jsonl:2: step_times_s must be a list of numbers"),
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


def test_stop_waits_no_longer_than_the_time_left(tmp_path):
    """A run that ignores SIGTERM: SIGKILL after half the time left to `until`, so stop() returns by then (+1 s at
    most when no time is left), the process ended."""
    script = tmp_path / "stubborn.py"
    script.write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\n"
                      "time.sleep(60)\n")
    for left, most in ((3.0, 3.0 + 0.5), (-5.0, 1.0 + 0.5)):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert proc.stdout.readline() == "up\n"  # its SIGTERM handler is set
        t0 = time.monotonic()
        R.stop(proc, t0 + left)
        assert time.monotonic() - t0 <= most and proc.poll() == -9, (left, time.monotonic() - t0, proc.poll())
        proc.stdout.close()


# --- --tiny end to end ---------------------------------------------------------------------------------------
# What is asserted holds however the machine's load cuts the plan (runs left out or stopped early): the plan's rules,
# every run started having finished an epoch, and the report being the runs' metrics.jsonl against the paper's JSON.
TINY_RUNS = (("humanoid", 4), ("ant_hardest_maze", 8), ("ant_hardest_maze", 4))  # in the order they run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicate") / "res"
    t0 = time.monotonic()
    proc = _bash("--tiny", "--out", str(out), timeout=600)
    return proc, out, time.monotonic() - t0


def _label(env, depth) -> str:
    return f"crl_depth__{env}__d{depth}__s1-2"


def _table(md) -> dict:
    """replicate.md's runs table: {label: (epochs planned, epochs done, how it ended)}."""
    rows = re.findall(r"^\| (crl_depth__\S+) \| (\d+) \| (\d+) \|(?: [^|]* \|){4} ([^|]+) \|$", md, re.M)
    return {label: (int(planned), int(done), ended) for label, planned, done, ended in rows}


def _started(md) -> dict:
    """{(env, depth): epochs done} of the runs that were started."""
    table = _table(md)
    return {(env, d): table[_label(env, d)][1] for env, d in TINY_RUNS
            if not table[_label(env, d)][2].startswith(("left out", "not run"))}


def _metrics(out, label) -> list:
    (run_dir,) = (out / "runs" / label).iterdir()
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _fmt(mean, se=None) -> str:
    """By hand, as the report writes a value: 2 decimals below 10, else 1; "mean ± se" where there is an error."""
    d = 2 if abs(mean) < 10 else 1
    return f"{mean:.{d}f}" + (f" ± {se:.{d}f}" if se is not None else "")


@pytest.mark.slow  # the tiny replicate run (up to three runs of crl_depth.py): python -m pytest tests/ -m slow
def test_tiny_plans_first_runs_and_stops_within_its_budget(tiny):
    proc, out, wall = tiny
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert text.index("plan:") < text.index("[crl_depth__humanoid__d4__s1-2]")  # the plan before any run
    first_plan = text[text.index("plan:"):text.index("[crl_depth__humanoid__d4__s1-2]")]
    assert "crl_depth__humanoid__d4__s1-2 (to run): 2 epochs; cost not known yet" in first_plan
    assert "projected: cost unknown until the first run's first epoch; planned from measurements as they come" in first_plan
    assert wall < R.TINY_BUDGET_MIN * 60
    md = (out / "replicate.md").read_text()
    table, started = _table(md), _started(md)
    assert set(table) == {_label(env, d) for env, d in TINY_RUNS}
    # the first run of each item starts (4 minutes hold both); every run started finished an epoch and ended as planned
    assert ("humanoid", 4) in started and ("ant_hardest_maze", 8) in started
    for (env, d), done in started.items():
        planned, _, ended = table[_label(env, d)]
        assert 1 <= done <= planned <= 3 and ended in ("stopped after its planned epochs", "stopped by the budget",
                                                       "finished"), (env, d, table[_label(env, d)])
    # humanoid's stand-in at most at its minimum, 2: the later item's cost was unknown when it ran
    assert table[_label("humanoid", 4)][0] <= 2
    rows = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    assert [(r["env_id"], r["depth"], r["num_seeds"], r["settings"], r["epochs"]) for r in rows] == \
        [("point_u_maze", d, 2, "tiny", started[(env, d)]) for env, d in TINY_RUNS if (env, d) in started]
    assert all(r["start_s"] > 0 and r["epoch_s"] > 0 for r in rows)
    assert (out / "replicate.png").stat().st_size > 5000
    assert re.search(r"replicate finished in [\d.]+ min of the 4-minute budget", text)


@pytest.mark.slow  # the tiny replicate run (up to three runs of crl_depth.py): python -m pytest tests/ -m slow
def test_tiny_report_against_the_papers_curves_by_hand(tiny):
    """Each row of each run started: our seeds' mean and standard error from its metrics.jsonl, the paper's value of
    the item's env at the same epoch number (--tiny), z, all by plain arithmetic; the rows are exactly the epochs the
    run did; the verdicts and the depth ordering (not compared below the item's minimum epochs or within the paper's
    own noise)."""
    _, out, _ = tiny
    md = (out / "replicate.md").read_text()
    with open(os.path.join(ROOT, "tools", "paper_curves", "fig1_main.json")) as f:
        fig1 = json.load(f)
    last = {}
    for (env, depth), done in _started(md).items():
        records = [r for r in _metrics(out, _label(env, depth)) if r["epoch"] <= done]
        expected, zs = [], []
        for epoch in sorted({r["epoch"] for r in records}):
            at = sorted((r["seed"], r["eval/time_at_goal"], r["env_steps"]) for r in records if r["epoch"] == epoch)
            assert [s for s, _, _ in at] == [1, 2] and {x for _, _, x in at} == {160 + 160 * epoch}  # the tiny schedule
            ours = [v for _, v, _ in at]
            mean = (ours[0] + ours[1]) / 2
            se = math.sqrt(((ours[0] - mean) ** 2 + (ours[1] - mean) ** 2) / (2 - 1)) / math.sqrt(2)
            paper, z = "—", None
            if epoch >= 1:
                pm = fig1[env]["depth_mean"][str(depth)][epoch - 1]
                ps = fig1[env]["depth_std_error"][str(depth)][epoch - 1]
                z = (mean - pm) / math.sqrt(se ** 2 + ps ** 2)
                paper = _fmt(pm, ps)
                zs.append(abs(z))
            expected.append(f"| {epoch} | {160 + 160 * epoch:,} | {_fmt(mean, se)} | {_fmt(ours[0])} / {_fmt(ours[1])} | "
                            f"{paper} | {'—' if z is None else f'{z:+.1f}'} |")
            last[(env, depth, epoch)] = mean
        section = md.split(f"## {env} depth {depth}\n")[1].split("\n## ")[0]
        assert [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)] == expected
        assert expected[0].startswith("| 0 | ") and len(expected) == done + 1
        within = sum(z <= 3 for z in zs)
        assert (f"{env} depth {depth}: {'inside' if within == len(zs) else 'OUTSIDE'} the paper's band: |ours - paper| "
                f"<= 3 combined s.e. at {within} of {len(zs)} evaluations") in section
    started = _started(md)
    if {("ant_hardest_maze", 8), ("ant_hardest_maze", 4)} <= set(started):
        e = min(started[("ant_hardest_maze", 8)], started[("ant_hardest_maze", 4)])
        c = fig1["ant_hardest_maze"]
        p8, p4 = c["depth_mean"]["8"][e - 1], c["depth_mean"]["4"][e - 1]
        gap = abs(p8 - p4) / math.sqrt(c["depth_std_error"]["8"][e - 1] ** 2 + c["depth_std_error"]["4"][e - 1] ** 2)
        ours8, ours4 = last[("ant_hardest_maze", 8, e)], last[("ant_hardest_maze", 4, e)]
        if e < 2:
            end = f"not compared: {e} epoch run, fewer than the item's minimum of 2"
        elif gap < 2:
            end = f"not compared: the paper's own gap there is {gap:.1f} combined s.e., under 2"
        else:
            end = "the same" if (ours8 > ours4) == (p8 > p4) and ours8 != ours4 else "NOT the same"
        line = next(line for line in md.splitlines() if line.startswith("ant_hardest_maze: depth ordering"))
        assert line.startswith(f"ant_hardest_maze: depth ordering at epoch {e}: ") and end in line, (line, end)
    else:
        assert "depth ordering" not in md
    assert "--tiny: point_u_maze at tiny settings stands in for every env" in md


@pytest.mark.slow  # the tiny replicate run (up to three runs of crl_depth.py): python -m pytest tests/ -m slow
def test_tiny_throughput_file_plans_the_next_call(tiny):
    """The costs this call measured plan the next call up front: every run's epochs at its measured cost, the projected
    minutes their sum; all three runs at the target of 3 epochs where that fits."""
    _, out, _ = tiny
    proc = _bash("--tiny", "--dry-run", "--throughput", str(out / "throughput.jsonl"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["depth"]: r for r in map(json.loads, (out / "throughput.jsonl").read_text().splitlines())}  # the last of each
    assert set(rows) == {4, 8} and "cost not known" not in proc.stdout
    total = 0.0
    for env, depth in TINY_RUNS:
        m = re.search(rf"{_label(env, depth)} \(to run\): (\d+) epochs: ([\d.]+) min to go \(start "
                      rf"{rows[depth]['start_s']:.0f} s \+ {rows[depth]['epoch_s']:.1f} s an epoch", proc.stdout)
        assert m, (env, depth, proc.stdout)
        need = rows[depth]["start_s"] + int(m.group(1)) * rows[depth]["epoch_s"]
        assert m.group(2) == f"{need / 60:.1f}"
        total += need
    projected = float(re.search(r"projected: ([\d.]+) min in all, of the 4-minute budget\n", proc.stdout).group(1))
    assert abs(projected - total / 60) <= 0.051
    at_target = 2 * (rows[4]["start_s"] + 3 * rows[4]["epoch_s"]) + rows[8]["start_s"] + 3 * rows[8]["epoch_s"]
    if at_target <= R.TINY_BUDGET_MIN * 60 - R.RESERVE_S - 5:  # (5 s for the dry run's own start)
        assert proc.stdout.count(" (to run): 3 epochs: ") == 3
