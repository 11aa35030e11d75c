"""benchmark.sh and its helpers: the summary's statistics (mean ± standard error of each seed's last 5
evaluations) against a hand computation, the paper's numbers read from tools/paper_numbers.json, the checks that
make `quick` fail, the speed tables (seeds in one process, bfloat16 vs float32 included), the unrolled
comparison network of tools/bench.py, its sweep's seeds and dtype options and its env plan (tiny real
measurements), and benchmark.sh's refusals and plans. No suite is run for real here."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import benchmark_summary as S  # noqa: E402
import bench  # noqa: E402

import crl_depth as C  # noqa: E402

def test_paper_numbers_lookups():
    """load_paper's lookups from tools/paper_numbers.json: the main table's mean and standard error, the
    depth sweep where the table has no number (the table wins where both have one), budgets, hours."""
    paper = S.load_paper()
    with open(S.PAPER_NUMBERS) as f:
        raw = json.load(f)
    assert len(raw["main_table"]["values"]) == 10 and set(raw["main_table"]["values"]) == set(raw["env_steps"]["values"])
    assert paper["score"]["humanoid"][4] == (12.6, 1.3)  # the main table, not the sweep's 13
    assert paper["score"]["humanoid"][64] == (649.0, 19.0)
    assert paper["score"]["humanoid"][16] == (454.0, None)  # the sweep: no standard error
    assert paper["score"]["humanoid_big_maze"][4] == (0.06, 0.04)
    assert paper["score"]["arm_push_easy"][32] == (848.0, None)
    assert paper["budget"]["humanoid_big_maze"] == 400_000_000 and paper["budget"]["ant_hardest_maze"] == 200_000_000
    assert paper["hours"]["ant_big_maze"][16] == 4.04 and paper["hours"]["humanoid_u_maze"][64] == 46.74
    for name, entry in raw.items():  # every entry says where in the paper it comes from
        assert name == "about" or "arXiv 2503.14858" in entry["source"], name


def test_summary_tool_budget_and_refusal():
    tool = [sys.executable, os.path.join(ROOT, "tools", "benchmark_summary.py")]
    proc = subprocess.run([*tool, "budget", "humanoid_u_maze"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "400000000"
    proc = subprocess.run([*tool, "budget", "reacher"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "the paper gives no env-step budget for 'reacher'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_last_n_mean_skips_the_untrained_evaluation():
    key = "eval/time_at_goal"
    recs = [{"epoch": e, key: float(10 * e)} for e in range(8)]  # epochs 0..7
    assert S.last_n_mean(recs, key) == (30 + 40 + 50 + 60 + 70) / 5
    assert S.last_n_mean(recs[:3], key) == (10 + 20) / 2  # fewer than 5 trained: epoch 0 still left out
    assert S.last_n_mean(recs[:1], key) == 0.0  # only the untrained evaluation: that is all there is
    assert S.last_n_mean([{"epoch": 1}], key) is None


def _write_run(root, label, args, values, status="0", extra=None):
    run_dir = root / "runs" / label / f"{args['env_id']}__x__{args['seed']}__0"
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps(args))
    with open(run_dir / "metrics.jsonl", "w") as f:
        for epoch, v in enumerate(values):
            rec = {"epoch": epoch, "env_steps": 1000 * (epoch + 1), "eval/time_at_goal": v,
                   "time/compile_s": 12.5, **({"charts/sps": 2000.0 + epoch} if epoch else {})}
            f.write(json.dumps({**rec, **(extra or {})}) + "\n")
    with open(root / "runs.tsv", "a") as f:
        f.write(f"{label}\t{args['exp_name']}\t{args['env_id']}\t{args.get('depth')}\t{args['seed']}\t{status}\t61\t-\n")
    return run_dir


def _results(tmp_path):
    root = tmp_path / "res"
    root.mkdir(parents=True)
    (root / "runs.tsv").write_text("label\tscript\tenv\tdepth\tseed\tstatus\twall_s\tlog\n")
    return root


def test_summary_mean_and_standard_error_by_hand(tmp_path):
    root = _results(tmp_path)
    seeds = {1: [1, 2, 3, 4, 5, 6, 7, 8], 2: [0, 0, 0, 10, 20, 30, 40, 50], 3: [5, 5, 5, 5, 5, 5, 5, 5]}
    for seed, values in seeds.items():
        _write_run(root, f"crl_depth__humanoid__d4__s{seed}",
                   dict(exp_name="crl_depth", env_id="humanoid", depth=4, seed=seed, episode_length=1000),
                   [float(v) for v in values])
    _write_run(root, "crl_depth__humanoid__d64__s1",
               dict(exp_name="crl_depth", env_id="humanoid", depth=64, seed=1, episode_length=1000), [0.0, 100.0])
    assert S.summarize(str(root), check=True) == 0
    # by hand: each seed's mean of epochs 3..7, then mean and sample s.d. / sqrt(3) over seeds
    per_seed = [(4 + 5 + 6 + 7 + 8) / 5, (10 + 20 + 30 + 40 + 50) / 5, 5.0]  # 6, 30, 5
    mean = sum(per_seed) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in per_seed) / 2) / math.sqrt(3)
    assert (round(mean, 1), round(se, 1)) == (13.7, 8.2)
    text = (root / "summary.md").read_text()
    assert "| crl_depth | humanoid | depth 4 | 3 | 13.7 ± 8.2 | 1000 | 12.6 ± 1.3 |" in text
    assert "| crl_depth | humanoid | depth 64 | 1 | 100.0 | 1000 | 649.0 ± 19.0 |" in text  # one seed: no error
    # runtime: wall, compile, median SPS over epochs, final and last-5 time at goal, untrained score, A100 hours
    assert "| crl_depth__humanoid__d4__s2 | 0 | 1m01s | 12.5 | 2,004 env steps/s | 50.0 | 30.0 | 0.0 | 1.48 |" in text
    assert (root / "curves_humanoid.png").stat().st_size > 5000
    assert "No problems" in text


def test_summary_check_fails_on_crash_and_non_finite(tmp_path):
    root = _results(tmp_path)
    args = dict(exp_name="crl_depth", env_id="reacher", depth=4, seed=1, episode_length=100)
    _write_run(root, "ok", args, [1.0, 2.0])
    assert S.summarize(str(root), check=True) == 0
    _write_run(root, "nan", {**args, "seed": 2}, [1.0, 2.0], extra={"losses/critic": float("nan")})
    assert S.summarize(str(root), check=True) == 1
    assert "nan: losses/critic=nan at epoch 0" in (root / "summary.md").read_text()
    assert S.summarize(str(root), check=False) == 0  # without --check the summary only reports

    root2 = _results(tmp_path / "b")
    _write_run(root2, "ok", args, [1.0, 2.0])
    with open(root2 / "runs.tsv", "a") as f:  # a run that crashed before writing anything
        f.write("crashed\tcrl_depth\treacher\t4\t3\t1\t5\t-\n")
    assert S.summarize(str(root2), check=True) == 1
    text = (root2 / "summary.md").read_text()
    assert "crashed: no metrics.jsonl" in text and "crashed: exit status 1" in text


def test_summary_prefixed_metrics_take_their_depth(tmp_path):
    """crl_collector_learner.py logs collector/, deep_learner/ and shallow_learner/ scores."""
    root = _results(tmp_path)
    run_dir = _write_run(root, "cl", dict(exp_name="crl_collector_learner", env_id="reacher", collector_depth=8,
                                          deep_learner_depth=8, shallow_learner_depth=4, seed=1, episode_length=100),
                         [1.0, 2.0], extra={"collector/eval/time_at_goal": 7.0, "shallow_learner/eval/time_at_goal": 3.0})
    assert run_dir.exists()
    S.summarize(str(root), check=True)
    text = (root / "summary.md").read_text()
    assert "| crl_collector_learner | reacher | collector depth 8 | 1 | 7.0 | 100 | — |" in text
    assert "| crl_collector_learner | reacher | shallow_learner depth 4 | 1 | 3.0 | 100 | — |" in text


def test_speed_tables(tmp_path):
    root = _results(tmp_path)
    base = dict(env_id="humanoid", width=64, batch_size=64, num_envs=16, unroll_length=62, num_sgd_steps=25,
                max_replay_size=1000, target="network", remat=False, status="ok", backend="cpu", num_params=1000,
                lower_s=1.0, xla_compile_s=4.0, compile_s=5.0, hlo_ops=6000, step_s=0.01, env_steps_per_s=3968.0,
                xla_bytes=2**21, rss_peak_bytes=2**30)
    rows = [dict(base, impl="scan", depth=4), dict(base, impl="scan", depth=64, sgd_step_ops=4713),
            dict(base, impl="unrolled", depth=4, compile_s=10.0, hlo_ops=9000, xla_bytes=2**22),
            {**{k: base[k] for k in ("env_id", "width", "batch_size", "target", "remat")}, "impl": "unrolled",
             "depth": 64, "status": "timeout", "error": "timed out after 300 s"}]
    (root / "speed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert S.summarize(str(root), check=True) == 0
    text = (root / "summary.md").read_text()
    assert "| 4 | 5.0 | 10.0 | 2.0x | 6,000 | 9,000 | 2.0 | 4.0 |" in text
    assert "| 64 | 5.0 | timeout: timed out after 300 s | — |" in text
    assert "| scan | 64 | 1,000 | 5.0 (1.0 / 4.0) | 6,000 | 4,713 | 10.0 |" in text  # ops per SGD step
    assert "| scan | 4 | 1,000 | 5.0 (1.0 / 4.0) | 6,000 | — | 10.0 |" in text  # (a record from before that figure)
    assert (root / "speed.png").exists()


def _speed_row(depth, step_s, dtype="float32", num_seeds=1, target="train_step", remat=False, per_step=16 * 62):
    return dict(env_id="humanoid", width=64, batch_size=64, num_envs=16, unroll_length=62, num_sgd_steps=25,
                max_replay_size=1000, repr_dim=64, iters=3, target=target, impl="scan", depth=depth, remat=remat,
                compute_dtype=dtype, num_seeds=num_seeds, status="ok", backend="cpu", num_params=1000, lower_s=1.0,
                xla_compile_s=4.0, compile_s=5.0, hlo_ops=6000, step_s=step_s, env_steps_per_call=num_seeds * per_step,
                env_steps_per_s=num_seeds * per_step / step_s, params_finite=True, xla_bytes=2**21,
                rss_peak_bytes=2**30)


def test_speed_seeds_and_bfloat16_tables(tmp_path):
    """summary.md's "seeds in one process" and "bfloat16 vs float32" tables, checked against numbers
    computed here from the rows; rows written by three sweeps (tools/bench.py sweep) as benchmark.sh makes them (the
    N = 1 and float32 baselines come from the depth sweep)."""
    root = _results(tmp_path)
    step = {1: 0.25, 2: 0.30, 4: 0.40, 8: 0.80}  # seconds per train step with N seeds (depth 4, float32)
    bf16 = {4: 0.20, 16: 0.50}
    fp32 = {4: step[1], 16: 0.40}
    rows = [_speed_row(4, fp32[4]), _speed_row(16, fp32[16]), _speed_row(4, 0.3, remat=True)]  # the depth sweep
    rows += [_speed_row(4, step[n], num_seeds=n) for n in (2, 4, 8)]  # seeds in one process
    rows += [_speed_row(d, bf16[d], dtype="bfloat16") for d in (4, 16)]  # bfloat16
    rows.append({**_speed_row(16, 1.0, dtype="bfloat16", num_seeds=2), "status": "timeout", "error": "timed out"})
    (root / "speed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert S.summarize(str(root), check=False) == 0  # without --check the failed row is only reported
    text = (root / "summary.md").read_text()
    assert "**Seeds in one process**" in text and "*train_step, scan, depth 4*" in text
    sps1 = 16 * 62 / step[1]
    for n in (1, 2, 4, 8):
        sps = n * 16 * 62 / step[n]
        marginal = "—" if n == 1 else f"{(step[n] - step[1]) / ((n - 1) * step[1]):.2f}"
        row = (f"| {n} | {1e3 * step[n]:,.1f} | {sps:,.0f} | {sps / n:,.0f} | {sps / sps1:.2f}x | {marginal} |")
        assert row in text, row
    assert "| 8 | 800.0 | 9,920 | 1,240 | 2.50x | 0.31 |" in text  # by hand: 8 x 992 / 0.8; 0.55 / (7 x 0.25)
    assert "**bfloat16 vs float32**" in text
    for d in (4, 16):
        row = (f"| train_step | scan | {d} | {1e3 * fp32[d]:,.1f} | {1e3 * bf16[d]:,.1f} | {bf16[d] / fp32[d]:.2f} | "
               "5.0 / 5.0 | 2.0 / 2.0 |")
        assert row in text, row
    assert "| train_step | scan | 4 | 250.0 | 200.0 | 0.80 |" in text
    assert "scan + remat, bfloat16" not in text  # no bfloat16 row with remat: no pair
    # every row also in the per-target table, named by its dtype and seeds; the failed one a problem
    assert "| scan, 8 seeds | 4 | 1,000 |" in text and "| scan, bfloat16 | 16 | 1,000 |" in text
    assert "speed train_step scan depth 16 bfloat16 x2 seeds: timeout timed out" in text
    assert S.summarize(str(root), check=True) == 1


def test_speed_plan_and_describe_defaults_unchanged():
    p = dict(env_id="humanoid", width=64, batch_size=64, repr_dim=64, iters=3, num_envs=16, unroll_length=62,
             num_sgd_steps=25, episode_length=1000, max_replay_size=1000, targets=["network", "train_step"],
             depths=[4, 16], unrolled_depths=[4], remat="both", compute_dtypes=["float32"], num_seeds=[1])
    import argparse

    specs = bench.sweep_plan(argparse.Namespace(**p))
    assert len(specs) == 2 * 2 * 2 + 1 and all(s["compute_dtype"] == "float32" and s["num_seeds"] == 1 for s in specs)
    assert [s["kind"] for s in specs] == ["sgd"] * 4 + ["train"] * 4 + ["sgd"]  # the network alone, the train step
    assert all(s["calls"] == 4 and s["min_replay_size"] == 1000 for s in specs)  # a warm-up and 3 timed calls
    assert bench.describe(specs[0]) == "network    scan     depth    4"
    specs = bench.sweep_plan(argparse.Namespace(**{**p, "targets": ["train_step"], "remat": "off", "depths": [4],
                                             "compute_dtypes": ["float32", "bfloat16"], "num_seeds": [1, 2]}))
    assert [(s["compute_dtype"], s["num_seeds"]) for s in specs] == [
        ("float32", 1), ("float32", 2), ("bfloat16", 1), ("bfloat16", 2)]
    assert bench.describe(specs[-1]) == "train_step scan     depth    4 bfloat16 x2 seeds"


def test_unrolled_network_matches_scanned_and_its_graph_grows():
    """tools/bench.py's unrolled comparison computes the same function as crl_depth's scanned trunk
    (same parameters, moved from the stacked block axis to one layer each), and only its graph grows."""
    depth, width = 8, 8
    scanned = C.ResidualTrunk(depth, width)
    unrolled = bench.unrolled_trunk_class()(depth, width)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5))
    ps = scanned.init(jax.random.PRNGKey(0), x)["params"]
    pu = jax.tree.map(lambda a: a, unrolled.init(jax.random.PRNGKey(0), x)["params"])
    pu["Dense_0"], pu["LayerNorm_0"] = ps["Dense_0"], ps["LayerNorm_0"]
    for b in range(depth // 4):
        for i in range(4):
            pu[f"Dense_{1 + 4 * b + i}"] = jax.tree.map(lambda a: a[b], ps["blocks"][f"Dense_{i}"])
            pu[f"LayerNorm_{1 + 4 * b + i}"] = jax.tree.map(lambda a: a[b], ps["blocks"][f"LayerNorm_{i}"])
    np.testing.assert_allclose(unrolled.apply({"params": pu}, x), scanned.apply({"params": ps}, x), rtol=1e-5, atol=1e-5)

    def ops(module, d):
        m = module(d, width)
        params = m.init(jax.random.PRNGKey(0), x)
        text = jax.jit(m.apply).lower(params, x).as_text()
        return sum(1 for line in text.splitlines() if " = " in line)

    assert ops(C.ResidualTrunk, 16) == ops(C.ResidualTrunk, 64) == ops(C.ResidualTrunk, 1024)  # 2 blocks a trip
    assert ops(unrolled.__class__, 64) > 10 * ops(unrolled.__class__, 4)


def _measure(spec):
    """One measurement in this process, as a child of tools/bench.py makes it: its record."""
    record = {}

    def emit(**fields):
        record.update(fields)

    emit.record = record
    {"sgd": bench.measure_sgd, "train": bench.measure_train, "env": bench.measure_env}[spec["kind"]](spec, emit)
    return record


def test_speed_measure_network_step():
    spec = dict(kind="sgd", env_id="reacher", width=8, batch_size=8, repr_dim=4, calls=2, target="network",
                impl="scan", depth=8, remat=True, compute_dtype="float32", num_seeds=1)
    r = _measure(spec)
    assert r["params_finite"]
    assert r["compile_s"] > 0 and r["step_s"] > 0 and r["xla_bytes"] > 0 and r["hlo_ops"] > 0
    assert r["sgd_step_ops"] > 0  # the ops one SGD step executes, its block loop's trips counted
    assert r["env_steps_per_s"] == pytest.approx(512 * 62 / 800 / r["step_s"])
    assert r["seed_axis"] is False  # one seed: the plain SGD step, as before --num-seeds


def test_speed_measure_network_step_seeds_bfloat16_unrolled():
    spec = dict(kind="sgd", env_id="reacher", width=8, batch_size=8, repr_dim=4, calls=2, target="network",
                impl="unrolled", depth=4, remat=False, compute_dtype="bfloat16", num_seeds=2)
    r = _measure(spec)
    assert r["params_finite"]
    assert r["env_steps_per_call"] == pytest.approx(2 * 512 * 62 / 800)  # two seeds' SGD steps per call
    assert r["seed_axis"] is True
    assert r["env_steps_per_s"] == pytest.approx(2 * 512 * 62 / 800 / r["step_s"])


@pytest.mark.slow  # the sweep's train step at 1, 2 seeds and bfloat16
def test_speed_cli_seeds_and_dtype_train_step(tmp_path):
    """tools/bench.py sweep --num-seeds 1 2 --compute-dtypes bfloat16 on a tiny train step: one record per N,
    with its fields; the state of two seeds is twice one seed's (a real leading seed axis)."""
    out = tmp_path / "speed.jsonl"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "bench.py"), "sweep", "--out", str(out), "--targets", "train_step",
           "--remat", "off", "--depths", "4", "--width", "16", "--batch-size", "8", "--env-id", "reacher",
           "--num-envs", "4", "--unroll-length", "5", "--num-sgd-steps", "2", "--episode-length", "10",
           "--max-replay-size", "20", "--iters", "1", "--num-seeds", "1", "2", "--compute-dtypes", "bfloat16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "train_step scan     depth    4 bfloat16 x2 seeds | compile" in proc.stdout
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["target"], r["compute_dtype"], r["num_seeds"], r["status"]) for r in recs] == [
        ("train_step", "bfloat16", 1, "ok"), ("train_step", "bfloat16", 2, "ok")]
    for r in recs:
        assert r["params_finite"] and r["remat"] is False
        assert r["seed_axis"] is (r["num_seeds"] > 1)  # as crl_depth.py: one seed runs the plain step
        assert r["env_steps_per_call"] == r["num_seeds"] * 4 * 5  # N x num_envs x unroll_length
        assert r["env_steps_per_s"] == pytest.approx(r["env_steps_per_call"] / r["step_s"])
        assert r["sgd_step_ops"] > 0 and r["hlo_ops"] > 0 and r["lower_s"] + r["xla_compile_s"] == pytest.approx(
            r["compile_s"])
    assert recs[0]["num_params"] == recs[1]["num_params"]  # one seed's
    assert recs[1]["xla_argument_bytes"] == 2 * recs[0]["xla_argument_bytes"]


