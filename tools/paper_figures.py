"""The paper's results as grids of runs, one per table or figure of arXiv 2503.14858, for
`bash benchmark.sh paper --figure NAME` and `--list`; tools/benchmark_summary.py draws each figure.

    python tools/paper_figures.py list [--envs E...] [--depths D...] [--seeds S...] [--total-env-steps N]
    python tools/paper_figures.py plan NAME [--envs E...] [--depths D...] [--seeds S...] [--total-env-steps N]
                                            [--extra "FLAGS"] [--datasets FILE...] [--cells]

`list`: one result a line: its name, its number of runs and the paper's GPU hours for them (the
wall-clock hours of tools/paper_numbers.json, scaled by env steps; only runs of a network and budget
that the wall-clock data has count, and the line says how many of the runs that is).
`plan`: one run a line, tab-separated: label, script, env, depth, seed, flags (benchmark.sh's plan);
with --cells each run's place in its figure instead (figures.tsv: figure, label, script, env, series,
x, seed, paper GPU hours of the run). NAME `all` is every figure; a run that two figures share (the
same label and flags) is in the plan once.

Defaults are the paper's settings (tools/paper_numbers.json): its envs, depths, env-step budgets, and
seeds (5 for the main table, 3 elsewhere). --envs, --depths and --seeds replace a figure's envs, its
depth axis and its seeds; --total-env-steps replaces every run's budget; --extra is added to every run.
The offline figure trains crl_depth_offline.py on the replay buffer that an online run of the same
plan saves (crl_depth.py --save-buffer; its flag `--dataset @buffer:LABEL` names that run, and the
run's buffer.npz takes its place when the offline run starts), or with --datasets on files given.
Errors: one line on stderr, exit 2.
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_NUMBERS = os.path.join(ROOT, "tools", "paper_numbers.json")
WIDTH, BATCH = 256, 512  # crl_depth.py's defaults, the paper's (Table 7)
SWEEP_ENVS = ("humanoid", "ant_big_maze", "arm_push_easy")  # the depth sweep's three envs
ABLATION_DEPTHS = (4, 16, 32, 64)
OFFLINE_ENVS = ("ant_big_maze", "ant_hardest_maze", "humanoid_u_maze")  # the mazes nearest OGBench's
CELL_FIELDS = ("figure", "label", "script", "env", "series", "x", "seed", "paper_hours")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_numbers() -> dict:
    with open(PAPER_NUMBERS) as f:
        return json.load(f)


@dataclasses.dataclass
class Run:
    figure: str
    label: str
    script: str
    env: str
    depth: int
    seed: int
    flags: str
    series: str
    x: object  # the figure's axis value (a depth, width or batch size); "" for a dataset run
    paper_hours: Optional[float] = None  # this run's hours on one GPU in the paper's wall-clock data, scaled


@dataclasses.dataclass
class Options:
    envs: Optional[list] = None
    depths: Optional[list] = None
    seeds: Optional[list] = None
    total_env_steps: Optional[int] = None
    extra: str = ""
    datasets: Optional[list] = None


class Grid:
    """Builds one figure's runs; `online` and `offline` add one run each."""

    def __init__(self, figure: str, opts: Options, numbers: dict):
        self.figure, self.opts, self.numbers, self.runs = figure, opts, numbers, []

    def budget(self, env: str) -> int:
        if self.opts.total_env_steps:
            return self.opts.total_env_steps
        budgets = self.numbers["env_steps"]["values"]
        if env not in budgets:
            fail(f"the paper gives no env-step budget for {env!r} (it has: {', '.join(budgets)}); pass --total-env-steps")
        return budgets[env]

    def hours(self, env: str, depth: int, steps: int, limit: bool) -> Optional[float]:
        """The paper's hours of this run (the wall-clock data, scaled by env steps), or None."""
        if limit:
            lt = self.numbers["limit_test"]
            by_depth = dict(zip(lt["depths"], lt["hours"])) if env == lt["env"] else {}
            return by_depth[depth] * steps / lt["env_steps_about"] if depth in by_depth else None
        clock = self.numbers["wall_clock_hours"]
        values = clock["values"].get(env)
        if values is None or depth not in clock["depths"]:
            return None
        return values[clock["depths"].index(depth)] * steps / self.numbers["env_steps"]["values"][env]

    def online(self, env: str, depth: int, seed: int, series: str, x, *, actor: Optional[int] = None,
               width: int = WIDTH, batch: int = BATCH, layer_norm: bool = True, activation: str = "swish",
               residual: bool = True, steps: Optional[int] = None, save_buffer: bool = False) -> Run:
        """A crl_depth.py run; `steps` (the limit test's budget) is the env steps unless --total-env-steps."""
        limit = steps is not None and not self.opts.total_env_steps
        steps = steps if limit else self.budget(env)
        label = f"crl_depth__{env}__d{depth}" + (f"__actor{actor}" if actor is not None else "")
        label += ("__noln" if not layer_norm else "") + ("__relu" if activation == "relu" else "")
        label += ("__nores" if not residual else "") + (f"__w{width}" if width != WIDTH else "")
        label += (f"__b{batch}" if batch != BATCH else "") + (f"__{steps / 1e6:g}M" if limit else "") + f"__s{seed}"
        flags = [f"--env-id {env} --depth {depth}"] + ([f"--actor-depth {actor}"] if actor is not None else [])
        flags += [f"--seed {seed} --total-env-steps {steps}"]
        flags += (["--no-layer-norm"] if not layer_norm else []) + (["--activation relu"] if activation == "relu" else [])
        flags += (["--no-residual"] if not residual else []) + ([f"--width {width}"] if width != WIDTH else [])
        flags += ([f"--batch-size {batch}"] if batch != BATCH else []) + (["--save-buffer"] if save_buffer else [])
        plain = (layer_norm and activation == "swish" and residual and width == WIDTH and batch == BATCH
                 and actor in (None, depth, self.numbers["limit_test"]["actor_depth_at_1024"] if limit else depth))
        run = Run(self.figure, label, "crl_depth.py", env, depth, seed, " ".join(flags + [self.opts.extra]).strip(),
                  series, x, self.hours(env, depth, steps, limit) if plain else None)
        self.runs.append(run)
        return run

    def add(self, label: str, script: str, env: str, depth: int, seed: int, flags: str, series: str, x) -> None:
        self.runs.append(Run(self.figure, label, script, env, depth, seed, f"{flags} {self.opts.extra}".strip(), series, x))

    # the figure's axes, replaced by the options where given
    def envs(self, default) -> list:
        return list(self.opts.envs or default)

    def depths(self, default) -> list:
        return [int(d) for d in (self.opts.depths or default)]

    def seeds(self, main: bool = False) -> list:
        n = self.numbers["seeds"]["main" if main else "elsewhere"]
        return [int(s) for s in (self.opts.seeds or range(1, n + 1))]


