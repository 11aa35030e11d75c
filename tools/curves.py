"""The paper's learning curves (tools/paper_curves/, as its authors published them) and runs set against them.

    python tools/curves.py compare RUN_DIR [RUN_DIR...] [--out PNG] [--z-max 3]
    python tools/curves.py list

`compare` reads each run directory of crl_depth.py (args.json and metrics.jsonl; a directory without
them: every run directory found under it) and sets each env and depth against the paper's curve of the
same env, depth and batch size: for every evaluation, ours (mean ± standard error over the seeds, each
seed's value) next to the paper's at the same env steps (the prefill counted, as the paper's code counts
it; between two of the paper's evaluations its mean and standard error are interpolated linearly), and
the difference in units of the combined standard error, z = (ours - paper) / sqrt(se_ours^2 + se_paper^2).
Then, per curve, whether it stayed inside the paper's band (|z| <= --z-max at every evaluation the paper
has a value for) and, for an env with several depths of the same settings, whether the depths come in the
paper's order at the last evaluation they share (not compared where the paper's own gap between two depths
there is under 2 combined standard errors: its order is then within its own noise). It prints that and
draws it (--out, default paper_curve.png in the first run directory): ours with its standard-error band,
the paper's dashed with its own. Runs of another network than the paper's curves (no LayerNorm, ReLU, no
residual, another width, actor and critic of different depths) have no curve to be set against; other
settings that differ from the paper's (envs, SGD steps, episode length, ...) are compared and named, in
the table and in the plot's legend, and runs of different settings are never pooled: each set of settings
has its own table and line. Errors: one line on stderr, exit 2, nothing written.

`list`: every curve of the three files: env, depth, batch size, evaluations, the env steps of the first
and the last, the last value.
"""

import argparse
import bisect
import glob
import json
import math
import os
import statistics
import sys
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURVES_DIR = os.path.join(ROOT, "tools", "paper_curves")
PAPER_NUMBERS = os.path.join(ROOT, "tools", "paper_numbers.json")
METRIC = "eval/time_at_goal"  # the paper's eval/episode_success: steps at goal out of the episode length
Z_MAX = 3.0  # "inside the band": |z| <= Z_MAX at every evaluation (docs/replicate.md says why 3)
MIN_GAP_Z = 2.0  # the depth ordering is compared only where the paper's own gap is at least this many combined s.e.

# the paper's settings (arXiv 2503.14858, Table 7; crl_depth.py's defaults): a run's args.json without a
# key has the default. NETWORK: settings of the network itself, for which the curves exist only as here.
PAPER = dict(num_envs=512, unroll_length=62, num_sgd_steps=800, batch_size=512, max_replay_size=10_000,
             min_replay_size=1_000, episode_length=1000, num_eval_envs=128, gamma=0.99, actor_lr=3e-4,
             critic_lr=3e-4, alpha_lr=3e-4, logsumexp_penalty=0.1, target_entropy_scale=0.5,
             compute_dtype="float32")
