"""`bash benchmark.sh replicate`: does it learn like the paper? The early part of the paper's published
learning curves (tools/paper_curves/), run here at the paper's settings with only the env-step budget
shortened, in one command sized to a GPU budget (default 9 minutes); what it compares and what a pass
and a miss mean: docs/replicate.md.

    bash benchmark.sh replicate [--items NAME...] [--seeds N] [--epochs T] [--budget-min M]
                                [--throughput FILE...] [--out DIR] [--z-max Z] [--dry-run] [--tiny]

Items, in order of priority (--items picks and orders them):
  humanoid          depth 4: the paper's curve is tight from the first epochs (standard error 0.1-0.3)
  ant_hardest_maze  depth 8 against depth 4: the paper's depth gap opens at 6-7M env steps
  arm_push_easy     depth 8 against depth 4: the paper's depth gap, clear at 10M env steps
Each run is crl_depth.py at its defaults, the paper's (512 envs x 62 steps, 800 SGD steps of batch 512,
width 256, 128 evaluation envs), with --num-seeds N (seeds 1..N trained in one process) and
--num-epochs T --total-env-steps 539,648 + T x 984,064: the paper's prefill, and the paper's epoch (31
training steps of 31,744 env steps, then an evaluation) as in its runs of 100M env steps and more; so
our evaluation k lies at the env steps of the paper's evaluation k, and its value is set against it.
The runs of an item go deepest first; the shallower ones run as many epochs as the deepest reached.

The plan. A run costs its start (from launch to its untrained evaluation: imports, compile, prefill)
and its epochs (seconds each, training and evaluation). Those come from the runs of this command (each
run measures its own start and epoch as it goes), from --throughput files (the throughput.jsonl an
earlier call wrote, or the gpu.jsonl of `bash benchmark.sh gpu`, whose start has no prefill: a lower
bound), or for a run not measured from the same env's deeper run (an upper bound) or from fewer seeds
(scaled by seeds). The plan gives each item its minimum epochs, in order, while they fit in the budget
(an item whose cost is not known yet is measured when its turn comes, if at least the smallest start and
first epoch measured so far is left, or before any is measured, 60 s; --tiny 10 s), then more epochs, up
to T, in order, where no later item's cost is still unknown. It is printed first and again after each
run's first epoch; every run is started for T epochs and stopped after the epoch the plan gives it (at T
too: what a run does after its last epoch, saving its networks, is not needed here), or when its next
epoch would end after the runs' share of the budget.

The budget. The runs end by the budget less 45 s: a run still going then is stopped (SIGTERM, then
SIGKILL, each wait capped by the time left), which takes at most 13 s; the rest is the report's (reading
the runs' metrics and drawing one figure; matplotlib is loaded and a figure drawn at start-up, before any
run).

Output in --out (default benchmark_results/replicate__{date}__{git describe}; refused if it exists):
runs/, logs/, throughput.jsonl (each run's start and epoch seconds, for --throughput next time),
replicate.md (the plan as run; per item and depth, each epoch: ours, mean ± s.e. over our seeds and each
seed's value, next to the paper's at the same env steps, and the difference in combined standard errors;
whether each curve stayed inside the paper's band, |difference| <= Z combined s.e. at every epoch, and
whether the depths come in the paper's order at their last shared epoch: not compared when the item ran
fewer than its minimum epochs, or when the paper's own gap between the depths there is under 2 combined
s.e.) and replicate.png (ours over the paper's curves, bands ± s.e.).

--tiny: the whole path on a CPU: point_u_maze at tiny settings stands in for every env,
items humanoid and ant_hardest_maze (one depth, and two depths ordered: 3 runs), 2 seeds, 3 epochs
(minimum 2), a 4-minute budget; its epochs are set against the paper's epochs of the same number (not the
same env steps): the verdicts then say nothing of learning. --dry-run: the plan from the
--throughput files; nothing run or written. Errors: one line on stderr, exit 2, nothing written.
"""

import argparse
import datetime
import json
import math
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import curves as C  # noqa: E402  (tools/curves.py: the paper's curves and the comparison)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> env, depths (run deepest first), minimum epochs (where the paper's curve says something), why
ITEMS = {
    "humanoid": ("humanoid", (4,), 5, "the paper's curve is tight from the first epochs"),
    "ant_hardest_maze": ("ant_hardest_maze", (8, 4), 7, "the paper's depth gap opens at 6-7M env steps"),
    "arm_push_easy": ("arm_push_easy", (8, 4), 10, "the paper's depth gap, clear at 10M env steps"),
}
PAPER_EPOCHS = 10  # T: the paper's first 10 evaluations, 10.4M env steps
# --tiny: the stand-in env, its settings (4 training steps of 8 envs x 5 steps an epoch, after a prefill of
# 4 unrolls), epochs, minimum, seeds and budget
TINY_ENV = "point_u_maze"
TINY_FLAGS = ("--num-envs 8 --episode-length 20 --num-eval-envs 4 --unroll-length 5 --num-sgd-steps 2 "
              "--batch-size 16 --max-replay-size 40 --min-replay-size 20 --width 16")
