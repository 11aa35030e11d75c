"""Summary of a benchmark.sh results directory: tables in Markdown and PNG learning curves.

    python tools/benchmark_summary.py summarize benchmark_results/quick__2026-11-21__abc1234 [--check]
    python tools/benchmark_summary.py budget humanoid      # the paper's env steps for an env
    python tools/benchmark_summary.py paper-envs           # env ids of the paper's main table

`summarize` reads every run under the directory (runs/*/*/args.json + metrics.jsonl, and runs.tsv
that benchmark.sh writes: exit status and wall time of each run, crashed runs included) and the
speed measurements (speed.jsonl) if any, and writes summary.md and curves_{env}.png next to them:
- results: per script, env, depth and time-at-goal metric, mean +- standard error over seeds of
  each seed's mean over its last 5 evaluations (the paper's score), next to the paper's number;
- runtime: per run, exit status, wall time, compile seconds, throughput and final time at goal;
- speed: compile seconds, time per step and memory versus depth; seeds in one process (throughput of
  N seeds versus N = 1) and bfloat16 versus float32 matmuls, where speed.jsonl has those rows.
- against the paper's learning curves: per env and depth of crl_depth.py runs that the paper published a
  learning curve of (tools/paper_curves/, tools/curves.py), our evaluations (mean ± s.e. over seeds, each
  seed's value) next to the paper's at the same env steps, the difference in combined standard errors,
  whether the curve stayed inside the paper's band, and the depth ordering at the last shared evaluation;
  curves_{env}.png draws the paper's curve, dashed with its band ± s.e., under each such curve of ours;
- figures: where benchmark.sh paper --figure wrote figures.tsv, one section per figure of the paper
  (tools/paper_figures.py): figure_{NAME}.png and a table of each point, ours beside the paper's
  number, our wall hours beside the paper's GPU hours, and the runs still missing.
With --check it exits 1 if a run failed, wrote no metrics, or logged a non-finite number.
The paper's numbers come from tools/paper_numbers.json (each with its table or figure of arXiv 2503.14858).
"""

import argparse
import bisect
import csv
import glob
import json
import math
import os
import re
import statistics
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import curves as C  # noqa: E402  (tools/curves.py: the paper's learning curves and runs set against them)
import paper_figures  # noqa: E402  (tools/paper_figures.py: the figures' grids and the paper's values)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_NUMBERS = os.path.join(ROOT, "tools", "paper_numbers.json")
LAST_N = 5  # the paper's score: mean over the last 5 evaluations


# ==================================================================================================
# The paper's numbers (tools/paper_numbers.json, each entry with its source in the paper)
# ==================================================================================================
def load_paper(path: str = PAPER_NUMBERS) -> dict:
    """tools/paper_numbers.json as read, plus three lookups: "score" {env: {depth: (mean, se or None)}}
    (the main table, then the depth sweep where the table has no number), "budget" {env: env steps}
    and "hours" {env: {depth: hours of one run on one GPU}}."""
    with open(path) as f:
        paper = json.load(f)
    score: dict = {}
    for env, by_depth in paper["main_table"]["values"].items():
        for depth, (mean, se) in by_depth.items():
            score.setdefault(env, {})[int(depth)] = (float(mean), float(se))
    sweep = paper["depth_sweep"]
    for env, values in sweep["values"].items():
        for depth, value in zip(sweep["depths"], values):
            score.setdefault(env, {}).setdefault(depth, (float(value), None))  # the main table has priority
    clock = paper["wall_clock_hours"]
    hours = {env: dict(zip(clock["depths"], values)) for env, values in clock["values"].items()}
    return {**paper, "score": score, "budget": dict(paper["env_steps"]["values"]), "hours": hours}


# ==================================================================================================
# Runs
# ==================================================================================================
def last_n_mean(records: list, key: str, n: int = LAST_N) -> Optional[float]:
    """Mean of `key` over the last n evaluations after training began (epoch >= 1); the untrained
    evaluation (epoch 0) counts only if a run has nothing else."""
    values = [r[key] for r in records if key in r and r.get("epoch", 1) >= 1]
    if not values:
        values = [r[key] for r in records if key in r]
    return sum(values[-n:]) / len(values[-n:]) if values else None


def mean_se(values: list) -> tuple[float, Optional[float]]:
    """Mean and standard error (sample standard deviation / sqrt(n)); no error with one value."""
    mean = sum(values) / len(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


def finite_problems(records: list) -> list:
    bad = []
    for r in records:
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                bad.append(f"{k}={v} at epoch {r.get('epoch')}")
    return bad


def read_jsonl(path: str) -> tuple[list, list]:
    records, problems = [], []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))  # json reads NaN / Infinity as floats
                except json.JSONDecodeError as e:
                    problems.append(f"{path}:{i}: {e}")
    return records, problems