# --- the figures: each fills a Grid with the runs of one table or figure of the paper ------------------
def main_table(g: Grid) -> None:
    for env in g.envs(g.numbers["main_table"]["values"]):
        for depth in g.depths(g.numbers["main_table"]["depths"]):
            for seed in g.seeds(main=True):
                g.online(env, depth, seed, f"depth {depth}", depth)


def depth_sweep(g: Grid) -> None:
    for env in g.envs(g.numbers["depth_sweep"]["values"]):
        for depth in g.depths(g.numbers["depth_sweep"]["depths"]):
            for seed in g.seeds():
                g.online(env, depth, seed, "depth", depth)


def ablation(variants: dict) -> Callable[[Grid], None]:
    """Humanoid at depths 4, 16, 32, 64: one series per variant (name: crl_depth.py's network options)."""
    def build(g: Grid) -> None:
        for env in g.envs(("humanoid",)):
            for name, network in variants.items():
                for depth in g.depths(ABLATION_DEPTHS):
                    for seed in g.seeds():
                        g.online(env, depth, seed, name, depth, **network)
    return build


def width_vs_depth(g: Grid) -> None:
    """Wider at depth 4 (widths 256..2048) against deeper at width 256 (depths 4..64)."""
    for env in g.envs(SWEEP_ENVS):
        for seed in g.seeds():
            for width in (256, 512, 1024, 2048):
                g.online(env, 4, seed, "wider (depth 4)", width, width=width)
            for depth in g.depths((4, 8, 16, 32, 64)):
                g.online(env, depth, seed, "deeper (width 256)", depth)