TINY_EPOCHS, TINY_MIN_EPOCHS, TINY_SEEDS, TINY_BUDGET_MIN = 3, 2, 2, 4.0
TINY_ITEMS = ("humanoid", "ant_hardest_maze")  # one depth, and two depths ordered: the whole path in 3 runs
RESERVE_S = 45.0  # of the budget, after the runs' share: stopping the last run (STOP_S at most) and the report
STOP_S = 12.0  # a run stopped at the end of the runs' share has ended (or been given up) by STOP_S + 1 s later
# no run of unknown cost starts with less than this left before a start and first epoch are measured (the paper's
# settings: the compile of depth 4's training step alone took 24.8 s on one H200, docs/results.md; --tiny)
FIRST_EPOCH_FLOOR_S, TINY_FIRST_EPOCH_FLOOR_S = 60.0, 10.0
EPOCH_LINE = re.compile(r"^epoch (\d+)[ /]")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def schedule(tiny: bool) -> tuple[int, int]:
    """(prefill env steps, env steps of one epoch): the paper's (its humanoid budget and epochs; every env of
    the paper has the same epoch), or --tiny's."""
    if tiny:
        return 4 * 5 * 8, 4 * 8 * 5
    return C.paper_schedule(100_000_000, 100)


def total_env_steps(epochs: int, tiny: bool) -> int:
    prefill, per_epoch = schedule(tiny)
    return prefill + epochs * per_epoch


# ==================================================================================================
# Costs: (start s, epoch s) of a run, measured here or read from --throughput files
# ==================================================================================================
def read_throughput(paths: list[str], tiny: bool) -> dict:
    """{(env, depth, seeds): cost} from throughput.jsonl rows (this tool's) and gpu.jsonl rows of
    `tools/bench.py gpu` (its training items at the paper's defaults: the epoch is the paper's 31 training
    steps at its step time plus its evaluation, where it measured one; the start is the item's wall time less
    its training steps and evaluation). A later row replaces an earlier one of the same run (but a gpu.jsonl
    row without an evaluation does not replace one with)."""
    settings = "tiny" if tiny else "paper"
    out: dict = {}
    for path in paths:
        if not os.path.isfile(path):
            fail(f"--throughput: no such file: {path}")
        try:
            with open(path) as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            fail(f"--throughput {path}: unreadable ({' '.join(str(e).split())})")
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"--throughput {path}:{i}"
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{where}: not JSON ({e})")
            if not isinstance(r, dict):
                fail(f"{where}: not a JSON object")
            if {"env_id", "depth", "num_seeds", "start_s", "epoch_s"} <= set(r):
                check_fields(where, r, {"env_id": str, "depth": int, "num_seeds": int, "start_s": float, "epoch_s": float})
                if r["epoch_s"] <= 0 or r["start_s"] < 0:
                    fail(f"{where}: epoch_s must be positive and start_s not negative")
                if r.get("settings") == settings:
                    out[(r["env_id"], r["depth"], r["num_seeds"])] = {
                        "start_s": float(r["start_s"]), "epoch_s": float(r["epoch_s"]),
                        "source": f"{os.path.basename(path)} ({r.get('date', '?')}, {r.get('device', '?')})"}
            elif gpu_paper_row(r) and not tiny:
                check_fields(where, r, {"step_s": float, "wall_s": float, "step_times_s": list, "item": str,
                                        **({"eval_s": float} if "eval_s" in r else {}),
                                        **({"paper_train_steps_per_epoch": int} if "paper_train_steps_per_epoch" in r else {})})
                check_fields(where + " spec", r["spec"], {"env_id": str, "depth": int,
                                                          **({"num_seeds": int} if "num_seeds" in r["spec"] else {})})
                if not all(number(t) for t in r["step_times_s"]):
                    fail(f"{where}: step_times_s must be a list of numbers")
                if r["step_s"] <= 0:
                    fail(f"{where}: step_s must be positive")
                s = r["spec"]
                key = (s["env_id"], s["depth"], s.get("num_seeds", 1))
                if "eval_s" not in r and out.get(key, {}).get("with_eval"):
                    continue  # an item that measured the evaluation too is the better one
                steps = r.get("paper_train_steps_per_epoch", 31)
                eval_s = r.get("eval_s", 0.0)
                variants_s = sum(v["compile_s"] + sum(v.get("step_times_s", [v.get("step_s", 0.0)]))  # after the step's
                                 for v in r.get("variants", {}).values())
                out[key] = {"with_eval": "eval_s" in r, "start_lower_bound": True,
                            "start_s": max(0.0, r["wall_s"] - sum(r["step_times_s"]) - eval_s - variants_s),
                            "epoch_s": steps * r["step_s"] + eval_s,
                            "source": f"{os.path.basename(path)} item {r['item']}" + ("" if "eval_s" in r else
                                                                                       ", no evaluation measured")}
    return out