def load_runs(results_dir: str) -> list[dict]:
    """One dict per run: from runs.tsv (benchmark.sh) if present, joined with each run's args.json and
    metrics.jsonl found under runs/{label}/; without runs.tsv every metrics.jsonl found is a run."""
    table = os.path.join(results_dir, "runs.tsv")
    rows = []
    if os.path.exists(table):
        with open(table) as f:  # a label's last row counts (a run run again by benchmark.sh --resume)
            rows = list({row["label"]: row for row in csv.DictReader(f, delimiter="\t")}.values())
    else:
        for path in sorted(glob.glob(os.path.join(results_dir, "**", "metrics.jsonl"), recursive=True)):
            rows.append({"label": os.path.relpath(os.path.dirname(path), results_dir),
                         "run_dir": os.path.abspath(os.path.dirname(path))})  # (glob's path has results_dir in it)
    runs = []
    for row in rows:
        run = {"label": row["label"], "status": row.get("status", ""), "wall_s": row.get("wall_s", ""),
               "script": row.get("script", ""), "problems": [], "records": [], "args": {}}
        run_dir = row.get("run_dir")
        if not run_dir:
            found = sorted(glob.glob(os.path.join(results_dir, "runs", row["label"], "*", "metrics.jsonl")))
            run_dir = os.path.dirname(found[-1]) if found else None
        elif not os.path.isabs(run_dir):
            run_dir = os.path.join(results_dir, run_dir)
        if run_dir and os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
            run["records"], run["problems"] = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
            if os.path.exists(os.path.join(run_dir, "args.json")):
                with open(os.path.join(run_dir, "args.json")) as f:
                    run["args"] = json.load(f)
        else:
            run["problems"].append("no metrics.jsonl")
        if run["status"] not in ("", "0"):
            run["problems"].append(f"exit status {run['status']}")
        run["problems"] += finite_problems(run["records"])
        args = run["args"]
        run["script"] = run["script"] or args.get("exp_name", "?")
        run["env"] = args.get("env_id") or row.get("env") or "?"
        run["seed"] = args.get("seed", row.get("seed", "?"))
        run["episode_length"] = args.get("episode_length")
        run["log"] = os.path.join(results_dir, "logs", f"{row['label']}.log")  # benchmark.sh's and slurm.py's
        runs.append(run)
    return runs


# network settings that tell runs of the same depth apart (the ablations, width and batch size sweeps)
VARIANTS = {"layer_norm": lambda v: "LayerNorm" if v else "no LayerNorm", "activation": str,
            "residual": lambda v: "residual" if v else "no residual", "width": "width {}".format,
            "batch_size": "batch {}".format}


def varying(runs: list) -> dict:
    """{(script, env): the VARIANTS keys whose value differs between the runs of that script and env}."""
    values: dict = {}
    for run in runs:
        for k in VARIANTS:
            values.setdefault((run["script"], run["env"], k), set()).add(str(run["args"].get(k)))
    out: dict = {}
    for (script, env, k), seen in values.items():
        out.setdefault((script, env), [])
        if len(seen) > 1:
            out[(script, env)].append(k)
    return out


def metric_series(run: dict, vary: tuple = ()) -> dict:
    """{series name: (depth, metric key)}: one series per time-at-goal metric of the run; a prefixed
    key (collector/eval/time_at_goal) takes its depth from the args field of the prefix (collector_depth).
    vary: VARIANTS keys named in the series name (those that tell this run from others of its env)."""
    keys = sorted({k for r in run["records"] for k in r if k.endswith("eval/time_at_goal")})
    out = {}
    for key in keys:
        prefix = key[: -len("eval/time_at_goal")].rstrip("/")
        args = run["args"]
        depth = args.get(f"{prefix}_depth") if prefix else args.get("critic_depth") or args.get("depth")
        actor = args.get("actor_depth") if not prefix else None
        label = " ".join(x for x in (prefix, f"depth {depth}" if depth is not None else "") if x) or "?"
        label += f" (actor {actor})" if actor and actor != depth else ""
        label += "".join(f", {VARIANTS[k](run['args'].get(k))}" for k in vary)
        out[label] = (depth, key)
    return out


def x_axis(records: list) -> tuple[str, list]:
    for name in ("env_steps", "gradient_steps"):
        if records and all(name in r for r in records):
            return name, [r[name] for r in records]
    return "epoch", [r.get("epoch", i) for i, r in enumerate(records)]


def throughput(records: list) -> tuple[Optional[float], str]:
    for key, unit in (("charts/sps", "env steps/s"), ("charts/gradient_steps_per_s", "SGD steps/s")):
        values = [r[key] for r in records if key in r and isinstance(r[key], (int, float))]
        if values:
            return statistics.median(values), unit
    return None, ""


def compile_s(records: list) -> Optional[float]:
    for r in records:
        for k, v in r.items():
            if k.endswith("compile_s"):
                return v
    return None