NETWORK = dict(width=256, repr_dim=64, layer_norm=True, activation="swish", residual=True)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (error: ...) and exit status 2."""

    def error(self, message: str) -> None:
        fail(message)


# ==================================================================================================
# The paper's curves
# ==================================================================================================
def paper_schedule(budget: int, num_epochs: int, num_envs: int = 512, unroll_length: int = 62,
                   min_replay_size: int = 1000) -> tuple[int, int]:
    """(prefill env steps, env steps of one epoch) of the paper's code: ceil(min_replay / unroll) unrolls of
    every env before training, counted in its env steps, then (budget - min_replay x envs) // (epochs x envs
    x unroll) training steps of envs x unroll env steps each epoch."""
    per_train_step = num_envs * unroll_length
    prefill = -(-min_replay_size // unroll_length) * per_train_step
    return prefill, (budget - min_replay_size * num_envs) // (num_epochs * per_train_step) * per_train_step


def make_curve(env: str, depth: int, batch: int, source: str, means: list, ses: list,
               budget: Optional[int]) -> dict:
    """A curve: its values (epoch k = 1, 2, ... is means[k - 1]) and, given the env's budget, the env steps of
    each (None: not known)."""
    xs = None
    if budget:
        prefill, per_epoch = paper_schedule(budget, len(means))
        xs = [prefill + k * per_epoch for k in range(1, len(means) + 1)]
    return {"env": env, "depth": depth, "batch_size": batch, "source": source, "means": [float(m) for m in means],
            "ses": [float(s) for s in ses], "xs": xs}


def load_curves(directory: str = CURVES_DIR, numbers: str = PAPER_NUMBERS) -> list[dict]:
    """Every curve of the three files, main figure first. The env-step budgets (to place the evaluations on
    the env-step axis) are the paper's (tools/paper_numbers.json, Table 7); the scaling-limit curves have
    none (their file does not say how their evaluations are spaced)."""
    with open(numbers) as f:
        budgets = json.load(f)["env_steps"]["values"]
    curves = []
    with open(os.path.join(directory, "fig1_main.json")) as f:
        for env, c in json.load(f).items():
            for depth in c["depths"]:
                curves.append(make_curve(env, int(depth), 512, f"fig1_main.json ({env}, depth {depth})",
                                         c["depth_mean"][str(depth)], c["depth_std_error"][str(depth)], budgets.get(env)))
    with open(os.path.join(directory, "fig7_batch_size.json")) as f:
        for depth_key, by_batch in json.load(f).items():
            depth = int(depth_key.split("_")[1])
            for batch_key, c in by_batch.items():
                batch = int(batch_key.rsplit("_", 1)[1])
                curves.append(make_curve("humanoid", depth, batch, f"fig7_batch_size.json ({depth_key}, {batch_key})",
                                         c["mean"], c["std_error"], budgets["humanoid"]))
    with open(os.path.join(directory, "fig12_scaling_limits.json")) as f:
        for env, c in json.load(f).items():
            for depth, d in c["depths"].items():
                curves.append(make_curve(env, int(depth), 512, f"fig12_scaling_limits.json ({env}, depth {depth})",
                                         d["mean"], d["std_error"], None))
    return curves


def find_curve(curves: list[dict], env: str, depth: int, batch: int = 512) -> Optional[dict]:
    """The paper's curve of env, depth and batch size on the env-step axis (the main figure's before the
    batch-size figure's), or None."""
    for c in curves:
        if (c["env"], c["depth"], c["batch_size"]) == (env, depth, batch) and c["xs"]:
            return c
    return None


def at(curve: dict, x: float) -> Optional[tuple[float, float]]:
    """(mean, standard error) of the curve at env steps x: its value where it has one there, else the two
    values around x interpolated linearly (the standard error too); None before its first or after its last."""
    xs = curve["xs"]
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return curve["means"][i], curve["ses"][i]
    w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    lerp = lambda v: v[i - 1] + w * (v[i] - v[i - 1])  # noqa: E731
    return lerp(curve["means"]), lerp(curve["ses"])


def z_score(ours: float, ours_se: Optional[float], paper: float, paper_se: float) -> float:
    """(ours - paper) / sqrt(ours_se^2 + paper_se^2); our standard error is 0 with one seed. Both errors 0:
    0 if the means are equal, else +-inf."""
    combined = math.sqrt((ours_se or 0.0) ** 2 + paper_se ** 2)
    if combined == 0:
        return 0.0 if ours == paper else math.copysign(math.inf, ours - paper)
    return (ours - paper) / combined


