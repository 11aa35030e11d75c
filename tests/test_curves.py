"""The paper's learning curves (tools/paper_curves/, tools/curves.py): the files are the published bytes (their
SHA-256 against the upstream files' and against their README) and the loader reads them as they are; the env-step
axis, the interpolation, z, the verdicts and the depth ordering (not compared within the paper's own noise) against
plain hand computations; which runs have a curve to be set against; `benchmark.sh compare` on fake runs (its table by
hand, runs of different settings kept apart and named in the legend, the PNG, refusals); and the summary's section
and paper band from a fake results directory."""

import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import benchmark_summary as S  # noqa: E402
import curves as C  # noqa: E402

CURVES = os.path.join(ROOT, "tools", "paper_curves")
FILES = ("fig1_main.json", "fig7_batch_size.json", "fig12_scaling_limits.json")
with open(os.path.join(ROOT, "tools", "paper_numbers.json")) as f:
    BUDGETS = json.load(f)["env_steps"]["values"]


def _json(name: str) -> dict:
    with open(os.path.join(CURVES, name)) as f:
        return json.load(f)


def paper_x(budget: int, num_epochs: int, k: int) -> int:
    """By hand: the paper's code's env steps after epoch k, its prefill counted (17 unrolls of 512 x 62)."""
    prefill = math.ceil(1000 / 62) * 62 * 512
    per_epoch = (budget - 1000 * 512) // (num_epochs * 62 * 512) * 62 * 512
    return prefill + k * per_epoch


# SHA-256 of the authors' files, results_data/*.json of commit 86c1f08c10d565eddabfcd00302c7b82c5934476 of
# scaling-crl (computed from the upstream bytes, not from the copies here)
UPSTREAM_SHA256 = {
    "fig1_main.json": "3ae1ae1688748d311ebbcaed24639d7c9a1c2f0b1b9f9e8f69076b7bdf00a547",
    "fig7_batch_size.json": "e8deb9b246f4bb20a3c3fce484315288826f08a9638ce7996a62a44612183a5f",
    "fig12_scaling_limits.json": "1812d774bd3b31c9e51adac70aa0e6cb5db389a0bdea3ef53dc8cd20e486b089",
}


def test_files_are_the_published_bytes_with_their_source():
    readme = open(os.path.join(CURVES, "README.md")).read()
    assert "86c1f08c10d565eddabfcd00302c7b82c5934476" in readme and "arXiv 2503.14858" in readme
    listed = dict(re.findall(r"^\| `([\w.]+\.json)` \| `([0-9a-f]{64})` \|$", readme, re.M))
    assert listed == UPSTREAM_SHA256  # the README's sums are the upstream files'
    assert sorted(f for f in os.listdir(CURVES) if f.endswith(".json")) == sorted(FILES)
    for name in FILES:
        assert f"results_data/{name}" in readme
        digest = hashlib.sha256(open(os.path.join(CURVES, name), "rb").read()).hexdigest()
        assert digest == UPSTREAM_SHA256[name] == listed[name], name


def test_loader_reads_every_curve_on_the_papers_env_step_axis():
    curves = C.load_curves()
    fig1, fig7, fig12 = _json(FILES[0]), _json(FILES[1]), _json(FILES[2])
    for env, c in fig1.items():
        for depth in c["depths"]:
            curve = C.find_curve(curves, env, depth)
            assert curve["source"].startswith("fig1_main.json")
            assert curve["means"] == c["depth_mean"][str(depth)] and curve["ses"] == c["depth_std_error"][str(depth)]
            n = c["num_epochs"]
            assert len(curve["xs"]) == n and curve["xs"][0] == paper_x(BUDGETS[env], n, 1)
            assert curve["xs"][-1] == paper_x(BUDGETS[env], n, n)
    assert paper_x(BUDGETS["humanoid"], 100, 10) == 10_380_288  # (the value 10 of every env: 984,064 env steps an epoch)
    assert C.find_curve(curves, "ant_hardest_maze", 8)["xs"][9] == 10_380_288
    # the batch-size figure: humanoid at other batch sizes; batch 512 is the main figure's
    for depth_key, by_batch in fig7.items():
        for batch_key, c in by_batch.items():
            depth, batch = int(depth_key.split("_")[1]), int(batch_key.split("_")[-1])
            found = [x for x in curves if x["source"] == f"fig7_batch_size.json ({depth_key}, {batch_key})"]
            assert len(found) == 1 and found[0]["means"] == c["mean"] and found[0]["xs"][0] == paper_x(BUDGETS["humanoid"], 100, 1)
            if batch != 512:
                assert C.find_curve(curves, "humanoid", depth, batch) is found[0]
    assert C.find_curve(curves, "humanoid", 4, 512)["source"].startswith("fig1_main.json")
    # the scaling limits: listed, no env-step axis, never set against
    limits = [x for x in curves if x["source"].startswith("fig12")]
    assert len(limits) == sum(len(c["depths"]) for c in fig12.values()) and all(x["xs"] is None for x in limits)
    assert C.find_curve(curves, "humanoid_u_maze", 1024) is None and C.find_curve(curves, "humanoid_u_maze", 64) is not None