def batch_size(g: Grid) -> None:
    for env in g.envs(("humanoid",)):
        for depth in g.depths((4, 64)):
            for batch in g.numbers["batch_size"]["batch_sizes"]:
                for seed in g.seeds():
                    g.online(env, depth, seed, f"depth {depth}", batch, batch=batch)


def actor_critic_depth(g: Grid) -> None:
    """Every actor depth against every critic depth (--depth: the critic's; --actor-depth when it differs)."""
    for env in g.envs(("humanoid",)):
        depths = g.depths(ABLATION_DEPTHS)
        for actor in depths:
            for critic in depths:
                for seed in g.seeds():
                    g.online(env, critic, seed, f"actor {actor}", critic, actor=actor if actor != critic else None)


def limit_test(g: Grid) -> None:
    lt = g.numbers["limit_test"]
    for env in g.envs((lt["env"],)):
        for depth in g.depths(lt["depths"]):
            actor = lt["actor_depth_at_1024"] if depth >= 1024 else None
            for seed in g.seeds():
                g.online(env, depth, seed, "depth", depth, actor=actor, steps=lt["env_steps_about"])


def collector_learner(g: Grid) -> None:
    cl = g.numbers["collector_learner"]
    for env in g.envs(cl["envs"]):
        for collector in g.depths(cl["collector_depths"]):
            for seed in g.seeds():
                g.add(f"crl_collector_learner__{env}__c{collector}__s{seed}", "crl_collector_learner.py", env, collector,
                      seed, f"--env-id {env} --collector-depth {collector} --deep-learner-depth {cl['deep_learner_depth']} "
                      f"--shallow-learner-depth {cl['shallow_learner_depth']} --seed {seed} --total-env-steps "
                      f"{g.budget(env)}", f"collector {collector}", collector)


def offline(g: Grid) -> None:
    """Depths 4..64 offline, on each --datasets file or on the buffer of an online depth-4 run of each env."""
    if g.opts.datasets:
        sources = [(os.path.basename(path).removesuffix(".npz"), path) for path in g.opts.datasets]
    else:
        sources = []
        for env in g.envs(OFFLINE_ENVS):
            run = g.online(env, 4, g.seeds()[0], "dataset (online, depth 4)", "", save_buffer=True)
            sources.append((env, f"@buffer:{run.label}"))
    for name, dataset in sources:
        for depth in g.depths(g.numbers["offline"]["depths"]):
            for seed in g.seeds():
                g.add(f"crl_depth_offline__{name}__d{depth}__s{seed}", "crl_depth_offline.py", name, depth, seed,
                      f"--dataset {dataset} --depth {depth} --seed {seed}", "offline", depth)


# name -> (builder, what the paper shows, the x axis of its plot)
FIGURES = {
    "main_table": (main_table, "main table: time at goal at depth 4 and 64, 10 envs", "depth"),
    "depth_sweep": (depth_sweep, "depth sweep: depths 4-64 on humanoid, ant_big_maze, arm_push_easy", "depth"),
    "layer_norm": (ablation({"with LayerNorm": {}, "without LayerNorm": {"layer_norm": False}}),
                   "ablation: with and without LayerNorm, humanoid, depths 4-64", "depth"),
    "activation": (ablation({"Swish": {}, "ReLU": {"activation": "relu"}}),
                   "ablation: Swish against ReLU, humanoid, depths 4-64", "depth"),
    "residual": (ablation({"residual": {}, "no residual": {"residual": False}}),
                 "ablation: with and without residual connections, humanoid, depths 4-64", "depth"),
    "width_vs_depth": (width_vs_depth, "width 256-2048 at depth 4 against depth 4-64 at width 256 (parameters)",
                       "parameters"),
    "batch_size": (batch_size, "batch size 128-2048 at depth 4 and 64, humanoid", "batch size"),
    "actor_critic_depth": (actor_critic_depth, "actor depth against critic depth (4-64), humanoid", "critic depth"),
    "limit_test": (limit_test, "the limit test: depths 4-1024 on humanoid_u_maze (actor 512 at 1024)", "depth"),
    "collector_learner": (collector_learner, "collector/learner: deep and shallow collector, 3 envs",
                          "env steps"),
    "offline": (offline, "offline CRL at depths 4-64 on saved datasets", "depth"),
}