def mean_se(values: list) -> tuple[float, Optional[float]]:
    """Mean and standard error (sample standard deviation / sqrt(n)); no error with one value."""
    mean = sum(values) / len(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


# ==================================================================================================
# Runs
# ==================================================================================================
def read_run(run_dir: str) -> dict:
    """args.json and metrics.jsonl of a run directory of crl_depth.py (one line per seed and epoch)."""
    for name in ("args.json", "metrics.jsonl"):
        if not os.path.isfile(os.path.join(run_dir, name)):
            fail(f"{run_dir}: no {name} (not a run directory of crl_depth.py)")
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            args = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{run_dir}: args.json unreadable ({' '.join(str(e).split())})")
    if not isinstance(args, dict):
        fail(f"{run_dir}: args.json is not a JSON object")
    records = []
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                if line.strip():
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a run stopped while writing it
                    if isinstance(r, dict):
                        records.append(r)
    except (OSError, UnicodeDecodeError) as e:
        fail(f"{run_dir}: metrics.jsonl unreadable ({' '.join(str(e).split())})")
    return {"dir": run_dir, "args": args, "records": records}


def run_dirs(paths: list[str]) -> list[str]:
    """Each path that is a run directory, or else every run directory under it."""
    found = []
    for path in paths:
        if not os.path.isdir(path):
            fail(f"no such directory: {path}")
        if os.path.isfile(os.path.join(path, "metrics.jsonl")):
            found.append(path)
            continue
        below = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(path, "**", "metrics.jsonl"), recursive=True))
        if not below:
            fail(f"{path}: no metrics.jsonl in it or below it (not a run directory of crl_depth.py)")
        found += below
    return found


def reference(args: dict, curves: list[dict]) -> tuple[Optional[dict], str]:
    """(the paper's curve to set a run of these args against, or None; what differs from the paper's settings,
    or why there is no curve)."""
    if args.get("exp_name", "crl_depth") != "crl_depth":
        return None, f"a run of {args['exp_name']}.py (the paper's curves are of online CRL, crl_depth.py)"
    env, depth = args.get("env_id"), args.get("depth")
    actor, critic = args.get("actor_depth") or depth, args.get("critic_depth") or depth
    if actor != critic:
        return None, f"actor depth {actor} and critic depth {critic} (the paper's curves: both the same)"
    network = [f"{k} {args[k]} (paper {v})" for k, v in NETWORK.items() if k in args and args[k] != v]
    if network:
        return None, "another network than the paper's curves: " + ", ".join(network)
    batch = args.get("batch_size", PAPER["batch_size"])
    curve = find_curve(curves, env, critic, batch)
    if curve is None:
        return None, f"the paper published no curve of {env} at depth {critic}" + (
            f" and batch size {batch}" if batch != PAPER["batch_size"] else "")
    other = [f"{k} {args[k]} (paper {v})" for k, v in PAPER.items() if k in args and args[k] != v and k != "batch_size"]
    return curve, ("settings that differ from the paper's: " + ", ".join(other)) if other else ""


def by_epoch(records: list[dict], key: str = METRIC) -> dict:
    """{epoch: (env steps, {seed: value})} of the records that have the metric."""
    out: dict = {}
    for r in records:
        if key in r and "epoch" in r:
            steps, values = out.setdefault(r["epoch"], (r.get("env_steps"), {}))
            values[r.get("seed", 0)] = r[key]
    return out


def pool(runs: list[dict], key: str = METRIC) -> list[tuple]:
    """[(epoch, env steps, [value of each seed])]: the evaluations of several runs of the same settings (each
    seed of each run one curve), at the epochs every one of them reached with the same env steps."""
    tables = [by_epoch(r["records"], key) for r in runs]
    rows = []
    for epoch in sorted(set.intersection(*(set(t) for t in tables)) if tables else ()):
        steps = {t[epoch][0] for t in tables}
        if len(steps) == 1:
            rows.append((epoch, steps.pop(), [v for t in tables for _, v in sorted(t[epoch][1].items())]))
    return rows