def number(v) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_fields(where: str, r: dict, types: dict) -> None:
    """One line and exit 2 unless each field of r has its type (float: a finite number; int: an integer)."""
    what = {str: "a string", int: "an integer", float: "a finite number", list: "a list"}
    for key, t in types.items():
        v = r.get(key)
        ok = (number(v) if t is float else isinstance(v, int) and not isinstance(v, bool) if t is int
              else isinstance(v, t))
        if not ok:
            fail(f"{where}: {key} must be {what[t]} (got {json.dumps(v)})")


def gpu_paper_row(r: dict) -> bool:
    """A finished training item of `tools/bench.py gpu` at the paper's defaults (not --tiny)."""
    s = r.get("spec")
    if not isinstance(s, dict):
        return False
    paper = dict(num_envs=512, unroll_length=62, num_sgd_steps=800, batch_size=512, episode_length=1000,
                 max_replay_size=10_000, min_replay_size=1_000, width=256, remat=False, compute_dtype="float32")
    return (r.get("status") == "ok" and s.get("kind") == "train" and not s.get("actor_depth") and not s.get("xla_flags")
            and s.get("unroll", 2) == 2 and all(s.get(k) == v for k, v in paper.items())
            and all(k in r for k in ("step_s", "step_times_s", "wall_s")))


def cost_lookup(measured: dict, given: dict) -> Callable:
    """cost(env, depth, seeds): {start_s, epoch_s, source} or None, from (in this order) this command's
    measurement, a --throughput file, the same env and seeds at a deeper depth (an upper bound), the same env
    and depth with fewer seeds (its epoch scaled by seeds)."""
    def cost(key: tuple) -> Optional[dict]:
        env, depth, seeds = key
        for known, where in ((measured, "measured here"), (given, None)):
            c = known.get(key)
            if c and c.get("epoch_s") is not None:
                return {**c, "source": where or c["source"]}
        for known in (measured, given):
            deeper = sorted(d for (e, d, n), c in known.items() if e == env and n == seeds and d > depth
                            and c.get("epoch_s") is not None)
            if deeper:
                c = known[(env, deeper[0], seeds)]
                return {**c, "source": f"depth {deeper[0]}'s ({c.get('source', 'measured here')}), an upper bound"}
        for known in (measured, given):
            fewer = sorted(n for (e, d, n), c in known.items() if e == env and d == depth and n < seeds
                           and c.get("epoch_s") is not None)
            if fewer:
                c = known[(env, depth, fewer[-1])]
                return {"start_s": c["start_s"], "epoch_s": c["epoch_s"] * seeds / fewer[-1],
                        **({"start_lower_bound": True} if c.get("start_lower_bound") else {}),
                        "source": f"scaled from {fewer[-1]} seed{'s' * (fewer[-1] > 1)}, x {seeds}/{fewer[-1]} "
                                  f"({c.get('source', 'measured here')})"}
        return None
    return cost


# ==================================================================================================
# The plan
# ==================================================================================================
def remaining_s(run: dict, epochs: int, c: dict) -> float:
    """Seconds a run still needs to reach `epochs`: its start unless started, and the epochs it lacks."""
    if run["state"] == "done":
        return 0.0
    return (0.0 if run["state"] == "running" else c["start_s"]) + max(0, epochs - run["epochs"]) * c["epoch_s"]


def item_need(item: dict, epochs: int, cost: Callable) -> Optional[float]:
    """Seconds the item's unfinished runs need for `epochs` each; None if one's cost is unknown."""
    total = 0.0
    for run in item["runs"]:
        if run["state"] == "done":
            continue
        c = cost(run["key"])
        if c is None:
            return None
        total += remaining_s(run, epochs, c)
    return total