# ==================================================================================================
# Tables
# ==================================================================================================
def fmt(x: Optional[float], digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def fmt_mean_se(mean: float, se: Optional[float], digits: int = 1) -> str:
    return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def paper_network(run: dict, paper: Optional[dict] = None) -> bool:
    """The network, batch and env-step budget of the paper's main table and wall-clock data (crl_depth.py's
    defaults; the budget: the run's total_env_steps, where args.json has it, is the paper's for its env)."""
    a = run["args"]
    budget = (paper or load_paper())["budget"].get(run["env"])
    return (a.get("total_env_steps", budget) == budget and a.get("layer_norm", True) and a.get("activation", "swish") == "swish" and a.get("residual", True)
            and a.get("width", paper_figures.WIDTH) == paper_figures.WIDTH
            and a.get("batch_size", paper_figures.BATCH) == paper_figures.BATCH)


def results_table(runs: list, paper: Optional[dict]) -> list[str]:
    groups: dict = {}
    vary = varying(runs)
    for run in runs:
        for label, (depth, key) in metric_series(run, vary[(run["script"], run["env"])]).items():
            score = last_n_mean(run["records"], key)
            if score is not None:
                g = groups.setdefault((run["script"], run["env"], depth if depth is not None else -1, label), [])
                g.append((run["seed"], score, run["episode_length"], paper_network(run, paper)))
    lines = [f"| script | env | network | seeds | time at goal, last {LAST_N} evals (mean ± s.e. over seeds) | out of | paper (out of 1000) |",
             "|---|---|---|---|---|---|---|"]
    for (script, env, depth, label), entries in sorted(groups.items()):
        mean, se = mean_se([e[1] for e in entries])
        paper_cell = "—"
        if paper and script == "crl_depth" and label.startswith("depth") and "actor" not in label and all(
                e[3] for e in entries):
            ref = paper["score"].get(env, {}).get(depth)
            if ref:
                paper_cell = fmt_mean_se(ref[0], ref[1], 2 if ref[0] < 1 else 1)
        out_of = sorted({e[2] for e in entries if e[2]})
        lines.append(f"| {script} | {env} | {label} | {len(entries)} | {fmt_mean_se(mean, se)} | "
                     f"{'/'.join(map(str, out_of)) or '?'} | {paper_cell} |")
    return lines


def runtime_table(runs: list, paper: Optional[dict]) -> list[str]:
    lines = ["| run | exit | wall | compile s | throughput (median over epochs) | final time at goal | "
             "last-5 mean | untrained (epoch 0) | paper A100 h |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        recs = run["records"]
        tput, unit = throughput(recs)
        series = metric_series(run)
        finals, last5, untrained = [], [], []
        for label, (depth, key) in series.items():
            values = [r[key] for r in recs if key in r]
            name = label.split(" depth")[0] + " " if label.split(" depth")[0] != label and not label.startswith("depth") else ""
            finals.append(f"{name}{values[-1]:.1f}")
            last5.append(f"{name}{last_n_mean(recs, key):.1f}")
            zero = [r[key] for r in recs if key in r and r.get("epoch") == 0]
            untrained.append(f"{name}{zero[0]:.1f}" if zero else "—")
        wall = float(run["wall_s"]) if run["wall_s"] not in ("", None) else None
        depth = run["args"].get("depth")
        hours = (paper["hours"].get(run["env"], {}).get(depth) if paper and run["script"] == "crl_depth"
                 and paper_network(run, paper) and run["args"].get("actor_depth") in (None, depth) else None)
        status = run["status"] or "?"
        lines.append(f"| {run['label']} | {status} | {format_duration(wall)} | {fmt(compile_s(recs))} | "
                     f"{fmt(tput, 0)} {unit} | {', '.join(finals) or '—'} | {', '.join(last5) or '—'} | "
                     f"{', '.join(untrained) or '—'} | {fmt(hours, 2)} |")
    return lines


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def speed_variant(r: dict) -> tuple[str, int]:
    """(matmul dtype, seeds in one process) of a speed record; older records have neither: float32, 1."""
    return r.get("compute_dtype", "float32"), r.get("num_seeds", 1)


def speed_name(r: dict) -> str:
    name = ("scan + remat" if r["remat"] else "scan") if r["impl"] == "scan" else "unrolled (Python loop)"
    dtype, n = speed_variant(r)
    return name + (f", {dtype}" if dtype != "float32" else "") + (f", {n} seeds" if n != 1 else "")


def latest_ok(records: list) -> dict:
    """{(target, impl, remat, depth, dtype, seeds): record}: the last successful measurement of each."""
    return {(r["target"], r["impl"], r["remat"], r["depth"], *speed_variant(r)): r
            for r in records if r.get("status") == "ok"}


def seeds_table(records: list) -> list[str]:
    """Per (target, network, depth, dtype) measured with N = 1 and some N > 1: throughput of N seeds
    trained in one process (vmapped) against one seed."""
    by_key = latest_ok(records)
    groups = sorted({k[:5] for k in by_key if k[5] != 1 and (*k[:5], 1) in by_key},
                    key=lambda k: (k[0] != "train_step", k[1] != "scan", k[2], k[3], k[4] != "float32"))
    if not groups:
        return []
    lines = ["**Seeds in one process** (crl_depth.py --num-seeds N: the whole training state vmapped over a "
             "seed axis, one jit). Speed-up: total env steps/s over N = 1's. Extra time per added seed: "
             "(step time at N - step time at N = 1) / (N - 1), as a fraction of the N = 1 step time "
             "(0: seeds 2..N are free, 1: they cost as much as running them one after another). The network "
             "step alone at N = 1 is the plain step (no seed axis).", ""]
    for target, impl, remat, depth, dtype in groups:
        base = by_key[(target, impl, remat, depth, dtype, 1)]
        name = speed_name(base)
        lines += [f"*{target}, {name}, depth {depth}*", "",
                  "| N | ms per step | env steps/s total | env steps/s per seed | speed-up vs N = 1 | extra time per added seed / N = 1 step |",
                  "|---|---|---|---|---|---|"]
        for n in sorted(k[5] for k in by_key if k[:5] == (target, impl, remat, depth, dtype)):
            r = by_key[(target, impl, remat, depth, dtype, n)]
            marginal = "—" if n == 1 else f"{(r['step_s'] - base['step_s']) / ((n - 1) * base['step_s']):.2f}"
            lines.append(f"| {n} | {1e3 * r['step_s']:,.1f} | {r['env_steps_per_s']:,.0f} | {r['env_steps_per_s'] / n:,.0f} | "
                         f"{r['env_steps_per_s'] / base['env_steps_per_s']:.2f}x | {marginal} |")
        lines.append("")
    return lines


def dtype_table(records: list) -> list[str]:
    """Per (target, network, seeds, depth) measured in both float32 and bfloat16: step time each and ratio."""
    by_key = latest_ok(records)
    pairs = sorted({(k[0], k[1], k[2], k[5], k[3]) for k in by_key
                    if k[4] == "bfloat16" and (*k[:4], "float32", k[5]) in by_key},
                   key=lambda k: (k[0] != "train_step", k[1] != "scan", k[2], k[3], k[4]))
    if not pairs:
        return []
    lines = ["**bfloat16 vs float32** (crl_depth.py --compute-dtype: bfloat16 matmuls; parameters, LayerNorm and "
             "outputs float32). Ratio: bfloat16 step time / float32 step time (below 1: bfloat16 is faster).", "",
             "| step | network | depth | ms per step float32 | ms per step bfloat16 | bfloat16 / float32 | "
             "compile s float32 / bfloat16 | memory MiB float32 / bfloat16 |",
             "|---|---|---|---|---|---|---|---|"]
    for target, impl, remat, n, depth in pairs:
        f, b = by_key[(target, impl, remat, depth, "float32", n)], by_key[(target, impl, remat, depth, "bfloat16", n)]
        mem = lambda r: f"{r.get('device_peak_bytes', r['xla_bytes']) / 2**20:,.1f}"
        lines.append(f"| {target} | {speed_name(f)} | {depth} | {1e3 * f['step_s']:,.1f} | {1e3 * b['step_s']:,.1f} | "
                     f"{b['step_s'] / f['step_s']:.2f} | {f['compile_s']:.1f} / {b['compile_s']:.1f} | {mem(f)} / {mem(b)} |")
    lines.append("")
    return lines


def speed_tables(records: list) -> list[str]:
    mib = lambda b: f"{b / 2**20:,.1f}"
    ok = [r for r in records if r.get("status") == "ok"]
    backend = ok[0]["backend"] if ok else "?"
    mem_name = ("device peak_bytes_in_use" if any("device_peak_bytes" in r for r in ok)
                else "XLA memory_analysis: temp + arguments + outputs - aliased")
    lines = [f"Memory column: {mem_name} (MiB). Compile = `jit(f).lower(...).compile()` seconds. "
             f"Backend: {backend}.", ""]
    for target, title in (("network", "Network alone: one SGD step of actor + alpha + critic"),
                          ("train_step", "Full training step: collect + insert + sample + SGD steps at 1:40")):
        rows = [r for r in records if r.get("target") == target]
        if not rows:
            continue
        r0 = rows[0]
        what = (f"width {r0['width']}, batch {r0['batch_size']}, obs/action sizes of {r0['env_id']}" if target == "network"
                else f"{r0['env_id']}, {r0['num_envs']} envs x {r0['unroll_length']} steps, {r0['num_sgd_steps']} SGD steps of "
                     f"batch {r0['batch_size']}, width {r0['width']}, replay {r0['max_replay_size']} x {r0['num_envs']}")
        lines += [f"**{title}** ({what})", "",
                  "| network | depth | params | compile s (trace+lower / XLA) | HLO ops | ops executed per SGD step | ms per step | env steps/s at 1:40 | memory MiB | process peak RSS MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r["impl"] != "scan", r["remat"], speed_variant(r)[0] != "float32",
                                              speed_variant(r)[1], r["depth"])):
            name = speed_name(r)
            if r.get("status") != "ok":
                lines.append(f"| {name} | {r['depth']} | — | {r.get('status')}: {r.get('error', '')} | — | — | — | — | — | — |")
                continue
            mem = r.get("device_peak_bytes", r["xla_bytes"])
            lines.append(f"| {name} | {r['depth']} | {r['num_params']:,} | {r['compile_s']:.1f} ({r['lower_s']:.1f} / "
                         f"{r['xla_compile_s']:.1f}) | {r['hlo_ops']:,} | {format(r['sgd_step_ops'], ',') if r.get('sgd_step_ops') else '—'} | "
                         f"{1e3 * r['step_s']:,.1f} | "
                         f"{r['env_steps_per_s']:,.0f} | {mib(mem)} | {mib(r['rss_peak_bytes'])} |")
        lines.append("")
    scan = {r["depth"]: r for r in ok if r["target"] == "network" and r["impl"] == "scan" and not r["remat"]
            and speed_variant(r) == ("float32", 1)}
    unrolled = {r["depth"]: r for r in records if r.get("target") == "network" and r.get("impl") == "unrolled"
                and speed_variant(r) == ("float32", 1)}
    if scan and unrolled:
        lines += ["**Unrolled / scanned, network alone** (same depth, no remat)", "",
                  "| depth | compile s scanned | compile s unrolled | ratio | HLO ops scanned | HLO ops unrolled | memory MiB scanned | memory MiB unrolled |",
                  "|---|---|---|---|---|---|---|---|"]
        for depth in sorted(set(scan) | set(unrolled)):
            s, u = scan.get(depth), unrolled.get(depth)
            if not s:
                continue
            if u and u.get("status") == "ok":
                lines.append(f"| {depth} | {s['compile_s']:.1f} | {u['compile_s']:.1f} | {u['compile_s'] / s['compile_s']:.1f}x | "
                             f"{s['hlo_ops']:,} | {u['hlo_ops']:,} | {mib(s['xla_bytes'])} | {mib(u['xla_bytes'])} |")
            else:
                why = f"{u['status']}: {u.get('error', '')}" if u else "not measured"
                lines.append(f"| {depth} | {s['compile_s']:.1f} | {why} | — | {s['hlo_ops']:,} | — | {mib(s['xla_bytes'])} | — |")
        lines.append("")
    return lines + seeds_table(records) + dtype_table(records)


def per_seed(records: list) -> list[list]:
    """The records of each seed of a run (crl_depth.py --num-seeds writes one line per seed and epoch)."""
    seeds: dict = {}
    for r in records:
        seeds.setdefault(r.get("seed"), []).append(r)
    return list(seeds.values())


CURVE_ROWS = 12  # a table shows every evaluation up to this many, else every n-th and the last


def curve_sections(runs: list, curves: Optional[list] = None) -> list[str]:
    """Against the paper's learning curves: one table per env and depth (and batch size, and settings that
    differ from the paper's) of crl_depth.py runs that the paper published a curve of; each seed of each
    run one curve of ours."""
    curves = curves if curves is not None else C.load_curves()
    groups: dict = {}
    for run in runs:
        if run["script"] != "crl_depth" or not run["records"]:
            continue
        curve, note = C.reference(run["args"], curves)
        if curve is not None:
            groups.setdefault((curve["env"], curve["depth"], curve["batch_size"], note), (curve, []))[1].append(run)
    if not groups:
        return []
    out = ["### Against the paper's learning curves", "",
           "Each env and depth of which the paper's authors published the learning curve (tools/paper_curves/): our "
           "evaluations, mean ± s.e. over seeds and each seed's value, next to the paper's at the same env steps (the "
           "prefill counted as the paper's code counts it; between two of its evaluations interpolated linearly), "
           "and (ours - paper) / sqrt(s.e. ours² + s.e. paper²). Inside the paper's band: that difference at most "
           f"{C.Z_MAX:g} at every evaluation the paper has a value for (docs/replicate.md). Long runs show every "
           "n-th evaluation and the last; the verdict counts all of them.", ""]
    last: dict = {}
    for (env, depth, batch, note), (curve, group) in sorted(groups.items(), key=lambda kv: kv[0][:3] + (kv[0][3],)):
        rows = C.compare_rows(C.pool(group), curve)
        if not rows:
            continue
        step = -(-len(rows) // (CURVE_ROWS - 2)) if len(rows) > CURVE_ROWS else 1
        shown = [r for i, r in enumerate(rows) if i % step == 0 or i == len(rows) - 1]
        name = f"{env}, depth {depth}" + (f", batch {batch}" if batch != 512 else "")
        seeds = sum(len(per_seed(r["records"])) for r in group)
        out += [f"**{name}** ({seeds} seed{'s' * (seeds > 1)}: {', '.join(r['label'] for r in group)}; the paper's "
                f"curve: {curve['source']}{'; our ' + note if note else ''})", "", *C.rows_table(shown), "",
                C.verdict_line(name, C.verdict(rows)), ""]
        if not note:
            last.setdefault((env, batch), {})[depth] = rows
    for (env, batch), by_depth in sorted(last.items()):
        if len(by_depth) > 1:
            shared = set.intersection(*({r["epoch"] for r in rows if r["paper"]} for rows in by_depth.values()))
            o = C.ordering({d: next(r for r in rows if r["epoch"] == max(shared)) for d, rows in by_depth.items()}) \
                if shared else None
            out += [C.ordering_line(env + (f", batch {batch}" if batch != 512 else ""), o), ""]
    return out


# ==================================================================================================
# Plots
# ==================================================================================================
def plot_curves(runs: list, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    vary = varying(runs)
    curves = C.load_curves()
    for env in sorted({r["env"] for r in runs}):
        lines: dict = {}
        refs: dict = {}  # the paper's curve under a line of ours (crl_depth.py at the paper's network)
        for run in (r for r in runs if r["env"] == env and r["records"]):
            for records in per_seed(run["records"]):
                xname, xs = x_axis(records)
                for label, (depth, key) in metric_series(run, vary[(run["script"], run["env"])]).items():
                    pts = {x: r[key] for x, r in zip(xs, records) if key in r}
                    line = (run["script"], depth if depth is not None else -1, label, xname)
                    lines.setdefault(line, []).append(pts)
                    if key == C.METRIC and xname == "env_steps":
                        refs.setdefault(line, C.reference(run["args"], curves))  # (curve, settings that differ)
        if not lines:
            continue
        xnames = sorted({k[3] for k in lines})
        fig, axes = plt.subplots(1, len(xnames), figsize=(6.5 * len(xnames), 4.2), squeeze=False)
        for ax, xname in zip(axes[0], xnames):
            for (script, depth, label, xn), seeds in sorted(lines.items()):
                if xn != xname:
                    continue
                xs = sorted(set.intersection(*(set(s) for s in seeds)))  # steps every seed reached
                stats = [mean_se([s[x] for s in seeds]) for x in xs]
                mean = [m for m, _ in stats]
                se = [e or 0.0 for _, e in stats]
                (line,) = ax.plot(xs, mean, marker=".", label=f"{script} {label} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
                if len(seeds) > 1:
                    ax.fill_between(xs, [m - e for m, e in zip(mean, se)], [m + e for m, e in zip(mean, se)],
                                    color=line.get_color(), alpha=0.25, linewidth=0)
                    ax.fill_between(xs, [min(s[x] for s in seeds) for x in xs], [max(s[x] for s in seeds) for x in xs],
                                    color=line.get_color(), alpha=0.08, linewidth=0)
                curve, differs = refs.get((script, depth, label, xn), (None, ""))
                if curve is not None and xs:  # the paper's, over our env steps (to its evaluation after our last)
                    n = min(len(curve["xs"]), bisect.bisect_left(curve["xs"], max(xs)) + 1)
                    px, pm, ps = curve["xs"][:n], curve["means"][:n], curve["ses"][:n]
                    ax.plot(px, pm, "--", color=line.get_color(), alpha=0.8, label=f"{label}, the paper's curve" + (f" ({differs})" if differs else ""))
                    ax.fill_between(px, [m - e for m, e in zip(pm, ps)], [m + e for m, e in zip(pm, ps)],
                                    color=line.get_color(), alpha=0.12, linewidth=0, hatch="//")
            ax.set_xlabel(xname.replace("_", " "))
            ax.set_ylabel("time at goal")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{env}: time at goal, mean over seeds\n(dark band ± s.e., light band min to max)"
                     + ("\n(dashed: the paper's curve of the same depth, hatched band ± s.e.)" if any(refs.values()) else ""),
                     fontsize=10)
        fig.tight_layout()
        path = os.path.join(out_dir, f"curves_{env}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_speed(records: list, out_dir: str) -> Optional[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for line in sorted({(r["target"], r["impl"], r["remat"], *speed_variant(r)) for r in ok}):
        rows = sorted((r for r in ok if (r["target"], r["impl"], r["remat"], *speed_variant(r)) == line), key=lambda r: r["depth"])
        target, impl, remat, dtype, n = line
        label = f"{target}, {impl}" + (" + remat" if remat else "") + (f", {dtype}" if dtype != "float32" else "") + \
            (f", {n} seeds" if n != 1 else "")
        d = [r["depth"] for r in rows]
        axes[0].plot(d, [r["compile_s"] for r in rows], marker="o", label=label)
        axes[1].plot(d, [1e3 * r["step_s"] for r in rows], marker="o", label=label)
        axes[2].plot(d, [r.get("device_peak_bytes", r["xla_bytes"]) / 2**20 for r in rows], marker="o", label=label)
    for ax, ylabel in zip(axes, ("compile s", "ms per step", "memory MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("depth")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "speed.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ==================================================================================================
# The paper's figures (figures.tsv of `benchmark.sh paper --figure NAME`)
# ==================================================================================================
def read_cells(results_dir: str) -> list[dict]:
    path = os.path.join(results_dir, "figures.tsv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [dict(zip(paper_figures.CELL_FIELDS, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def axis_value(x: str):
    try:
        return int(x)
    except ValueError:
        return x


def logged_params(run: Optional[dict]) -> Optional[int]:
    """Parameters of actor + critic as the script printed them ("| 1,234 params |") in the run's log."""
    if not run or not run.get("log") or not os.path.exists(run["log"]):
        return None
    with open(run["log"], errors="replace") as f:
        m = re.search(r"([\d,]+) params", f.read())
    return int(m.group(1).replace(",", "")) if m else None


def figure_points(cells: list, by_label: dict) -> dict:
    """{(env, series, x): point}: each point of one figure with its runs' scores (last-5 means), the
    labels still missing, our wall hours, the paper's hours and the parameters logged. A collector/learner
    run gives one point per agent (collector, deep_learner, shallow_learner)."""
    points: dict = {}
    for c in cells:
        run = by_label.get(c["label"])
        ok = run is not None and run["records"] and not run["problems"]
        keys = sorted({k for r in run["records"] for k in r if k.endswith("eval/time_at_goal")}) if ok else []
        agents = [k[: -len("/eval/time_at_goal")] for k in keys if "/" in k[: -len("eval/time_at_goal")]] or [""]
        if c["script"] == "crl_collector_learner" and not ok:
            agents = ["collector", "deep_learner", "shallow_learner"]
        for agent in agents:
            series = f"{c['series']}: {agent}" if agent else c["series"]
            p = points.setdefault((c["env"], series, axis_value(c["x"])), {
                "scores": [], "missing": [], "wall_h": [], "params": [], "out_of": set(), "runs": [],
                "paper_h": float(c["paper_hours"]) if c["paper_hours"] else None})
            score = last_n_mean(run["records"], f"{agent}/eval/time_at_goal" if agent else "eval/time_at_goal") if ok else None
            if score is None:
                p["missing"].append(c["label"])
                continue
            p["scores"].append(score)
            p["runs"].append(run)
            p["out_of"].add(run["episode_length"] or "?")
            if run["wall_s"] not in ("", None):
                p["wall_h"].append(float(run["wall_s"]) / 3600)
            params = logged_params(run)
            if params:
                p["params"].append(params)
    return points


def figure_table(figure: str, points: dict, numbers: dict) -> list[str]:
    xname = paper_figures.FIGURES[figure][2]
    xname = {"parameters": "width or depth", "env steps": "collector depth"}.get(xname, xname)
    params = figure == "width_vs_depth"
    lines = [f"| env | series | {xname} |" + (" params (actor + critic) |" if params else "") +
             f" runs | time at goal, ours (last {LAST_N} evals, mean ± s.e.) | out of | paper (out of 1000) | "
             "wall h per run, ours | paper GPU h per run | missing runs |",
             "|---|---|---|" + ("---|" if params else "") + "---|---|---|---|---|---|---|"]
    for (env, series, x), p in sorted(points.items(), key=lambda kv: (kv[0][0], kv[0][1], str(type(kv[0][2])), kv[0][2])):
        n = len(p["scores"]) + len(p["missing"])
        ours = fmt_mean_se(*mean_se(p["scores"])) if p["scores"] else "—"
        ref = paper_figures.paper_value(numbers, figure, env, series, x)
        paper_cell = fmt_mean_se(ref[0], ref[1], 2 if ref[0] < 1 else 1) if ref else "—"
        wall = fmt(sum(p["wall_h"]) / len(p["wall_h"]), 2) if p["wall_h"] else "—"
        missing = ", ".join(p["missing"]) if p["missing"] else ""
        lines.append(f"| {env} | {series} | {x if x != '' else '—'} |" +
                     (f" {p['params'][0]:,} |" if params and p["params"] else " — |" if params else "") +
                     f" {len(p['scores'])}/{n} | {ours} | {'/'.join(map(str, sorted(p['out_of'], key=str))) or '—'} | "
                     f"{paper_cell} | {wall} | {fmt(p['paper_h'], 2)} | {missing or '—'} |")
    return lines


def plot_figure(figure: str, points: dict, numbers: dict, out_dir: str) -> Optional[str]:
    """figure_{NAME}.png: the paper's axes (time at goal against depth, width, parameters or batch size;
    bars for the main table; a heatmap of actor against critic depth; curves for collector/learner),
    ours with one standard error, the paper's numbers dashed where it gives them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = {k: p for k, p in points.items() if p["scores"]}
    if not done:
        return None
    envs = sorted({k[0] for k in points})
    title, xlabel = paper_figures.FIGURES[figure][1], paper_figures.FIGURES[figure][2]
    if figure == "main_table":
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(envs)), 4.2))
        depths = sorted({k[2] for k in points})
        width = 0.8 / (2 * len(depths))
        for j, depth in enumerate(depths):
            for k, who in enumerate(("ours", "paper")):
                heights, errors = [], []
                for env in envs:
                    p = done.get((env, f"depth {depth}", depth))
                    ref = paper_figures.paper_value(numbers, figure, env, f"depth {depth}", depth)
                    m, e = (mean_se(p["scores"]) if p else (float("nan"), None)) if who == "ours" else (ref or (float("nan"), None))
                    heights.append(m)
                    errors.append(e or 0.0)
                xs = [i + (2 * j + k - len(depths) + 0.5) * width for i in range(len(envs))]
                ax.bar(xs, heights, width, yerr=errors, label=f"depth {depth}, {who}", hatch="//" if who == "paper" else None,
                       alpha=0.55 if who == "paper" else 0.9, color=f"C{j}")
        ax.set_xticks(range(len(envs)), envs, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("time at goal")
        ax.legend(fontsize=7)
    elif figure == "actor_critic_depth":
        fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 4.2), squeeze=False)
        for ax, env in zip(axes[0], envs):
            actors = sorted({int(k[1].split()[-1]) for k in points if k[0] == env})
            critics = sorted({k[2] for k in points if k[0] == env})
            grid = [[mean_se(done[(env, f"actor {a}", c)]["scores"])[0] if (env, f"actor {a}", c) in done else float("nan")
                     for c in critics] for a in actors]
            im = ax.imshow(grid, origin="lower", cmap="viridis")
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    ax.text(j, i, "—" if v != v else f"{v:.0f}", ha="center", va="center", color="w", fontsize=8)
            ax.set_xticks(range(len(critics)), critics)
            ax.set_yticks(range(len(actors)), actors)
            ax.set_xlabel("critic depth")
            ax.set_ylabel("actor depth")
            ax.set_title(env, fontsize=9)
            fig.colorbar(im, ax=ax, label="time at goal")
    elif figure == "collector_learner":
        settings = sorted({k[1].split(":")[0] for k in done}, key=lambda t: -int(t.split()[-1]))
        fig, axes = plt.subplots(len(settings), len(envs), figsize=(5 * len(envs), 3.6 * len(settings)), squeeze=False)
        for ax, (env, setting) in zip(axes.flat, [(e, t) for t in settings for e in envs]):
            for (e, series, _), p in sorted(done.items()):
                if e != env or not series.startswith(setting + ":"):
                    continue
                agent = series.split(": ")[1]
                key = f"{agent}/eval/time_at_goal"
                curves = [{r["env_steps"]: r[key] for r in run["records"] if key in r and "env_steps" in r} for run in p["runs"]]
                xs = sorted(set.intersection(*(set(c) for c in curves)))
                stats = [mean_se([c[x] for c in curves]) for x in xs]
                (line,) = ax.plot(xs, [m for m, _ in stats], marker=".", label=f"{agent} ({len(curves)} seeds)")
                ax.fill_between(xs, [m - (e or 0) for m, e in stats], [m + (e or 0) for m, e in stats],
                                color=line.get_color(), alpha=0.25, linewidth=0)
            ax.set_xlabel("env steps")
            ax.set_ylabel("time at goal")
            ax.set_title(f"{env}, {setting}", fontsize=9)
            ax.legend(fontsize=7)
    else:
        fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4.2), squeeze=False)
        for ax, env in zip(axes[0], envs):
            for i, series in enumerate(sorted({k[1] for k in points if k[0] == env})):
                cells = sorted((k[2], p) for k, p in points.items() if k[0] == env and k[1] == series and k[2] != "")
                ours = [(p["params"][0] if figure == "width_vs_depth" and p["params"] else x, *mean_se(p["scores"]))
                        for x, p in cells if p["scores"] and (figure != "width_vs_depth" or p["params"])]
                if ours:
                    ax.errorbar([o[0] for o in ours], [o[1] for o in ours], yerr=[o[2] or 0.0 for o in ours], marker="o",
                                capsize=3, color=f"C{i}", label=f"{series}, ours")
                ref = [(x, paper_figures.paper_value(numbers, figure, env, series, x)) for x, _ in cells]
                ref = [(x, r[0]) for x, r in ref if r]
                if ref and figure != "width_vs_depth":
                    ax.plot([x for x, _ in ref], [v for _, v in ref], "--", marker="o", mfc="none", color=f"C{i}",
                            alpha=0.7, label=f"{series}, paper")
            ax.set_xscale("log", base=10 if figure == "width_vs_depth" else 2)
            ax.set_xlabel(xlabel + (" (actor + critic)" if figure == "width_vs_depth" else ""))
            ax.set_ylabel("time at goal")
            ax.set_title(env, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    what = {"collector_learner": "mean over seeds of each evaluation, band ± s.e.",
            "actor_critic_depth": f"mean over seeds of the last-{LAST_N} mean"}.get(
        figure, f"ours: mean over seeds ± s.e. of the last-{LAST_N} mean; the paper's numbers dashed")
    fig.suptitle(f"{figure}: {title}\n({what})", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out_dir, f"figure_{figure}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure_sections(results_dir: str, runs: list, numbers: dict) -> list[str]:
    """One section per figure of figures.tsv: its table (ours beside the paper's, missing runs named)
    and figure_{NAME}.png."""
    cells = read_cells(results_dir)
    by_label = {r["label"]: r for r in runs}
    out = []
    for figure in dict.fromkeys(c["figure"] for c in cells):
        points = figure_points([c for c in cells if c["figure"] == figure], by_label)
        n = len({c["label"] for c in cells if c["figure"] == figure})
        done = len({c["label"] for c in cells if c["figure"] == figure and c["label"] in by_label
                    and by_label[c["label"]]["records"] and not by_label[c["label"]]["problems"]})
        png = plot_figure(figure, points, numbers, results_dir)
        out += [f"### Figure `{figure}`: {paper_figures.FIGURES[figure][1]}", "",
                f"{done} of {n} runs done{'' if done == n else ' (the missing runs: last column)'}. "
                f"The paper's numbers: tools/paper_numbers.json.", "",
                *figure_table(figure, points, numbers), "", f"Plot: {os.path.basename(png) if png else 'none yet (no run done)'}", ""]
        note = numbers.get(figure, {}).get("source") if figure not in ("main_table", "depth_sweep") else None
        out += [f"The paper: {note}.", ""] if note else []
        if figure == "depth_sweep":  # the paper's second humanoid sweep: how far two sweeps differ
            extra = numbers["depth_sweep_appendix"]
            out += [f"The paper's appendix sweep, depths {'/'.join(map(str, extra['depths']))}: " + "; ".join(
                f"{env} {'/'.join(f'{v:g}' for v in values)}" for env, values in extra["values"].items())
                + " (how far two sweeps of the same settings differ).", ""]
    return out


# ==================================================================================================
# Main
# ==================================================================================================
def summarize(results_dir: str, check: bool = False) -> int:
    paper = load_paper()
    out = []
    meta = os.path.join(results_dir, "meta.txt")
    if os.path.exists(meta):
        with open(meta) as f:
            out += ["```", f.read().rstrip(), "```", ""]
    runs = load_runs(results_dir)
    problems = [f"{r['label']}: {p}" for r in runs for p in r["problems"]]
    if runs:
        out += ["### Results", "", *results_table(runs, paper), "",
                f"Each seed's score is the mean of its last {LAST_N} evaluations (epoch >= 1); the table gives the "
                "mean over seeds ± one standard error (sample s.d. / sqrt(seeds); none with one seed). The paper's "
                "numbers are out of 1000 steps; a run's own episode length is in `out of`.", "",
                "### Runtime", "", *runtime_table(runs, paper), ""]
        out += curve_sections(runs)
        curves = plot_curves(runs, results_dir)
        out += [f"Curves: {', '.join(os.path.basename(p) for p in curves)}", ""] if curves else []
    if os.path.exists(os.path.join(results_dir, "figures.tsv")):
        out += figure_sections(results_dir, runs, paper)
    speed_path = os.path.join(results_dir, "speed.jsonl")
    if os.path.exists(speed_path):
        speed, bad = read_jsonl(speed_path)
        problems += bad
        problems += [f"speed {r['target']} {r['impl']} depth {r['depth']}{' remat' if r['remat'] else ''}"
                     + "".join(f" {v}" for v in (speed_variant(r)[0],) if v != "float32")
                     + "".join(f" x{n} seeds" for n in (speed_variant(r)[1],) if n != 1)
                     + f": {r['status']} {r.get('error', '')}" for r in speed if r["impl"] == "scan" and r["status"] != "ok"]
        out += ["### Speed", "", *speed_tables(speed)]
        png = plot_speed(speed, results_dir)
        out += [f"Plot: {os.path.basename(png)}", ""] if png else []
    env_speed_path = os.path.join(results_dir, "env_speed.jsonl")
    if os.path.exists(env_speed_path):
        rows, bad = read_jsonl(env_speed_path)
        problems += bad
        out += ["### Env steps/s, envs stepped alone (tools/bench.py env)", "",
                "| env | envs | env steps/s (auto reset included) | compile s | backend |", "|---|---|---|---|---|",
                *(f"| {r['env_id']} | {r['num_envs']:,} | {r['env_steps_per_s']:,.0f} | {r['compile_s']:.1f} | "
                  f"{r['backend']} |" if r.get("status", "ok") == "ok" else
                  f"| {r['env_id']} | {r['num_envs']:,} | {r['status']}: {r.get('error', '')} | | |" for r in rows), ""]
        problems += [f"env {r['env_id']}: {r['status']} {r.get('error', '')}" for r in rows
                     if r.get("status", "ok") != "ok"]
    heatmaps = sorted(glob.glob(os.path.join(results_dir, "heatmap_*.png")))
    if heatmaps:
        out += [f"Critic heatmaps: {', '.join(os.path.basename(p) for p in heatmaps)}", ""]
    if not runs and not os.path.exists(speed_path):
        problems.append("no runs and no speed measurements found")
    out += ["### Problems", "", *(f"- {p}" for p in problems), ""] if problems else ["No problems: every run "
                                                                                    "exited 0 with finite metrics.", ""]
    text = "\n".join(out)
    with open(os.path.join(results_dir, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    return 1 if (check and problems) else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="write summary.md and PNGs for a results directory")
    s.add_argument("results_dir")
    s.add_argument("--check", action="store_true", help="exit 1 on a failed run, missing metrics or a non-finite number")
    b = sub.add_parser("budget", help="print the paper's env steps for an env id")
    b.add_argument("env_id")
    sub.add_parser("paper-envs", help="print the env ids of the paper's main table")
    a = p.parse_args()
    if a.command == "summarize":
        sys.exit(summarize(a.results_dir, a.check))
    paper = load_paper()
    if a.command == "budget":
        if a.env_id not in paper["budget"]:
            print(f"error: the paper gives no env-step budget for {a.env_id!r} (known: {', '.join(paper['budget'])}); "
                  "pass --total-env-steps", file=sys.stderr)
            sys.exit(2)
        print(paper["budget"][a.env_id])
    else:
        print(" ".join(paper["main_table"]["values"]))


if __name__ == "__main__":
    main()