def compare_rows(rows: list[tuple], curve: dict, paper_x: Optional[dict] = None) -> list[dict]:
    """Each of our evaluations next to the paper's: epoch, env steps, our values, mean and standard error, the
    paper's mean and standard error at the same env steps (paper_x: {epoch: the env steps to read the paper's
    curve at} instead), and z. The untrained evaluation (epoch 0) has no paper's value."""
    out = []
    for epoch, steps, values in rows:
        mean, se = mean_se(values)
        x = (paper_x or {}).get(epoch, steps) if epoch >= 1 else None
        ref = at(curve, x) if x is not None else None
        out.append({"epoch": epoch, "env_steps": steps, "values": values, "mean": mean, "se": se,
                    "paper": ref, "z": z_score(mean, se, *ref) if ref else None})
    return out


def verdict(rows: list[dict], z_max: float = Z_MAX) -> dict:
    """Over the evaluations with a paper's value: how many, how many within z_max combined standard errors,
    the largest |z| and its epoch, how many of our means lie inside the paper's mean ± s.e., and `inside`:
    every one within z_max (None when there is nothing to compare)."""
    compared = [r for r in rows if r["z"] is not None]
    if not compared:
        return {"compared": 0, "inside": None}
    worst = max(compared, key=lambda r: abs(r["z"]))
    return {"compared": len(compared), "within": sum(abs(r["z"]) <= z_max for r in compared),
            "in_paper_band": sum(abs(r["mean"] - r["paper"][0]) <= r["paper"][1] for r in compared),
            "max_abs_z": abs(worst["z"]), "max_at_epoch": worst["epoch"],
            "inside": all(abs(r["z"]) <= z_max for r in compared), "z_max": z_max}


def ordering(last: dict) -> Optional[dict]:
    """last: {depth: row} at one evaluation (the same epoch for every depth), each with the paper's value.
    The depths from the highest mean to the lowest (equal means tied), ours and the paper's, and whether they
    match; `paper_gap_z`: the smallest gap between two depths next to each other in the paper's order, in
    units of their combined standard error sqrt(se_a^2 + se_b^2) (0 for equal means; infinite for unequal
    means without errors); `compared`: that gap at least MIN_GAP_Z (else the paper's order is within its own
    noise and `match` says nothing). None with fewer than two depths or a depth without the paper's value."""
    if len(last) < 2 or any(r["paper"] is None for r in last.values()):
        return None

    def ranked(value) -> list:
        groups: list = []
        for d in sorted(last, key=lambda d: (-value(d), d)):
            if groups and value(groups[-1][0]) == value(d):
                groups[-1].append(d)
            else:
                groups.append([d])
        return groups

    ours, paper = ranked(lambda d: last[d]["mean"]), ranked(lambda d: last[d]["paper"][0])
    by_paper = sorted(last, key=lambda d: -last[d]["paper"][0])
    gap = min(abs(z_score(last[a]["paper"][0], last[a]["paper"][1], last[b]["paper"][0], last[b]["paper"][1]))
              for a, b in zip(by_paper, by_paper[1:]))
    return {"epoch": next(iter(last.values()))["epoch"], "ours": ours, "paper": paper,
            "means": {d: (r["mean"], r["paper"][0]) for d, r in last.items()}, "match": ours == paper,
            "paper_gap_z": gap, "compared": gap >= MIN_GAP_Z}


# ==================================================================================================
# Text and plots
# ==================================================================================================
def fmt_mean_se(mean: float, se: Optional[float], digits: Optional[int] = None) -> str:
    """mean ± se, to 2 decimals below 10 (the early curves' small values), else to 1."""
    digits = digits if digits is not None else (2 if abs(mean) < 10 else 1)
    return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def fmt_z(z: Optional[float]) -> str:
    return "—" if z is None else ("∞" if math.isinf(z) and z > 0 else "-∞" if math.isinf(z) else f"{z:+.1f}")