def test_value_at_env_steps_by_hand():
    curve = C.make_curve("e", 4, 512, "s", [1.0, 3.0, 2.0], [0.5, 1.0, 0.2], 3_000_000)
    x1, x2, x3 = (paper_x(3_000_000, 3, k) for k in (1, 2, 3))
    assert curve["xs"] == [x1, x2, x3]
    assert C.at(curve, x2) == (3.0, 1.0)  # on an evaluation: its value
    x = x1 + (x2 - x1) / 4  # a quarter of the way from the first to the second
    mean, se = C.at(curve, x)
    assert mean == pytest.approx(1.0 + 0.25 * (3.0 - 1.0)) and se == pytest.approx(0.5 + 0.25 * (1.0 - 0.5))
    assert C.at(curve, x1 - 1) is None and C.at(curve, x3 + 1) is None  # before the first, after the last
    assert C.at({**curve, "xs": None}, x2) is None


def test_z_and_mean_se_by_hand():
    values = [2.0, 4.0, 9.0]
    mean, se = C.mean_se(values)
    by_hand_se = math.sqrt(sum((v - 5.0) ** 2 for v in values) / 2) / math.sqrt(3)
    assert mean == 5.0 and se == pytest.approx(by_hand_se)
    assert C.z_score(5.0, by_hand_se, 3.0, 1.5) == pytest.approx(2.0 / math.sqrt(by_hand_se ** 2 + 1.5 ** 2))
    assert C.z_score(1.0, None, 3.0, 0.5) == pytest.approx(-4.0)  # one seed: our error taken as 0
    assert C.z_score(0.0, 0.0, 0.0, 0.0) == 0.0 and C.z_score(1.0, 0.0, 0.0, 0.0) == math.inf
    assert C.mean_se([7.0]) == (7.0, None)