def _bash(*args, **kw):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=120, **kw)


def test_benchmark_sh_rejects_unknown_suite_and_options():
    proc = _bash("bogus")
    assert proc.returncode == 2 and "unknown suite 'bogus'" in proc.stderr
    proc = _bash("quick", "--width", "64")
    assert proc.returncode == 2 and "--width does not apply to the quick suite" in proc.stderr
    proc = _bash("speed", "--depths", "6")
    assert proc.returncode == 2 and "multiples of 4" in proc.stderr


def test_benchmark_sh_refuses_an_existing_results_dir(tmp_path):
    proc = _bash("speed", "--dry-run", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    results = proc.stdout.split("results: ")[1].split()[0]
    assert os.path.basename(results).startswith("speed__") and not os.path.exists(results)  # dry run writes nothing
    os.makedirs(results)
    proc = _bash("speed", "--results-root", str(tmp_path))
    assert proc.returncode == 1 and "refusing to overwrite" in proc.stderr
    assert os.listdir(results) == []


def test_benchmark_sh_speed_plan(tmp_path):
    proc = _bash("speed", "--dry-run", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "plan: 3 tools/bench.py sweep runs" in out
    assert "--depths 4 16 64 256 1024\n" in out  # the depth sweep: as before
    assert "seeds in one process" in out and "--targets train_step --remat off --depths 4 --num-seeds 2 4 8\n" in out
    assert ("bfloat16 vs float32" in out and
            "--targets train_step --remat off --depths 4 16 64 256 1024 --compute-dtypes bfloat16\n" in out)
    proc = _bash("speed", "--dry-run", "--results-root", str(tmp_path), "--depths", "16", "8", "--num-seeds", "1", "3",
                 "--compute-dtypes", "float32", "--width", "32")
    assert proc.returncode == 0, proc.stderr
    assert "plan: 2 tools/bench.py sweep runs" in proc.stdout and "bfloat16" not in proc.stdout
    assert "--width 32 --targets train_step --remat off --depths 8 --num-seeds 3\n" in proc.stdout
    proc = _bash("speed", "--dry-run", "--results-root", str(tmp_path), "--num-seeds", "1", "--compute-dtypes", "float32")
    assert "plan: 1 tools/bench.py sweep runs" in proc.stdout
    proc = _bash("speed", "--compute-dtypes", "float16")
    assert proc.returncode == 2 and "float32 or bfloat16" in proc.stderr
    proc = _bash("quick", "--num-seeds", "2")
    assert proc.returncode == 2 and "--num-seeds does not apply to the quick suite" in proc.stderr


def test_benchmark_sh_quick_plan(tmp_path):
    proc = _bash("quick", "--dry-run", "--total-env-steps", "100000", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "plan: 3 runs" in proc.stdout
    assert "crl_depth.py --env-id reacher --depth 4 --seed 1 --total-env-steps 100000 --num-epochs 16" in proc.stdout
    assert "crl_depth_offline.py" in proc.stdout and "crl_collector_learner.py" in proc.stdout


def test_benchmark_sh_probe_plan_and_refusals(tmp_path):
    proc = _bash("probe", "--dry-run", "--results-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "plan: 9 runs" in out and os.listdir(tmp_path) == []
    for depth in (4, 16, 64):
        for seed in (1, 2, 3):
            assert (f"crl_depth__point_big_maze__d{depth}__s{seed}: {sys.executable} crl_depth.py --env-id "
                    f"point_big_maze --depth {depth} --seed {seed} --total-env-steps 1000000 --num-envs 128") in out
    proc = _bash("probe", "--dry-run", "--results-root", str(tmp_path), "--envs", "point_u_maze", "--depths", "4", "8",
                 "--seeds", "5", "--total-env-steps", "5000")
    assert "plan: 2 runs" in proc.stdout and "--env-id point_u_maze --depth 8 --seed 5 --total-env-steps 5000 " in proc.stdout
    proc = _bash("probe", "--envs", "ant_u4_maze", "--results-root", str(tmp_path))
    assert proc.returncode == 2 and "the probe runs on the point mazes" in proc.stderr and os.listdir(tmp_path) == []
    proc = _bash("probe", "--width", "32")
    assert proc.returncode == 2 and "--width does not apply to the probe suite" in proc.stderr


def test_summary_env_speed_table_and_seed_range(tmp_path):
    """summarize lists tools/bench.py env's rows and the heatmaps found, and draws the curves."""
    res = _results(tmp_path)
    for seed, values in ((1, [0.0, 10.0, 30.0]), (2, [0.0, 20.0, 50.0])):
        _write_run(res, f"crl_depth__point_u_maze__d4__s{seed}", {"exp_name": "crl_depth", "env_id": "point_u_maze",
                                                                     "depth": 4, "seed": seed, "episode_length": 100},
                   values)
    with open(os.path.join(res, "env_speed.jsonl"), "w") as f:
        f.write(json.dumps({"target": "env_step", "env_id": "point_u_maze", "num_envs": 1024, "steps": 10,
                            "compile_s": 1.5, "best_call_s": 0.01, "env_steps_per_s": 1024000, "backend": "cpu"}) + "\n")
    open(os.path.join(res, "heatmap_point_u_maze.png"), "wb").close()
    assert S.summarize(res, check=True) == 0
    text = open(os.path.join(res, "summary.md")).read()
    assert "| point_u_maze | 1,024 | 1,024,000 | 1.5 | cpu |" in text
    assert "Critic heatmaps: heatmap_point_u_maze.png" in text
    assert os.path.exists(os.path.join(res, "curves_point_u_maze.png"))
    with open(os.path.join(res, "env_speed.jsonl"), "a") as f:  # tools/bench.py env's rows: a float, a failure
        f.write(json.dumps({"target": "env_step", "env_id": "point_big_maze", "num_envs": 1024, "steps": 10,
                            "status": "ok", "compile_s": 2.25, "step_s": 0.3, "env_steps_per_s": 34133.33,
                            "backend": "cpu"}) + "\n")
        f.write(json.dumps({"target": "env_step", "env_id": "point_hardest_maze", "num_envs": 1024, "steps": 10,
                            "status": "timeout", "error": "timed out after 600 s", "compile_s": None, "step_s": None,
                            "env_steps_per_s": None, "backend": None}) + "\n")
    assert S.summarize(res, check=True) == 1  # a failed measurement is a problem
    text = open(os.path.join(res, "summary.md")).read()
    assert "| point_big_maze | 1,024 | 34,133 | 2.2 | cpu |" in text
    assert "| point_hardest_maze | 1,024 | timeout: timed out after 600 s | | |" in text
    assert "- env point_hardest_maze: timeout timed out after 600 s" in text


def test_env_speed_tool(tmp_path):
    """tools/bench.py env: one row per env id with the median of the calls after the first; bad input is one line,
    exit status 2, nothing written."""
    out = tmp_path / "env_speed.jsonl"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "env", "--env-ids", "point_u_maze",
                           "--num-envs", "8", "--steps", "20", "--calls", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["env_id"] == "point_u_maze" and row["num_envs"] == 8 and row["steps"] == 20 and row["status"] == "ok"
    assert row["env_steps_per_s"] == pytest.approx(8 * 20 / row["step_s"], rel=1e-6) and row["compile_s"] > 0
    assert "| point_u_maze | 8 |" in proc.stdout
    for flags, message in ((["--env-ids", "bogus"], "unknown env id 'bogus'"), (["--calls", "0"], "--calls must be at least 1")):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "env", *flags, "--out",
                               str(tmp_path / "bad.jsonl")], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {message}" + (
            f" (one of: {', '.join(__import__('crl_envs').ENVS)})" if "bogus" in message else "")]
        assert not (tmp_path / "bad.jsonl").exists()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "speed"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: the first argument names the plan: gpu, sweep, env")