def rows_table(rows: list[dict], seeds_column: bool = True) -> list[str]:
    """A markdown table: epoch, env steps, ours, (each seed,) the paper's at the same env steps, z."""
    head = "| epoch | env steps | ours (mean ± s.e.) |" + (" each seed |" if seeds_column else "") + \
           " paper at these env steps (mean ± s.e.) | (ours - paper) / combined s.e. |"
    lines = [head, "|---|---|---|" + ("---|" if seeds_column else "") + "---|---|"]
    for r in rows:
        paper = fmt_mean_se(*r["paper"]) if r["paper"] else "—"
        seeds = (" " + " / ".join(fmt_mean_se(v, None) for v in r["values"]) + " |") if seeds_column else ""
        steps = f"{r['env_steps']:,}" if r["env_steps"] is not None else "—"
        lines.append(f"| {r['epoch']} | {steps} | {fmt_mean_se(r['mean'], r['se'])} |{seeds} {paper} | {fmt_z(r['z'])} |")
    return lines


def verdict_line(name: str, v: dict) -> str:
    if not v["compared"]:
        return f"{name}: no evaluation where the paper's curve has a value: nothing compared"
    return (f"{name}: {'inside' if v['inside'] else 'OUTSIDE'} the paper's band: |ours - paper| <= {v['z_max']:g} "
            f"combined s.e. at {v['within']} of {v['compared']} evaluations (largest {v['max_abs_z']:.1f} at epoch "
            f"{v['max_at_epoch']}); our mean inside the paper's mean ± s.e. at {v['in_paper_band']} of {v['compared']}")


def ordering_line(name: str, o: Optional[dict]) -> str:
    if o is None:
        return f"{name}: depth ordering: not compared (fewer than two depths with the paper's value at a shared evaluation)"

    def order(groups: list, which: int) -> str:
        text = " > ".join(" = ".join(f"depth {d}" for d in g) for g in groups)
        return text + " (" + ", ".join(fmt_mean_se(o["means"][d][which], None) for g in groups for d in g) + ")"

    head = f"{name}: depth ordering at epoch {o['epoch']}: ours {order(o['ours'], 0)}; the paper's {order(o['paper'], 1)}: "
    if not o.get("compared", True):
        return head + (f"not compared: the paper's own gap there is {o['paper_gap_z']:.1f} combined s.e., under "
                       f"{MIN_GAP_Z:g} (its order is within its own noise)")
    return head + ("the same" if o["match"] else "NOT the same")


def draw(ax, series: list[tuple], title: str) -> None:
    """series: [(label, rows, curve, colour index[, what differs from the paper's settings])]: ours (mean, band
    ± s.e.) solid, the paper's dashed with its band, over our env steps (to the paper's evaluation after our
    last); the paper's legend says "settings differ: ..." where ours were run at other settings."""
    for label, rows, curve, i, *differs in series:
        differs = differs[0] if differs else ""
        xs = [r["env_steps"] for r in rows]
        mean = [r["mean"] for r in rows]
        se = [r["se"] or 0.0 for r in rows]
        ax.plot(xs, mean, marker=".", color=f"C{i}", label=f"{label}, ours ({len(rows[0]['values'])} seeds)")
        ax.fill_between(xs, [m - e for m, e in zip(mean, se)], [m + e for m, e in zip(mean, se)], color=f"C{i}",
                        alpha=0.25, linewidth=0)
        if curve is not None:
            n = min(len(curve["xs"]), bisect.bisect_left(curve["xs"], max(xs)) + 1)
            px, pm, ps = curve["xs"][:n], curve["means"][:n], curve["ses"][:n]
            ax.plot(px, pm, "--", color=f"C{i}", alpha=0.8,
                    label=f"{label}, paper" + (f" (settings differ: {differs})" if differs else ""))
            ax.fill_between(px, [m - s for m, s in zip(pm, ps)], [m + s for m, s in zip(pm, ps)], color=f"C{i}",
                            alpha=0.12, linewidth=0, hatch="//")
    ax.set_xlabel("env steps (prefill included)")
    ax.set_ylabel("time at goal")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