def test_verdict_and_depth_ordering_by_hand():
    curve = C.make_curve("e", 4, 512, "s", [10.0, 20.0, 30.0], [1.0, 2.0, 1.0], 3_000_000)
    xs = curve["xs"]
    rows = C.compare_rows([(0, 100, [0.0, 1.0]), (1, xs[0], [10.0, 12.0]), (2, xs[1], [40.0, 42.0]),
                           (3, xs[2], [29.0, 31.0])], curve)
    assert rows[0]["paper"] is None and rows[0]["z"] is None  # the untrained evaluation: no paper's value
    # epoch 2: ours 41 ± 1, the paper's 20 ± 2: z = 21 / sqrt(1 + 4)
    assert rows[2]["mean"] == 41.0 and rows[2]["se"] == pytest.approx(1.0) and rows[2]["z"] == pytest.approx(21 / math.sqrt(5))
    v = C.verdict(rows, 3.0)
    assert (v["compared"], v["within"], v["max_at_epoch"], v["inside"]) == (3, 2, 2, False)
    assert v["in_paper_band"] == 2  # epoch 1 (11 in 10 ± 1) and epoch 3 (30 in 30 ± 1)
    assert C.verdict(rows, 10.0)["inside"] is True and C.verdict(rows[:1])["inside"] is None
    row = lambda mean, paper: {"epoch": 5, "mean": mean, "paper": (paper, 1.0)}  # noqa: E731
    o = C.ordering({4: row(30.0, 73.0), 8: row(50.0, 119.0)})
    assert o["ours"] == o["paper"] == [[8], [4]] and o["match"]
    o = C.ordering({4: row(0.0, 73.0), 8: row(0.0, 119.0)})  # a tie is not the paper's order
    assert o["ours"] == [[4, 8]] and not o["match"] and "depth 4 = depth 8" in C.ordering_line("e", o)
    assert C.ordering({4: row(1.0, 2.0)}) is None
    # the paper's gap between adjacent depths in combined s.e.: (119 - 73) / sqrt(1 + 1) = 32.5; under 2: not compared
    assert C.ordering({4: row(30.0, 73.0), 8: row(50.0, 119.0)})["paper_gap_z"] == pytest.approx(46 / math.sqrt(2))
    row = lambda mean, paper, se: {"epoch": 3, "mean": mean, "paper": (paper, se)}  # noqa: E731
    o = C.ordering({4: row(9.0, 10.0, 1.0), 8: row(1.0, 12.0, 1.0), 16: row(5.0, 30.0, 2.0)})
    # the paper's order 16 > 8 > 4: gaps (30 - 12) / sqrt(4 + 1) = 8.0 and (12 - 10) / sqrt(1 + 1) = 1.41: the smaller
    assert o["paper_gap_z"] == pytest.approx(2 / math.sqrt(2)) and o["compared"] is False and not o["match"]
    assert C.ordering_line("e", o).endswith(": not compared: the paper's own gap there is 1.4 combined s.e., under 2 "
                                            "(its order is within its own noise)")
    o = C.ordering({4: row(9.0, 10.0, 0.5), 8: row(1.0, 12.0, 0.5)})  # 2 / sqrt(0.5) = 2.83: compared, NOT the same
    assert o["compared"] and C.ordering_line("e", o).endswith(": NOT the same")


def test_which_runs_have_a_curve():
    curves = C.load_curves()
    plain = {"exp_name": "crl_depth", "env_id": "humanoid", "depth": 16}
    curve, note = C.reference(plain, curves)
    assert curve["source"] == "fig1_main.json (humanoid, depth 16)" and note == ""
    curve, note = C.reference({**plain, "num_envs": 64, "batch_size": 1024, "depth": 8}, curves)
    assert curve["source"] == "fig7_batch_size.json (depth_8, batch_size_1024)" and note == \
        "settings that differ from the paper's: num_envs 64 (paper 512)"
    for args, why in [({**plain, "layer_norm": False}, "another network than the paper's curves: layer_norm False"),
                      ({**plain, "actor_depth": 4}, "actor depth 4 and critic depth 16"),
                      ({**plain, "env_id": "reacher"}, "the paper published no curve of reacher at depth 16"),
                      ({**plain, "batch_size": 256, "env_id": "ant_big_maze"}, "no curve of ant_big_maze at depth 16 and batch size 256"),
                      ({**plain, "exp_name": "crl_collector_learner"}, "a run of crl_collector_learner.py")]:
        curve, note = C.reference(args, curves)
        assert curve is None and why in note, (args, note)


