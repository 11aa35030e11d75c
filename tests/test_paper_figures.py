"""`bash benchmark.sh paper --figure NAME`: every figure's plan (run count, flags of some runs against the
paper's settings), --list with the paper's GPU hours, the options (--seeds, --total-env-steps, --envs,
--depths, --datasets, --slurm) and refusals; each figure's summary (table beside the paper's numbers,
missing runs named, figure_{NAME}.png) from tiny fake results; and one tiny figure on reacher run for
real, left half-finished, and resumed with --resume (the finished run kept)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import benchmark_summary as S  # noqa: E402
import paper_figures as F  # noqa: E402

with open(os.path.join(ROOT, "tools", "paper_numbers.json")) as f:
    NUMBERS = json.load(f)
# tests/test_slurm.py's tiny reacher run (the same programs, 12 training steps an epoch: the JAX cache of the
# session has them), 4 epochs instead of 20
TINY = ("--num-envs 4 --episode-length 20 --num-eval-envs 2 --num-epochs 4 --unroll-length 10 --num-sgd-steps 2 "
        "--batch-size 16 --max-replay-size 60 --min-replay-size 20 --width 16 --checkpoint-every 1")
STEPS = str(80 + 4 * 12 * 40)


def _bash(*args, cwd=ROOT, timeout=120):
    return subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=timeout, cwd=cwd)


def _plan(out: str) -> dict:
    """{label: the command line} of a --dry-run's plan."""
    runs = {}
    for line in out.splitlines():
        if line.startswith("  [") and ": " in line:
            label, cmd = line.split("] ", 1)[1].split(": ", 1)
            runs[label] = cmd
    return runs


# figure -> (runs at the paper's settings, {label: flags its command line has})
PLANS = {
    "main_table": (10 * 2 * 5, {"crl_depth__humanoid_big_maze__d64__s5": "crl_depth.py --env-id humanoid_big_maze "
                                "--depth 64 --seed 5 --total-env-steps 400000000",
                                "crl_depth__arm_binpick_hard__d4__s1": "--depth 4 --seed 1 --total-env-steps 100000000"}),
    "depth_sweep": (3 * 5 * 3, {"crl_depth__ant_big_maze__d8__s3": "--env-id ant_big_maze --depth 8 --seed 3 "
                                "--total-env-steps 100000000",
                                "crl_depth__arm_push_easy__d64__s1": "--env-id arm_push_easy --depth 64 --seed 1"}),
    "layer_norm": (2 * 4 * 3, {"crl_depth__humanoid__d16__noln__s2": "--env-id humanoid --depth 16 --seed 2 "
                               "--total-env-steps 100000000 --no-layer-norm",
                               "crl_depth__humanoid__d64__s3": "--depth 64 --seed 3 --total-env-steps 100000000"}),
    "activation": (2 * 4 * 3, {"crl_depth__humanoid__d32__relu__s1": "--depth 32 --seed 1 --total-env-steps "
                               "100000000 --activation relu"}),
    "residual": (2 * 4 * 3, {"crl_depth__humanoid__d4__nores__s1": "--depth 4 --seed 1 --total-env-steps 100000000 "
                             "--no-residual"}),
    "width_vs_depth": (3 * 3 * (4 + 5 - 1), {"crl_depth__humanoid__d4__w2048__s1": "--env-id humanoid --depth 4 --seed 1 "
                                             "--total-env-steps 100000000 --width 2048",
                                             "crl_depth__arm_push_easy__d64__s2": "--depth 64 --seed 2"}),
    "batch_size": (2 * 5 * 3, {"crl_depth__humanoid__d64__b2048__s3": "--depth 64 --seed 3 --total-env-steps 100000000 "
                               "--batch-size 2048 --num-sgd-steps 200",
                               "crl_depth__humanoid__d4__b128__s1": "--depth 4 --seed 1 --total-env-steps 100000000 "
                               "--batch-size 128"}),
    "actor_critic_depth": (4 * 4 * 3, {"crl_depth__humanoid__d64__actor4__s2": "--env-id humanoid --depth 64 "
                                       "--actor-depth 4 --seed 2 --total-env-steps 100000000"}),
    "limit_test": (9 * 3, {"crl_depth__humanoid_u_maze__d1024__actor512__120M__s3": "--env-id humanoid_u_maze --depth 1024 "
                           "--actor-depth 512 --seed 3 --total-env-steps 120000000",
                           "crl_depth__humanoid_u_maze__d4__120M__s1": "--depth 4 --seed 1 --total-env-steps 120000000"}),
    "collector_learner": (3 * 2 * 3, {"crl_collector_learner__arm_push_easy__c4__s3": "crl_collector_learner.py --env-id "
                                      "arm_push_easy --collector-depth 4 --deep-learner-depth 32 --shallow-learner-depth 4 "
                                      "--seed 3 --total-env-steps 100000000",
                                      "crl_collector_learner__humanoid__c32__s1": "--collector-depth 32"}),
    "offline": (3 + 3 * 5 * 3, {"crl_depth__humanoid_u_maze__d4__s1": "crl_depth.py --env-id humanoid_u_maze --depth 4 "
                                "--seed 1 --total-env-steps 400000000 --save-buffer",
                                "crl_depth_offline__humanoid_u_maze__d64__s3": "crl_depth_offline.py --dataset "
                                "@buffer:crl_depth__humanoid_u_maze__d4__s1 --depth 64 --seed 3"}),
}