def paper_value(numbers: dict, figure: str, env: str, series: str, x) -> Optional[tuple]:
    """(mean, standard error or None) that the paper gives for this point of a figure, or None."""
    def at(depths: list, values: list):
        return (float(values[depths.index(x)]), None) if x in depths else None

    if figure == "main_table":
        mean_se = numbers["main_table"]["values"].get(env, {}).get(str(x))
        return (float(mean_se[0]), float(mean_se[1])) if mean_se else None
    if figure == "depth_sweep" and env in numbers["depth_sweep"]["values"]:
        return at(numbers["depth_sweep"]["depths"], numbers["depth_sweep"]["values"][env])
    if figure in ("layer_norm", "activation") and env == numbers[figure]["env"] and series in numbers[figure]["values"]:
        return at(numbers[figure]["depths"], numbers[figure]["values"][series])
    return None


def build(name: str, opts: Options, numbers: dict) -> list:
    """The runs of one figure, or of `all` (a run two figures share once: same label, same flags; a run
    that one figure saves the buffer of and another does not: once, with --save-buffer)."""
    if name != "all" and name not in FIGURES:
        fail(f"unknown figure {name!r} (one of: {', '.join(FIGURES)}, all)")
    runs = []
    for fig in FIGURES if name == "all" else [name]:
        g = Grid(fig, opts, numbers)
        FIGURES[fig][0](g)
        runs += g.runs
    return runs


def unique(runs: list) -> list:
    """One run per label, in plan order; a label with other flags than before is an error (but for
    --save-buffer, which the kept run then has)."""
    out: dict = {}
    for run in runs:
        seen = out.get(run.label)
        if seen is None:
            out[run.label] = run
        elif seen.flags != run.flags:
            strip = lambda f: " ".join(w for w in f.split() if w != "--save-buffer")
            if strip(seen.flags) != strip(run.flags):
                fail(f"two runs named {run.label} with other flags: {seen.flags!r} and {run.flags!r}")
            if "--save-buffer" in run.flags.split():
                seen.flags = run.flags
    return list(out.values())


def fmt_hours(runs: list) -> str:
    known = [r.paper_hours for r in runs if r.paper_hours is not None]
    if not known:
        return f"paper GPU hours: none of the {len(runs)} runs is in the paper's wall-clock data"
    return f"paper GPU hours {sum(known):,.1f} ({len(known)} of {len(runs)} runs in the paper's wall-clock data)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    parsers = [sub.add_parser("list", help="one result a line: name, runs, the paper's GPU hours"),
               sub.add_parser("plan", help="the plan of one figure (or all), one run a line")]
    parsers[1].add_argument("name")
    parsers[1].add_argument("--extra", default="")
    parsers[1].add_argument("--datasets", nargs="+")
    parsers[1].add_argument("--cells", action="store_true", help="print figures.tsv instead of the plan")
    for q in parsers:
        q.add_argument("--envs", nargs="+")
        q.add_argument("--depths", nargs="+", type=int)
        q.add_argument("--seeds", nargs="+", type=int)
        q.add_argument("--total-env-steps", type=int)
    a = p.parse_args()
    numbers = load_numbers()
    opts = Options(a.envs, a.depths, a.seeds, a.total_env_steps, getattr(a, "extra", ""), getattr(a, "datasets", None))
    if a.command == "list":
        everything = []
        for name, (_, title, _) in FIGURES.items():
            runs = unique(build(name, opts, numbers))
            everything += runs
            print(f"{name:<19} {len(runs):>4} runs  {fmt_hours(runs)}  | {title}")
        runs = unique(everything)
        print(f"{'all':<19} {len(runs):>4} runs  {fmt_hours(runs)}  | every run above, a shared run once")
        return
    runs = build(a.name, opts, numbers)
    if a.cells:
        for r in runs:
            hours = "" if r.paper_hours is None else f"{r.paper_hours:.6g}"
            print("\t".join(str(v) for v in (r.figure, r.label, r.script.removesuffix(".py"), r.env, r.series, r.x,
                                              r.seed, hours)))
        return
    for r in unique(runs):
        print("\t".join(str(v) for v in (r.label, r.script, r.env, r.depth, r.seed, r.flags)))


if __name__ == "__main__":
    main()