def first_epoch_floor(known: list[dict], tiny: bool) -> tuple[float, str]:
    """(seconds, what they are): the least time a run of unknown cost is started with: the smallest start and
    first epoch among the costs known (measured or given), else FIRST_EPOCH_FLOOR_S (--tiny: its own)."""
    firsts = [c["start_s"] + c["epoch_s"] for c in known if c.get("epoch_s") is not None]
    if firsts:
        return min(firsts), "the smallest start and first epoch known"
    return (TINY_FIRST_EPOCH_FLOOR_S if tiny else FIRST_EPOCH_FLOOR_S), "the floor before any run is measured"


def plan(items: list[dict], cost: Callable, time_left: float, target: int,
         floor: tuple[float, str] = (0.0, "")) -> dict:
    """The epochs of each item (0: left out) for the time left (seconds), given what each run has done
    (run state pending, running or done, and its epochs). First each item in order at its minimum (at least
    what its runs have done; an item with a finished run at that run's epochs), if its known cost fits in what
    is left; an item of unknown cost not started yet at its minimum (measured when it starts) if more than
    floor[0] seconds are left (floor: first_epoch_floor()), else left out. A running item that no longer fits
    keeps the most epochs that fit. Then, in order, each item of known cost one epoch more at a time, up to
    target, while it fits and no later item's cost is unknown. Returns {"epochs", "need_s" (seconds of each
    item still to come, None if unknown), "why" (left out or cut), "left_s"}."""
    epochs, need, why, left = {}, {}, {}, time_left
    for item in items:
        name = item["name"]
        done = [r["epochs"] for r in item["runs"] if r["state"] == "done"]
        reached = max((r["epochs"] for r in item["runs"]), default=0)
        started = reached > 0 or any(r["state"] == "running" for r in item["runs"])
        e = min(done) if done else min(target, max(item["min_epochs"], reached))
        n = item_need(item, e, cost)
        if n is None and not done and not started and (left <= 0 or left <= floor[0]):
            epochs[name], need[name] = 0, 0.0
            why[name] = (f"left out: its cost is not known, and {max(left, 0):.0f} s left is not more than "
                         f"{floor[0]:.0f} s ({floor[1]})" if left > 0 else "left out: no time left")
            continue
        if n is not None and n > left and not done:
            if not started:
                epochs[name], need[name] = 0, 0.0
                why[name] = (f"left out: needs {n / 60:.1f} min for its minimum of {e} epochs, "
                             f"{max(left, 0) / 60:.1f} min left")
                continue
            while e > max(reached, 1) and item_need(item, e, cost) > left:
                e -= 1
            n = item_need(item, e, cost)
            why[name] = f"cut to {e} epochs (its minimum: {item['min_epochs']}): no more fit in the time left"
        epochs[name], need[name] = e, n
        left -= n or 0.0
    for i, item in enumerate(items):
        name = item["name"]
        if not epochs[name] or need[name] is None or any(r["state"] == "done" for r in item["runs"]):
            continue
        if any(need[later["name"]] is None and epochs[later["name"]] for later in items[i + 1:]):
            continue  # a later item's cost is unknown: it keeps its turn
        while epochs[name] < target:
            more = item_need(item, epochs[name] + 1, cost) - need[name]
            if more > left:
                break
            epochs[name] += 1
            need[name] += more
            left -= more
    return {"epochs": epochs, "need_s": need, "why": why, "left_s": left}


def plan_lines(items: list[dict], p: dict, cost: Callable, budget_s: float, elapsed_s: float) -> list[str]:
    """The plan, a line a run, then the projected minutes: those of the costs known (at least, where a start is
    a lower bound), and how many runs are of a cost not known yet; no number where no cost is known."""
    lines, unknown, known, lower = [], 0, 0, False
    for item in items:
        name, e = item["name"], p["epochs"][item["name"]]
        for run in item["runs"]:
            c = cost(run["key"])
            n = f"{run['epochs']} epoch{'s' * (run['epochs'] != 1)}"
            state = {"done": f"done: {n}", "running": f"running: {n} so far"}.get(run["state"], "to run")
            if not e:
                what = p["why"][name]
            elif c is None:
                unknown += run["state"] != "done"
                what = f"{e} epochs; cost not known yet: measured by its own start and first epoch"
            else:
                known += run["state"] != "done"
                bound = bool(c.get("start_lower_bound")) and run["state"] == "pending"
                lower |= bound
                at_least = "at least " if bound else ""
                what = (f"{e} epochs: {at_least}{remaining_s(run, e, c) / 60:.1f} min to go (start {at_least}"
                        f"{c['start_s']:.0f} s + {c['epoch_s']:.1f} s an epoch; {c['source']}"
                        + ("; its start has no prefill: a lower bound" if c.get("start_lower_bound") else "") + ")")
            lines.append(f"  {run['label']} ({state}): {what}")
        if e and name in p["why"]:
            lines.append(f"  ({name}: {p['why'][name]})")
    so_far = f" ({elapsed_s / 60:.1f} so far)" if elapsed_s >= 3 else ""
    if unknown and not known:
        lines.append(f"projected: cost unknown until the first run's first epoch; planned from measurements as they "
                     f"come, within the {budget_s / 60:g}-minute budget{so_far}")
        return lines
    total = sum(n for n in p["need_s"].values() if n)
    lines.append(f"projected: {'at least ' if lower else ''}{(elapsed_s + total) / 60:.1f} min in all{so_far}"
                 + (" for the runs of known cost" if unknown else "") + f", of the {budget_s / 60:g}-minute budget"
                 + (f"; and {unknown} run{'s' * (unknown > 1)} of cost unknown until "
                    f"{'its' if unknown == 1 else 'their'} own first epoch" if unknown else ""))
    return lines