# ==================================================================================================
# Main
# ==================================================================================================
def compare(paths: list[str], out: Optional[str], z_max: float) -> None:
    curves = load_curves()
    runs = [read_run(d) for d in run_dirs(paths)]
    groups: dict = {}
    for run in runs:
        curve, note = reference(run["args"], curves)
        if curve is None:
            fail(f"{run['dir']}: {note}")
        if not by_epoch(run["records"]):
            fail(f"{run['dir']}: no evaluation ({METRIC}) in its metrics.jsonl yet")
        # runs are pooled only with runs of the same curve and the same settings
        groups.setdefault((curve["env"], curve["batch_size"], note, curve["depth"]), (curve, []))[1].append(run)
    notes = {}  # (env, batch, depth) -> the settings of each of its groups
    for env, batch, note, depth in groups:
        notes.setdefault((env, batch, depth), []).append(note)
    lines, panels, last = [], {}, {}
    for (env, batch, note, depth), (curve, group) in sorted(groups.items()):
        rows = compare_rows(pool(group), curve)
        if not rows:
            fail(f"{env} depth {depth}: runs of the same settings with no evaluation at the same epoch and env steps "
                 f"(another --total-env-steps or --num-epochs?): {', '.join(r['dir'] for r in group)}")
        name = f"{env}, depth {depth}" + (f", batch {batch}" if batch != 512 else "")
        differs = note.split(": ", 1)[1] if note else ""
        if len(notes[(env, batch, depth)]) > 1:  # several settings of the same curve: each named
            name += " (" + (differs or "the paper's settings") + ")"
        lines += [f"## {name}", "", f"Runs: {', '.join(r['dir'] for r in group)}",
                  f"The paper's curve: tools/paper_curves/{curve['source']}" + (f". Our {note}" if note else ""), "",
                  *rows_table(rows), "", verdict_line(name, verdict(rows, z_max)), ""]
        label = name.split(", ", 1)[1]
        panels.setdefault(env, []).append((label, rows, curve, len(panels.get(env, [])), differs))
        last.setdefault((env, batch, note), {})[depth] = rows
    for (env, batch, note), by_depth in sorted(last.items()):
        if len(by_depth) > 1:  # the depths of the same settings
            shared = set.intersection(*({r["epoch"] for r in rows if r["paper"]} for rows in by_depth.values()))
            epoch = max(shared) if shared else None
            o = ordering({d: next(r for r in rows if r["epoch"] == epoch) for d, rows in by_depth.items()}) if epoch else None
            lines.append(ordering_line(env + (f", batch {batch}" if batch != 512 else "")
                                       + (" (" + note.split(": ", 1)[1] + ")" if note else ""), o))
    out = out or os.path.join(runs[0]["dir"], "paper_curve.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (env, series) in zip(axes[0], sorted(panels.items())):
        draw(ax, series, f"{env}: time at goal, ours against the paper's curves (bands ± s.e.)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print("\n".join(lines + ["", f"plot: {out}"]))


def list_curves() -> None:
    for c in load_curves():
        span = (f"env steps {c['xs'][0]:,} .. {c['xs'][-1]:,}" if c["xs"] else "env steps between evaluations not given")
        print(f"{c['env']:<18} depth {c['depth']:<5} batch {c['batch_size']:<5} {len(c['means']):>3} evaluations, "
              f"{span}, last {fmt_mean_se(c['means'][-1], c['ses'][-1])} | {c['source']}")


def main() -> None:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="set run directories against the paper's curves of their env and depth")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", help="PNG to write (default: paper_curve.png in the first run directory)")
    c.add_argument("--z-max", type=float, default=Z_MAX, help="inside the band: |z| at most this (default %(default)s)")
    sub.add_parser("list", help="every curve of tools/paper_curves/")
    a = p.parse_args()
    if a.command == "list":
        list_curves()
        return
    if not (math.isfinite(a.z_max) and a.z_max > 0):
        fail(f"--z-max must be a positive finite number (got {a.z_max:g})")
    if a.out and not os.path.isdir(os.path.dirname(os.path.abspath(a.out))):
        fail(f"--out {a.out}: no such directory")
    compare(a.run_dirs, a.out, a.z_max)


if __name__ == "__main__":
    main()