def _run(root, name: str, args: dict, seeds, values, steps=lambda e: paper_x(100_000_000, 100, e)):
    """A run directory as crl_depth.py writes it: one metrics line per seed and epoch (values[seed][epoch])."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps({"exp_name": "crl_depth", "seed": seeds[0], "num_seeds": len(seeds), **args}))
    with open(run_dir / "metrics.jsonl", "w") as f:
        for epoch in range(len(values[seeds[0]])):
            for s in seeds:
                f.write(json.dumps({"epoch": epoch, "seed": s, "env_steps": steps(epoch),
                                    "eval/time_at_goal": values[s][epoch]}) + "\n")
    return run_dir


def _compare(*args, cwd=ROOT):
    return subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), "compare", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=120, cwd=cwd)


def test_compare_a_run_against_the_papers_curve(tmp_path):
    """Two seeds in one process and a third run of humanoid depth 4 pooled; a depth-8 run beside them; run
    directories given relative to where benchmark.sh is called."""
    values = {1: [0.0, 0.5, 1.0, 2.0], 2: [0.1, 0.3, 1.4, 1.5], 3: [0.0, 0.2, 0.9, 2.5]}
    _run(tmp_path, "d4a", {"env_id": "humanoid", "depth": 4}, [1, 2], values)
    _run(tmp_path, "d4b", {"env_id": "humanoid", "depth": 4}, [3], values)
    _run(tmp_path, "d8", {"env_id": "humanoid", "depth": 8}, [1], {1: [0.0, 9.0, 9.0, 9.0]})
    proc = _compare("d4a", "d4b", "d8", "--out", "cmp.png", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    fig1 = _json("fig1_main.json")["humanoid"]
    out = proc.stdout
    for epoch in (1, 2, 3):
        ours = [values[s][epoch] for s in (1, 2, 3)]
        mean, se = statistics.mean(ours), statistics.stdev(ours) / math.sqrt(3)
        pm, ps = fig1["depth_mean"]["4"][epoch - 1], fig1["depth_std_error"]["4"][epoch - 1]
        z = (mean - pm) / math.sqrt(se ** 2 + ps ** 2)
        row = (f"| {epoch} | {paper_x(100_000_000, 100, epoch):,} | {mean:.2f} ± {se:.2f} | "
               + " / ".join(f"{v:.2f}" for v in ours) + f" | {C.fmt_mean_se(pm, ps)} | {z:+.1f} |")
        assert row in out, row
    zs = [abs((statistics.mean([values[s][e] for s in (1, 2, 3)]) - fig1["depth_mean"]["4"][e - 1]) /
              math.sqrt((statistics.stdev([values[s][e] for s in (1, 2, 3)]) / math.sqrt(3)) ** 2
                        + fig1["depth_std_error"]["4"][e - 1] ** 2)) for e in (1, 2, 3)]
    verdict = "inside" if max(zs) <= 3 else "OUTSIDE"
    assert f"humanoid, depth 4: {verdict} the paper's band: |ours - paper| <= 3 combined s.e. at " \
           f"{sum(z <= 3 for z in zs)} of 3 evaluations" in out
    # at epoch 3: ours depth 8 (9.0) above depth 4; the paper's order at its epoch 3, compared if its own gap is at
    # least 2 combined s.e.
    m4, m8 = fig1["depth_mean"]["4"][2], fig1["depth_mean"]["8"][2]
    s4, s8 = fig1["depth_std_error"]["4"][2], fig1["depth_std_error"]["8"][2]
    gap = abs(m8 - m4) / math.sqrt(s4 ** 2 + s8 ** 2)
    paper_order = "depth 8 > depth 4" if m8 > m4 else "depth 4 > depth 8"
    end = (f"not compared: the paper's own gap there is {gap:.1f} combined s.e., under 2" if gap < 2 else
           "the same" if m8 > m4 else "NOT the same")
    assert re.search(r"humanoid: depth ordering at epoch 3: ours depth 8 > depth 4 \(.*\); the paper's "
                     + paper_order + r" \(.*\): " + re.escape(end), out), out
    assert (tmp_path / "cmp.png").stat().st_size > 5000 and "plot: cmp.png" in out
    # the default plot: in the first run directory
    proc = _compare(str(tmp_path / "d8"))
    assert proc.returncode == 0 and (tmp_path / "d8" / "paper_curve.png").exists()


def test_compare_off_the_papers_evaluations_interpolates(tmp_path):
    """A run whose evaluations fall between the paper's (another epoch length): the paper's value interpolated."""
    steps = lambda e: 1_000_000 + 1_500_000 * e  # noqa: E731
    _run(tmp_path, "r", {"env_id": "ant_hardest_maze", "depth": 8, "num_envs": 256}, [1], {1: [0.0, 20.0, 40.0]}, steps)
    proc = _compare(str(tmp_path / "r"), "--out", str(tmp_path / "r.png"))
    assert proc.returncode == 0, proc.stderr
    c = _json("fig1_main.json")["ant_hardest_maze"]
    m, s = c["depth_mean"]["8"], c["depth_std_error"]["8"]
    x, x1, x2 = steps(1), paper_x(200_000_000, 200, 1), paper_x(200_000_000, 200, 2)  # 2.5M: between epochs 1 and 2
    w = (x - x1) / (x2 - x1)
    pm, ps = m[0] + w * (m[1] - m[0]), s[0] + w * (s[1] - s[0])
    assert f"| 1 | 2,500,000 | 20.0 | 20.0 | {C.fmt_mean_se(pm, ps)} | {(20.0 - pm) / ps:+.1f} |" in proc.stdout
    assert "Our settings that differ from the paper's: num_envs 256 (paper 512)" in proc.stdout


def test_compare_keeps_runs_of_different_settings_apart(tmp_path):
    """humanoid depth 4 at the paper's settings and at 256 envs (evaluated at the same env steps): two tables, each
    pooling only its own runs, each named; the paper's line marked where the settings differ; the depth ordering only
    between depths of the same settings."""
    paper = {1: [0.0, 1.0, 2.0], 2: [0.0, 1.5, 2.5]}
    _run(tmp_path, "d4", {"env_id": "humanoid", "depth": 4}, [1, 2], paper)
    _run(tmp_path, "d4_256", {"env_id": "humanoid", "depth": 4, "num_envs": 256}, [1], {1: [0.0, 5.0, 6.0]})
    _run(tmp_path, "d8_256", {"env_id": "humanoid", "depth": 8, "num_envs": 256}, [1], {1: [0.0, 7.0, 8.0]})
    proc = _compare("d4", "d4_256", "d8_256", "--out", "mixed.png", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "## humanoid, depth 4 (the paper's settings)\n\nRuns: d4\n" in out
    assert "## humanoid, depth 4 (num_envs 256 (paper 512))\n\nRuns: d4_256\n" in out
    x1 = paper_x(100_000_000, 100, 1)
    assert f"| 1 | {x1:,} | 1.25 ± 0.25 | 1.00 / 1.50 |" in out and f"| 1 | {x1:,} | 5.00 | 5.00 |" in out  # not pooled
    assert "humanoid (num_envs 256 (paper 512)): depth ordering at epoch 2" in out and out.count("depth ordering") == 1
    # the legend: the paper's curve under runs of other settings is marked
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    rows = C.compare_rows([(1, paper_x(100_000_000, 100, 1), [1.0])], C.find_curve(C.load_curves(), "humanoid", 4))
    C.draw(ax, [("depth 4", rows, C.find_curve(C.load_curves(), "humanoid", 4), 0, "num_envs 256 (paper 512)"),
                ("depth 8", rows, C.find_curve(C.load_curves(), "humanoid", 8), 1)], "t")
    labels = ax.get_legend_handles_labels()[1]
    plt.close(fig)
    assert labels == ["depth 4, ours (1 seeds)", "depth 4, paper (settings differ: num_envs 256 (paper 512))",
                      "depth 8, ours (1 seeds)", "depth 8, paper"]


def test_compare_refusals_write_nothing(tmp_path):
    _run(tmp_path, "narrow", {"env_id": "humanoid", "depth": 4, "width": 16}, [1], {1: [0.0, 1.0]})
    _run(tmp_path, "reacher", {"env_id": "reacher", "depth": 4}, [1], {1: [0.0, 1.0]})
    _run(tmp_path, "badargs", {"env_id": "humanoid", "depth": 4}, [1], {1: [0.0, 1.0]})
    (tmp_path / "badargs" / "args.json").write_text('{"env_id": "humanoid", "depth": ')
    _run(tmp_path, "listargs", {"env_id": "humanoid", "depth": 4}, [1], {1: [0.0, 1.0]})
    (tmp_path / "listargs" / "args.json").write_text("[1, 2]")
    _run(tmp_path, "ok", {"env_id": "humanoid", "depth": 4}, [1], {1: [0.0, 1.0]})
    _run(tmp_path, "other_steps", {"env_id": "humanoid", "depth": 4}, [1], {1: [0.0, 1.0]}, lambda e: 1000 + 500 * e)
    (tmp_path / "empty").mkdir()
    for args, message in [(["nothere"], "no such directory: nothere"),
                          (["empty"], "no metrics.jsonl in it or below it"),
                          (["narrow"], "another network than the paper's curves: width 16 (paper 256)"),
                          (["reacher"], "the paper published no curve of reacher at depth 4"),
                          (["badargs"], "badargs: args.json unreadable (Expecting value: line 1 column 33"),
                          (["listargs"], "listargs: args.json is not a JSON object"),
                          (["ok", "other_steps"], "humanoid depth 4: runs of the same settings with no evaluation at "
                                                  "the same epoch and env steps (another --total-env-steps or"),
                          (["ok", "--z-max", "nan"], "--z-max must be a positive finite number (got nan)"),
                          (["ok", "--z-max", "inf"], "--z-max must be a positive finite number (got inf)"),
                          (["ok", "--z-max", "0"], "--z-max must be a positive finite number (got 0)"),
                          (["narrow", "--out", "no/dir.png"], "--out no/dir.png: no such directory")]:
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        proc = _compare(*args, cwd=str(tmp_path))
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_list_prints_every_curve():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "curves.py"), "list"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == len(C.load_curves())
    assert any(line.startswith("ant_u5_maze") and "400 evaluations" in line for line in lines)
    assert any("humanoid_u_maze" in line and "depth 1024" in line and "not given" in line for line in lines)


def test_summary_sets_runs_against_the_papers_curves(tmp_path):
    """benchmark.sh paper's results layout: three seeds of ant_hardest_maze at depths 4 and 8 (one run each),
    a depth-4 run without LayerNorm (no curve); the section's rows by hand, the depth ordering, the band drawn."""
    root = tmp_path / "res"
    (root / "logs").mkdir(parents=True)
    rows = ["label\tscript\tenv\tdepth\tseed\tstatus\twall_s\tlog"]
    values = {}
    for depth, extra in ((4, {}), (8, {}), (4, {"layer_norm": False})):
        for seed in (1, 2, 3):
            label = f"crl_depth__ant_hardest_maze__d{depth}{'__noln' if extra else ''}__s{seed}"
            values[label] = [(depth + seed) * e for e in range(30)]
            _run(root / "runs" / label, "x", {"env_id": "ant_hardest_maze", "depth": depth, "episode_length": 1000, **extra},
                 [seed], {seed: values[label]}, lambda e: paper_x(200_000_000, 200, e))
            rows.append(f"{label}\tcrl_depth\tant_hardest_maze\t{depth}\t{seed}\t0\t100\t-")
    (root / "runs.tsv").write_text("\n".join(rows) + "\n")
    assert S.summarize(str(root)) == 0
    text = (root / "summary.md").read_text()
    section = text.split("### Against the paper's learning curves")[1].split("###")[0]
    c = _json("fig1_main.json")["ant_hardest_maze"]
    assert "**ant_hardest_maze, depth 4** (3 seeds" in section and "noln" not in section  # no curve without LayerNorm
    for depth in (4, 8):
        ours = [values[f"crl_depth__ant_hardest_maze__d{depth}__s{s}"][27] for s in (1, 2, 3)]  # epoch 27: shown (every 3rd)
        mean, se = statistics.mean(ours), statistics.stdev(ours) / math.sqrt(3)
        pm, ps = c["depth_mean"][str(depth)][26], c["depth_std_error"][str(depth)][26]
        assert (f"| 27 | {paper_x(200_000_000, 200, 27):,} | {mean:.1f} ± {se:.1f} | "
                + " / ".join(f"{v:.1f}" for v in ours) + f" | {C.fmt_mean_se(pm, ps)} | "
                f"{(mean - pm) / math.sqrt(se ** 2 + ps ** 2):+.1f} |") in section
        assert f"ant_hardest_maze, depth {depth}: OUTSIDE the paper's band" in section  # ours climbs far faster
        assert "| 29 | " in section and "| 28 | " not in section  # every 3rd evaluation and the last
    paper = "depth 8 > depth 4" if c["depth_mean"]["8"][28] > c["depth_mean"]["4"][28] else "depth 4 > depth 8"
    assert "ant_hardest_maze: depth ordering at epoch 29: ours depth 8 > depth 4" in section and f"the paper's {paper}" in section
    assert (root / "curves_ant_hardest_maze.png").stat().st_size > 5000