@pytest.mark.parametrize("figure", list(PLANS))
def test_figure_dry_run_plan(figure, tmp_path):
    proc = _bash("paper", "--figure", figure, "--dry-run", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    count, flags = PLANS[figure]
    runs = _plan(proc.stdout)
    assert f"plan: {count} runs" in proc.stdout and len(runs) == count
    assert f"results: {tmp_path}/paper-{figure}__" in proc.stdout and os.listdir(tmp_path) == []
    for label, part in flags.items():
        assert part + " " in runs[label] + " ", (label, runs[label])
    budgets = NUMBERS["env_steps"]["values"]
    if figure not in ("limit_test",):  # every run at its env's budget (the limit test: about 120M)
        for label, cmd in runs.items():
            env = cmd.split("--env-id ")[1].split()[0] if "--env-id" in cmd else None
            assert env is None or f"--total-env-steps {budgets[env]} " in cmd + " ", cmd


def test_figure_all_shares_runs_and_saves_the_buffers():
    """`all`: the runs of every figure, a run two figures share once; the main table's depth-4 seed-1 run
    of an offline env is also the run that saves that env's dataset."""
    runs = F.unique(F.build("all", F.Options(), NUMBERS))
    each = {name: F.unique(F.build(name, F.Options(), NUMBERS)) for name in F.FIGURES}
    labels = [r.label for r in runs]
    assert len(labels) == len(set(labels)) == len({r.label for rs in each.values() for r in rs})
    assert len(runs) < sum(len(rs) for rs in each.values())  # shared runs: humanoid depth 4..64 in six figures
    shared = next(r for r in runs if r.label == "crl_depth__ant_big_maze__d4__s1")
    assert shared.flags.endswith("--save-buffer") and shared.figure == "main_table"
    assert [r.label for r in runs].index(shared.label) < labels.index("crl_depth_offline__ant_big_maze__d4__s1")


def test_list_prints_every_result_with_runs_and_the_papers_gpu_hours():
    proc = _bash("paper", "--list")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert list(lines) == [*F.FIGURES, "all"]
    for figure, (count, _) in PLANS.items():
        assert f" {count} runs " in lines[figure], lines[figure]
    clock, limit = NUMBERS["wall_clock_hours"], NUMBERS["limit_test"]
    sweep = 3 * (sum(clock["values"]["humanoid"]) + sum(clock["values"]["ant_big_maze"]))  # arm_push_easy: no data
    assert f"paper GPU hours {sweep:,.1f} (30 of 45 runs in the paper's wall-clock data)" in lines["depth_sweep"]
    assert f"paper GPU hours {3 * sum(limit['hours']):,.1f} (27 of 27 runs" in lines["limit_test"]
    assert "none of the 18 runs" in lines["collector_learner"]
    proc = _bash("paper", "--list", "--seeds", "1")
    assert " 9 runs " in proc.stdout.splitlines()[list(F.FIGURES).index("limit_test")]


def test_figure_options_replace_the_papers(tmp_path):
    proc = _bash("paper", "--figure", "layer_norm", "--dry-run", "--seeds", "7", "--depths", "8",
                 "--total-env-steps", "5000", "--extra", "--num-envs 8", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    runs = _plan(proc.stdout)
    assert list(runs) == ["crl_depth__humanoid__d8__s7", "crl_depth__humanoid__d8__noln__s7"]
    assert runs["crl_depth__humanoid__d8__noln__s7"].endswith(
        "--env-id humanoid --depth 8 --seed 7 --total-env-steps 5000 --no-layer-norm --num-envs 8")
    proc = _bash("paper", "--figure", "limit_test", "--dry-run", "--total-env-steps", "5000", "--depths", "4", "1024",
                 "--seeds", "1", "--results-root", str(tmp_path))  # --total-env-steps: no 120M suffix
    assert list(_plan(proc.stdout)) == ["crl_depth__humanoid_u_maze__d4__s1", "crl_depth__humanoid_u_maze__d1024__actor512__s1"]
    data = tmp_path / "antmaze-giant-navigate-v0.npz"
    data.write_bytes(b"")
    proc = _bash("paper", "--figure", "offline", "--dry-run", "--datasets", data.name, "--depths", "4", "64", "--seeds", "1",
                 "--results-root", str(tmp_path / "r"), cwd=str(tmp_path))  # relative to where benchmark.sh is called
    assert proc.returncode == 0, proc.stderr
    runs = _plan(proc.stdout)
    assert list(runs) == [f"crl_depth_offline__antmaze-giant-navigate-v0__d{d}__s1" for d in (4, 64)]
    assert f"--dataset {data} --depth 64 --seed 1" in runs["crl_depth_offline__antmaze-giant-navigate-v0__d64__s1"]


def test_figure_refusals(tmp_path):
    for args, message in [
        (("--figure", "bogus"), "unknown figure 'bogus' (one of: main_table, "),
        (("--figure", "depth_sweep", "--envs", "reacher"), "the paper gives no env-step budget for 'reacher'"),
        (("--figure", "depth_sweep", "--datasets", "x.npz"), "--datasets: no such file"),
        (("--figure", "main_table", "--depths", "6"), "depths must be positive multiples of 4"),
        (("--resume", str(tmp_path / "none")), "not a results directory of benchmark.sh paper (no plan.tsv)"),
        (("--figure", "main_table", "--slurm", "--resume", str(tmp_path)), "continues with python tools/slurm.py resubmit"),
    ]:
        proc = _bash("paper", *args, "--results-root", str(tmp_path))
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and os.listdir(tmp_path) == []
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    proc = _bash("paper", "--figure", "main_table", "--datasets", str(data), "--results-root", str(tmp_path / "r"))
    assert proc.returncode == 2 and "--datasets needs --figure offline (or all)" in proc.stderr
    proc = _bash("quick", "--figure", "main_table")
    assert proc.returncode == 2 and "--figure does not apply to the quick suite" in proc.stderr


def test_figure_slurm_dry_run(tmp_path):
    """--slurm: one array task per run; the offline figure's runs on saved buffers wait for the runs that
    save them (a second array, --dependency=afterok)."""
    proc = _bash("paper", "--figure", "activation", "--slurm", "--dry-run", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --array=1-24\n" in proc.stdout and "submitted as" not in proc.stdout
    proc = _bash("paper", "--figure", "offline", "--slurm", "--dry-run", "--envs", "ant_big_maze", "humanoid_u_maze",
                 "--depths", "4", "16", "--seeds", "1", "--max-parallel", "3", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "plan: 6 runs" in proc.stdout and "#SBATCH --array=1-6%3\n" in proc.stdout
    assert ("submitted as sbatch --array=1,2%3, then sbatch --array=3,4,5,6%3 --dependency=afterok:<job of the first>"
            in proc.stdout)
    assert '[[ ${args[$k]} == @buffer:* ]]' in proc.stdout and os.listdir(tmp_path) == []


# --- each figure's summary from fake results ------------------------------------------------------------
def _args_of(script: str, env: str, flags: str) -> dict:
    """args.json of a run from its plan flags (what the script would write)."""
    words, args = flags.split(), {"exp_name": script.removesuffix(".py"), "env_id": env, "episode_length": 1000,
                                  "layer_norm": True, "activation": "swish", "residual": True, "width": 256,
                                  "batch_size": 512}
    for i, w in enumerate(words):
        if w.startswith("--no-"):
            args[w[5:].replace("-", "_")] = False
        elif w.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
            v = words[i + 1]
            args[w[2:].replace("-", "_")] = int(v) if v.isdigit() else v
    return args


def _fake_results(tmp_path, figure: str, seeds=("1", "2"), leave_out=1) -> tuple:
    """A results directory as benchmark.sh leaves it for `figure` at --seeds 1 2, every run done but the
    last `leave_out`; run i scores 10 * i + seed at every evaluation. Returns (dir, plan, scores)."""
    tool = [sys.executable, os.path.join(ROOT, "tools", "paper_figures.py"), "plan", figure, "--seeds", *seeds]
    plan = [line.split("\t") for line in subprocess.run(tool, capture_output=True, text=True, check=True).stdout.splitlines()]
    cells = subprocess.run([*tool, "--cells"], capture_output=True, text=True, check=True).stdout
    res = tmp_path / figure
    (res / "logs").mkdir(parents=True)
    (res / "figures.tsv").write_text(cells)
    rows, scores = ["label\tscript\tenv\tdepth\tseed\tstatus\twall_s\tlog"], {}
    for i, (label, script, env, depth, seed, flags) in enumerate(plan[: len(plan) - leave_out]):
        args = _args_of(script, env, flags)
        run_dir = res / "runs" / label / f"{env}__x__{seed}__0"
        run_dir.mkdir(parents=True)
        (run_dir / "args.json").write_text(json.dumps(args))
        scores[label] = 10.0 * i + int(seed)
        keys = (["collector", "deep_learner", "shallow_learner"] if script == "crl_collector_learner.py" else [""])
        with open(run_dir / "metrics.jsonl", "w") as f:
            for epoch in range(4):
                rec = {"epoch": epoch, "env_steps": 1000 * epoch}
                for k, agent in enumerate(keys):
                    rec[f"{agent}/eval/time_at_goal" if agent else "eval/time_at_goal"] = scores[label] + 100 * k
                f.write(json.dumps(rec) + "\n")
        width, depth_ = args.get("width", 256), int(depth)
        (res / "logs" / f"{label}.log").write_text(f"run x | width {width} | {1000 * width + depth_:,} params | ...\n")
        rows.append(f"{label}\t{script.removesuffix('.py')}\t{env}\t{depth}\t{seed}\t0\t7200\t-")
    (res / "runs.tsv").write_text("\n".join(rows) + "\n")
    return res, plan, scores


def _row(text: str, *cells) -> str:
    prefix = "| " + " | ".join(str(c) for c in cells) + " |"
    found = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


@pytest.mark.parametrize("figure", list(PLANS))
def test_figure_summary_from_fake_results(figure, tmp_path):
    res, plan, scores = _fake_results(tmp_path, figure)
    assert S.summarize(str(res)) == 0
    text = (res / "summary.md").read_text()
    n = len(plan)
    assert f"### Figure `{figure}`" in text and f"{n - 1} of {n} runs done (the missing runs: last column)" in text
    assert (res / f"figure_{figure}.png").stat().st_size > 5000
    missing = plan[-1][0]
    assert missing in [c.strip() for line in text.splitlines() if line.startswith("|") for c in line.split("|")]
    # one point of the figure, by hand: the first setting run with seeds 1 and 2
    settings = {}
    for label in scores:
        settings.setdefault(label.rsplit("__s", 1)[0], []).append(scores[label])
    mean, se = S.mean_se(next(v for v in settings.values() if len(v) == 2))
    assert f"| 2/2 | {S.fmt_mean_se(mean, se)} |" in text


def test_figure_summary_puts_the_papers_numbers_beside_ours(tmp_path):
    res, _, scores = _fake_results(tmp_path, "main_table", seeds=("1", "2"), leave_out=0)
    S.summarize(str(res))
    text = (res / "summary.md").read_text()
    for env, by_depth in NUMBERS["main_table"]["values"].items():
        for depth, (mean, se) in by_depth.items():
            ours = S.mean_se([scores[f"crl_depth__{env}__d{depth}__s{s}"] for s in (1, 2)])
            hours = S.load_paper()["hours"].get(env, {}).get(int(depth))
            row = _row(text, env, f"depth {depth}", depth, "2/2", S.fmt_mean_se(*ours), 1000,
                       S.fmt_mean_se(mean, se, 2 if mean < 1 else 1), "2.00", S.fmt(hours, 2))
            assert row.endswith("| — |")  # nothing missing
    res, _, scores = _fake_results(tmp_path, "layer_norm", leave_out=0)
    S.summarize(str(res))
    text = (res / "summary.md").read_text()
    values = NUMBERS["layer_norm"]["values"]
    for i, depth in enumerate(NUMBERS["layer_norm"]["depths"]):
        for series, suffix in (("with LayerNorm", ""), ("without LayerNorm", "__noln")):
            ours = S.mean_se([scores[f"crl_depth__humanoid__d{depth}{suffix}__s{s}"] for s in (1, 2)])
            _row(text, "humanoid", series, depth, "2/2", S.fmt_mean_se(*ours), 1000, f"{values[series][i]:.1f}")
    # the generic results table tells the ablation's networks apart, the paper's number only beside the paper's
    assert "| crl_depth | humanoid | depth 16, no LayerNorm | 2 |" in text
    assert _row(text, "crl_depth", "humanoid", "depth 16, no LayerNorm").endswith("| — |")
    assert _row(text, "crl_depth", "humanoid", "depth 16, LayerNorm").endswith("| 454.0 |")  # the depth sweep's


def test_depth_sweep_summary_has_both_of_the_papers_sweeps(tmp_path):
    res, _, scores = _fake_results(tmp_path, "depth_sweep", leave_out=0)
    S.summarize(str(res))
    text = (res / "summary.md").read_text()
    sweep, appendix = NUMBERS["depth_sweep"], NUMBERS["depth_sweep_appendix"]
    for env, values in sweep["values"].items():
        for depth, value in zip(sweep["depths"], values):
            ours = S.mean_se([scores[f"crl_depth__{env}__d{depth}__s{s}"] for s in (1, 2)])
            _row(text, env, "depth", depth, "2/2", S.fmt_mean_se(*ours), 1000, f"{value:.1f}")
    assert "The paper's appendix sweep, depths 4/8/16/32/64: humanoid " + "/".join(
        f"{v:g}" for v in appendix["values"]["humanoid"]) in text


def test_width_vs_depth_summary_has_the_logged_parameter_counts(tmp_path):
    res, _, _ = _fake_results(tmp_path, "width_vs_depth", leave_out=0)
    S.summarize(str(res))
    text = (res / "summary.md").read_text()
    _row(text, "humanoid", "wider (depth 4)", 2048, f"{1000 * 2048 + 4:,}", "2/2")
    _row(text, "humanoid", "deeper (width 256)", 64, f"{1000 * 256 + 64:,}", "2/2")


# --- one tiny figure on reacher, for real ------------------------------------------------------------------
@pytest.mark.slow  # a figure's reacher runs
def test_tiny_reacher_figure_end_to_end_and_resume(tmp_path):
    """depth_sweep on reacher at depths 4 and 8, one seed, tests/test_slurm.py's tiny settings, left
    half-finished: the depth-4 run done (fake metrics), the depth-8 run not started. Its summary names the
    missing run; --resume keeps the finished run, trains the other for real and summarises both; a
    --resume with other options is refused."""
    args = ("paper", "--figure", "depth_sweep", "--envs", "reacher", "--depths", "4", "8", "--seeds", "1",
            "--total-env-steps", STEPS, "--extra", TINY)
    res = tmp_path / "paper-depth_sweep__half"
    tool = [sys.executable, os.path.join(ROOT, "tools", "paper_figures.py"), "plan", "depth_sweep", "--envs", "reacher",
            "--depths", "4", "8", "--seeds", "1", "--total-env-steps", STEPS, "--extra", TINY]
    plan = subprocess.run(tool, capture_output=True, text=True, check=True).stdout
    (res / "logs").mkdir(parents=True)
    (res / "plan.tsv").write_text(plan)  # as benchmark.sh writes them
    (res / "figures.tsv").write_text(subprocess.run([*tool, "--cells"], capture_output=True, text=True, check=True).stdout)
    first = res / "runs" / "crl_depth__reacher__d4__s1" / "reacher__crl_depth__1__0"
    first.mkdir(parents=True)
    (first / "args.json").write_text(json.dumps({"exp_name": "crl_depth", "env_id": "reacher", "depth": 4, "seed": 1,
                                                 "episode_length": 20, "width": 16, "batch_size": 16}))
    (first / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "env_steps": 80 + 480 * e,
                                                             "eval/time_at_goal": 3.0 * e}) + "\n" for e in range(5)))
    (res / "runs.tsv").write_text("label\tscript\tenv\tdepth\tseed\tstatus\twall_s\tlog\n"
                                  "crl_depth__reacher__d4__s1\tcrl_depth\treacher\t4\t1\t0\t30\t-\n")
    assert S.summarize(str(res)) == 0
    text = (res / "summary.md").read_text()
    assert "1 of 2 runs done" in text
    assert _row(text, "reacher", "depth", 4, "1/1", "7.5").endswith("| — |")  # epochs 1-4: (3 + 6 + 9 + 12) / 4
    assert _row(text, "reacher", "depth", 8, "0/1", "—").endswith("| crl_depth__reacher__d8__s1 |")

    proc = _bash(*args, "--resume", str(res), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "[1/2] crl_depth__reacher__d4__s1" in out and "kept: finished earlier (runs.tsv)" in out
    assert "[2/2] crl_depth__reacher__d8__s1" in out and "ran 1 of 2 runs, 0 failed" in out
    assert (first / "metrics.jsonl").read_text().count("\n") == 5  # the finished run untouched
    (second,) = (res / "runs" / "crl_depth__reacher__d8__s1").iterdir()
    assert [json.loads(line)["epoch"] for line in (second / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3, 4]
    text = (res / "summary.md").read_text()
    assert "2 of 2 runs done." in text and "No problems" in text
    cells = [c.strip() for c in _row(text, "reacher", "depth", 8, "1/1").split("|")]
    assert cells[6] == "20" and cells[7] == "—" and float(cells[8]) >= 0 and cells[10] == "—"  # out of 20, our hours
    # (a number of hours, to two decimals: 0.00 for a run of under 18 s)
    assert (res / "figure_depth_sweep.png").stat().st_size > 5000
    assert "resumed: " in (res / "meta.txt").read_text()
    proc = _bash(*args[:-2], "--extra", "--num-envs 8", "--resume", str(res))  # another plan: refused, nothing run
    assert proc.returncode == 2 and "its plan.tsv is not this plan" in proc.stderr


def test_every_planned_run_passes_its_scripts_flag_checks():
    """Each run of `--figure all` at the paper's settings is one its script accepts (parsed and checked as its
    command line would be; an offline run's dataset, made by an earlier run, is not read)."""
    import tyro

    sys.path.insert(0, ROOT)
    import crl_collector_learner
    import crl_depth

    scripts = {"crl_depth.py": crl_depth, "crl_collector_learner.py": crl_collector_learner}
    runs = [r for r in F.unique(F.build("all", F.Options(), NUMBERS)) if r.script in scripts]
    assert len(runs) > 200
    for run in runs:
        script = scripts[run.script]
        args = tyro.cli(script.Args, args=run.flags.split())
        assert script.validate_args(args) is None, (run.label, run.flags, script.validate_args(args))