# ==================================================================================================
# Running: each run started for its item's target epochs, stopped after the epoch the plan gives it
# ==================================================================================================
def start_reader(proc: subprocess.Popen) -> queue.Queue:
    """Lines of the process's output, each with the time it came, then (time, None) at its end."""
    q: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            q.put((time.monotonic(), line))
        q.put((time.monotonic(), None))

    threading.Thread(target=read, daemon=True).start()
    return q


def stop(proc: subprocess.Popen, until: float) -> None:
    """SIGTERM to the run's process group (its own session); SIGKILL if it still runs after half the time left
    to `until` (time.monotonic()); then a wait for its end up to `until`. Each wait is at most 10 s and at least
    0.5 s: it returns by until + 1 s at the latest, the process ended or not."""
    for sig, share in ((signal.SIGTERM, 0.5), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=min(10.0, max(0.5, share * (until - time.monotonic()))))
            return
        except subprocess.TimeoutExpired:
            pass


def watch(cmd: list[str], log_path: str, on_epoch: Callable, deadline: float, stop_by: Optional[float] = None) -> dict:
    """Runs cmd, its output to log_path; on_epoch(epoch, seconds since the start) after each epoch line
    returns whether the run goes on. Stops it when that says no, or at the deadline (time.monotonic()); a stop
    and the rest of its output take until stop_by (default deadline + STOP_S) + 1 s at the latest."""
    stop_by = stop_by if stop_by is not None else deadline + STOP_S
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
                                start_new_session=True)
        lines, stopped, ended = start_reader(proc), None, False
        try:
            while True:
                try:
                    t, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    stopped = "the budget"
                    break
                if line is None:
                    ended = True
                    break
                log.write(line)
                log.flush()
                m = EPOCH_LINE.match(line)
                if m and not on_epoch(int(m.group(1)), t - t0):
                    stopped = "the plan"
                    break
        finally:  # (also on Ctrl-C: the run is in its own session, so it would not get the interrupt)
            if stopped or not ended:
                stop(proc, stop_by)
        if ended:  # its output closed: it is ending
            try:
                proc.wait(timeout=max(0.0, stop_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop(proc, stop_by)
        end = min(time.monotonic() + 5, stop_by)
        while not ended and time.monotonic() < end:  # the rest of its output, up to its end
            try:
                _, line = lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            log.write(line)
    return {"exit": proc.poll(), "stopped": stopped, "wall_s": time.monotonic() - t0}


def run_dir_of(runs_dir: str) -> Optional[str]:
    found = sorted(os.path.join(runs_dir, d) for d in os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    return next((d for d in reversed(found) if os.path.isfile(os.path.join(d, "metrics.jsonl"))), None)


def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# ==================================================================================================
# The report
# ==================================================================================================
def plot_machinery():
    """matplotlib.pyplot, loaded and one small figure drawn (on a fresh machine its font cache is built then):
    called at start-up, so that the report's share of the budget draws only its own figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], "--", label="x")
    ax.fill_between([0, 1], [0, 0], [1, 1], alpha=0.1, hatch="//")
    ax.set_title("x")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    plt.close(fig)
    return plt


def report(items: list[dict], a: argparse.Namespace, meta: dict, out: str, plt=None) -> list[str]:
    """replicate.md's text (also printed) and replicate.png: per item and depth, ours against the paper's curve."""
    curves = C.load_curves()
    lines = [f"# replicate: {meta['command']}", "", "```", *(f"{k}: {v}" for k, v in meta.items() if k != "command"),
             "```", ""]
    if a.tiny:
        lines += [f"--tiny: {TINY_ENV} at tiny settings stands in for every env, on a CPU; its epochs are set against the "
                  "paper's epochs of the same number (not the same env steps). The verdicts check the path, not learning.", ""]
    lines += ["## Runs", "", "| run | epochs planned | epochs done | start s | s an epoch | env steps/s | wall | ended |",
              "|---|---|---|---|---|---|---|---|"]
    for item in items:
        for run in item["runs"]:
            m = run.get("measured") or {}
            sps = (f"{run['seeds'] * schedule(a.tiny)[1] / m['epoch_s']:,.0f}" if m.get("epoch_s") else "—")
            lines.append(f"| {run['label']} | {run.get('planned', 0)} | {run['epochs']} | "
                         f"{C.fmt_mean_se(m['start_s'], None, 0) if 'start_s' in m else '—'} | "
                         f"{C.fmt_mean_se(m['epoch_s'], None) if m.get('epoch_s') else '—'} | {sps} | "
                         f"{run.get('wall_s', 0):.0f} s | {run.get('ended', 'not run')} |")
    lines.append("")
    panels, verdicts = [], []
    for item in items:
        env = item["env"]
        series, last = [], {}
        for i, run in enumerate(item["runs"]):
            run_dir = run.get("dir")
            curve = C.find_curve(curves, env, run["depth"])
            if not run_dir or curve is None:
                continue
            # the epochs it was stopped after (a tiny run may finish one more before the stop reaches it)
            rows = [r for r in C.pool([C.read_run(run_dir)]) if r[0] <= run["epochs"]]
            if not rows:
                continue
            paper_x = {k: curve["xs"][k - 1] for k in range(1, len(curve["xs"]) + 1)} if a.tiny else None
            rows = C.compare_rows(rows, curve, paper_x)
            name = f"{env} depth {run['depth']}"
            v = C.verdict(rows, a.z_max)
            lines += [f"## {name}", "", f"{run['label']}: {run_dir}; the paper's curve: tools/paper_curves/{curve['source']}",
                      "", *C.rows_table(rows), "", C.verdict_line(name, v), ""]
            verdicts.append(C.verdict_line(name, v))
            series.append((f"depth {run['depth']}", rows, curve, i, f"--tiny: {TINY_ENV} at tiny settings" if a.tiny else ""))
            last[run["depth"]] = rows
        if len(last) > 1:
            shared = set.intersection(*({r["epoch"] for r in rows if r["paper"]} for rows in last.values()))
            if shared and max(shared) < item["min_epochs"]:  # before the paper's gap opens: the order says nothing
                line = (f"{env}: depth ordering at epoch {max(shared)}: not compared: {max(shared)} epoch"
                        f"{'s' * (max(shared) != 1)} run, fewer than the item's minimum of {item['min_epochs']}")
            else:
                line = C.ordering_line(env, C.ordering({d: next(r for r in rows if r["epoch"] == max(shared))
                                                        for d, rows in last.items()}) if shared else None)
            lines += [line, ""]
            verdicts.append(line)
        if series:
            panels.append((env, series))
        elif item.get("why"):
            lines += [f"## {env}", "", item["why"], ""]
    lines += ["## Verdicts", "", *(f"- {v}" for v in verdicts or ["nothing compared: no run finished an epoch"]), ""]
    if panels:
        plt = plt or plot_machinery()
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
        for ax, (env, series) in zip(axes[0], panels):
            C.draw(ax, series, f"{env}" + (f" (stand-in: {TINY_ENV}, tiny)" if a.tiny else ""))
        fig.suptitle("ours (solid, ± s.e. over seeds) against the paper's curves (dashed, ± s.e.)", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "replicate.png"), dpi=100)
        plt.close(fig)
        lines.append("Plot: replicate.png")
    return lines


# ==================================================================================================
# Main
# ==================================================================================================
def parse() -> argparse.Namespace:
    p = C.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", nargs="+", metavar="NAME",
                   help=f"items in order of priority (default: {' '.join(ITEMS)}; --tiny: {' '.join(TINY_ITEMS)})")
    p.add_argument("--seeds", type=int, metavar="N", help=f"seeds of each run, in one process (default 3; --tiny {TINY_SEEDS})")
    p.add_argument("--epochs", type=int, metavar="T",
                   help=f"the most epochs of a run (default {PAPER_EPOCHS}; --tiny {TINY_EPOCHS})")
    p.add_argument("--budget-min", type=float, metavar="M",
                   help=f"minutes for the whole command (default 9; --tiny {TINY_BUDGET_MIN:g})")
    p.add_argument("--throughput", nargs="+", default=[], metavar="FILE",
                   help="throughput.jsonl of an earlier call or gpu.jsonl of benchmark.sh gpu: costs known before the runs")
    p.add_argument("--out", metavar="DIR",
                   help="results directory (default benchmark_results/replicate__{date}__{git describe})")
    p.add_argument("--z-max", type=float, default=C.Z_MAX, metavar="Z",
                   help="inside the paper's band: |z| at most this (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; run and write nothing")
    p.add_argument("--tiny", action="store_true", help=f"the whole path on a CPU: {TINY_ENV} stands in, tiny settings")
    a = p.parse_args()
    a.items = a.items or list(TINY_ITEMS if a.tiny else ITEMS)
    for name in a.items:
        if name not in ITEMS:
            fail(f"unknown item {name!r} (one of: {', '.join(ITEMS)})")
    if len(set(a.items)) != len(a.items):
        fail("--items: an item named twice")
    a.seeds = a.seeds if a.seeds is not None else (TINY_SEEDS if a.tiny else 3)
    a.epochs = a.epochs if a.epochs is not None else (TINY_EPOCHS if a.tiny else PAPER_EPOCHS)
    a.budget_min = a.budget_min if a.budget_min is not None else (TINY_BUDGET_MIN if a.tiny else 9.0)
    for flag, v in (("--seeds", a.seeds), ("--epochs", a.epochs)):
        if v < 1:
            fail(f"{flag} must be a positive integer (got {v})")
    if not (math.isfinite(a.budget_min) and a.budget_min * 60 > RESERVE_S):
        fail(f"--budget-min must be a finite number of minutes more than {RESERVE_S / 60:g} (the share kept for "
             f"stopping the last run and the report; got {a.budget_min:g})")
    if not (math.isfinite(a.z_max) and a.z_max > 0):
        fail(f"--z-max must be a positive finite number (got {a.z_max:g})")
    return a


def main() -> None:
    t_start = time.monotonic()
    a = parse()
    given = read_throughput(a.throughput, a.tiny)
    describe = sh(["git", "describe", "--always", "--dirty"]) or "nogit"
    date = datetime.datetime.now()
    out = a.out or os.path.join(ROOT, "benchmark_results", f"replicate{'-tiny' if a.tiny else ''}__{date:%Y-%m-%d}__{describe}")
    if os.path.exists(out) and not a.dry_run:
        fail(f"{out} already exists; refusing to overwrite it (give --out)")
    budget_s = a.budget_min * 60
    end = t_start + budget_s - RESERVE_S
    items = []
    for name in a.items:
        env, depths, min_epochs, why = ITEMS[name]
        run_env = TINY_ENV if a.tiny else env
        runs = [{"label": f"crl_depth__{env}__d{d}__s1-{a.seeds}" if a.seeds > 1 else f"crl_depth__{env}__d{d}__s1",
                 "key": (run_env, d, a.seeds), "depth": d, "seeds": a.seeds, "state": "pending", "epochs": 0}
                for d in depths]
        items.append({"name": name, "env": env, "min_epochs": min(TINY_MIN_EPOCHS if a.tiny else min_epochs, a.epochs),
                      "runs": runs, "about": why})
    measured: dict = {}
    cost = cost_lookup(measured, given)
    floor = lambda: first_epoch_floor([*measured.values(), *given.values()], a.tiny)  # noqa: E731
    prefill, per_epoch = schedule(a.tiny)
    print(f"replicate: the paper's early learning curves | budget {a.budget_min:g} min | {a.seeds} seeds a run in one "
          f"process | up to {a.epochs} epochs of {per_epoch:,} env steps after a prefill of {prefill:,}"
          + (f" | --tiny: {TINY_ENV} stands in for every env" if a.tiny else ""))
    print(f"costs: {'from ' + ', '.join(a.throughput) + ', else ' if a.throughput else ''}measured by each run as it goes")
    p = plan(items, cost, end - time.monotonic(), a.epochs, floor())
    print("plan:")
    print("\n".join(plan_lines(items, p, cost, budget_s, time.monotonic() - t_start)), flush=True)
    if a.dry_run:
        print("dry run: nothing run, nothing written")
        return
    plt = plot_machinery()  # before any run: the report's share of the budget does not load it

    os.makedirs(os.path.join(out, "logs"))
    os.makedirs(os.path.join(out, "runs"))
    meta = {"command": "bash benchmark.sh replicate" + "".join(f" {x}" for x in sys.argv[1:]),
            "date": f"{date:%Y-%m-%d %H:%M %Z}".strip(), "commit": describe,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores",
            "gpu": (sh(["nvidia-smi", "-L"]).splitlines() or ["none"])[0], "python": platform.python_version(),
            "budget": f"{a.budget_min:g} min", "seeds": f"1-{a.seeds} in one process", "z_max": a.z_max}
    failed = 0
    with open(os.path.join(out, "throughput.jsonl"), "a") as tp:
        for item in items:
            name = item["name"]
            for run in item["runs"]:
                left = end - time.monotonic()
                p = plan(items, cost, left, a.epochs, floor())
                e = p["epochs"][name]
                c = cost(run["key"])
                first = c["start_s"] + c["epoch_s"] if c else floor()[0]  # its start and first epoch, or the floor
                if not e or left <= 0 or first > left:
                    run["ended"] = item["why"] = p["why"].get(name) or (
                        f"left out: not one epoch fits in the time left ({max(left, 0):.0f} s; "
                        + (f"its start and first epoch: {first:.0f} s)" if c else f"{floor()[0]:.0f} s, {floor()[1]})"))
                    print(f"{run['label']}: {run['ended']}", flush=True)
                    continue
                run["planned"] = e
                env, depth, seeds = run["key"]
                flags = ["--env-id", env, "--depth", str(depth), "--num-seeds", str(seeds), "--seed", "1",
                         "--num-epochs", str(a.epochs), "--total-env-steps", str(total_env_steps(a.epochs, a.tiny)),
                         "--no-checkpoint-buffer", "--runs-dir", os.path.join(out, "runs", run["label"])]
                cmd = [sys.executable, os.path.join(ROOT, "crl_depth.py"), *flags, *(TINY_FLAGS.split() if a.tiny else [])]
                print(f"[{run['label']}] {e} epochs planned, started for {a.epochs}: {' '.join(cmd[1:])}", flush=True)
                run["state"], m = "running", {}
                run["measured"] = m

                def on_epoch(epoch: int, t: float, run=run, m=m, name=name) -> bool:
                    if epoch == 0:
                        m["start_s"] = t
                        print(f"  epoch 0 (untrained) after {t:.0f} s", flush=True)
                        return True
                    run["epochs"] = epoch
                    m["epoch_s"] = (t - m.get("start_s", 0.0)) / epoch
                    measured[run["key"]] = dict(m)
                    q = plan(items, cost, end - time.monotonic(), a.epochs, floor())
                    run["planned"] = q["epochs"][name] or epoch
                    go = epoch < run["planned"] and time.monotonic() + m["epoch_s"] <= end
                    print(f"  epoch {epoch} after {t:.0f} s (start {m['start_s']:.0f} s, {m['epoch_s']:.1f} s an epoch): "
                          f"planned {run['planned']} epochs" + ("" if go else " | stopping here"), flush=True)
                    if epoch == 1:
                        print("\n".join("  " + x for x in plan_lines(items, q, cost, budget_s, time.monotonic() - t_start)),
                              flush=True)
                    return go  # (after its last epoch a run only saves its networks: not needed here)

                r = watch(cmd, os.path.join(out, "logs", f"{run['label']}.log"), on_epoch, end)
                run["state"], run["wall_s"] = "done", r["wall_s"]
                run["dir"] = run_dir_of(os.path.join(out, "runs", run["label"]))
                crashed = r["exit"] != 0 and not r["stopped"]
                failed += crashed
                run["ended"] = (f"crashed (exit {r['exit']}; log: logs/{run['label']}.log)" if crashed else
                                "stopped after its planned epochs" if r["stopped"] == "the plan" else
                                f"stopped by {r['stopped']}" if r["stopped"] else "finished")
                print(f"  {run['label']}: {run['ended']} after {r['wall_s']:.0f} s, {run['epochs']} epochs", flush=True)
                if m.get("epoch_s"):
                    tp.write(json.dumps({"env_id": env, "depth": depth, "num_seeds": seeds,
                                         "settings": "tiny" if a.tiny else "paper", "start_s": round(m["start_s"], 2),
                                         "epoch_s": round(m["epoch_s"], 3), "epochs": run["epochs"],
                                         "env_steps_per_s": round(seeds * per_epoch / m["epoch_s"]),
                                         "date": meta["date"], "commit": describe, "device": meta["gpu"]}) + "\n")
                    tp.flush()
                if run["epochs"] == 0:  # nothing to compare the other depths with at the same epochs
                    for other in item["runs"]:
                        if other["state"] == "pending":
                            other["state"], other["ended"] = "done", f"not run: {run['label']} finished no epoch"
                    break
    text = report(items, a, meta, out, plt)
    text.append(f"\nreplicate finished in {(time.monotonic() - t_start) / 60:.1f} min of the {a.budget_min:g}-minute "
                f"budget | results: {out}")
    with open(os.path.join(out, "replicate.md"), "w") as f:
        f.write("\n".join(text) + "\n")
    print("\n" + "\n".join(text))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
