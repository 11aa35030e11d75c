"""`bash benchmark.sh gpu` (tools/bench.py gpu) at --tiny sizes on the CPU: one item of each stage runs
for real in its own process, within --tiny's own limits, and writes a JSON line with numbers; its
XLA figures equal the CPU estimates that --cpu-estimates computes from shapes for the same items; a
timed-out item is a row, not a crash; bad input is one line and exit status 2, nothing written; the
table's seeds and bfloat16 comparisons and its estimate columns, computed from records."""

import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import pytest  # noqa: E402

import bench  # noqa: E402

GiB = 2**30

NUMERIC = {"train_d64": ("compile_s", "step_s", "train_env_steps_per_s", "eval_s", "env_steps_per_s_with_eval",
                         "projected_hours"),
           "train_d4": ("compile_s", "step_s", "train_env_steps_per_s", "xla_bytes", "sgd_step_ops", "hlo_ops"),
           "train_d1024": ("compile_s", "step_s", "train_env_steps_per_s"),
           "d64_unroll1": ("compile_s", "step_s", "train_env_steps_per_s"),
           "fit_d1024": ("largest_batch",),
           "seeds4_d4": ("compile_s", "step_s", "train_env_steps_per_s"),
           "env_humanoid": ("compile_s", "step_s", "env_steps_per_s")}


def _bash(*args, timeout=300):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", os.path.join(ROOT, "benchmark.sh"), "gpu", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def _records(out):
    return [json.loads(line) for line in (out / "gpu.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_estimates(tmp_path_factory):
    """--cpu-estimates at --tiny for a training item and the fit item: the file and its entries by item."""
    path = tmp_path_factory.mktemp("est") / "estimates.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "gpu", "--cpu-estimates", "--tiny",
                           "--only", "train_d4", "fit_d1024", "env_ant", "--estimates", str(path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path, {e["item"]: e for e in json.loads(path.read_text())["items"]}


@pytest.mark.slow  # the suite's items compiled and run at tiny sizes on a CPU
def test_cpu_estimates_at_tiny_sizes(tiny_estimates):
    _, entries = tiny_estimates
    assert sorted(entries) == ["fit_d1024", "train_d4"]  # an env item holds no state to estimate
    plan = {i["name"]: i for i in bench.items(True)}
    for name, e in entries.items():
        assert e["tiny"] is True and e["spec"] == plan[name]["spec"] and e["backend"] == "cpu"
        assert e["commit"] and e["machine"] and e["date"] and e["command"].startswith("python tools/bench.py gpu")
    epoch = entries["train_d4"]["programs"]["epoch"]
    rows = entries["fit_d1024"]["programs"]["sgd"]
    assert [(r["remat"], r["batch_size"]) for r in rows] == [(False, 8), (False, 16), (True, 8), (True, 16)]
    for fig in [epoch, *rows]:
        for field in ("arguments", "outputs", "temporaries", "peak", "flops"):
            assert fig[field] > 0, (field, fig)
        assert fig["peak"] == fig["arguments"] + fig["outputs"] - fig["donated"] + fig["temporaries"]
    assert epoch["donated"] > 0  # the training state goes in and comes out in the same buffers
    assert rows[1]["peak"] > rows[0]["peak"]  # a larger batch needs more


@pytest.mark.slow  # the suite's items compiled and run at tiny sizes on a CPU
def test_tiny_one_item_of_every_stage(tmp_path, tiny_estimates):
    out = tmp_path / "r"
    estimates, entries = tiny_estimates
    proc = _bash("--tiny", "--out", str(out), "--wheels", str(tmp_path / "none"), "--estimates", str(estimates),
                 "--only", *NUMERIC, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta, *recs = _records(out)
    assert meta["item"] == "meta" and meta["tiny"] is True
    assert [r["item"] for r in recs] == list(NUMERIC) and [r["stage"] for r in recs] == [1, 1, 3, 5, 5, 5, 5]
    for r in recs:
        assert r["status"] == "ok" and r["backend"] == "cpu", r
        for field in NUMERIC[r["item"]]:
            assert isinstance(r[field], (int, float)) and r[field] > 0, (r["item"], field, r.get(field))
    d64, d4, deep, unroll1, fit, seeds, env = recs
    assert d4["env_steps_per_call"] == 4 * 5 and seeds["env_steps_per_call"] == 4 * 4 * 5  # seeds x envs x unroll
    assert deep["env_steps_per_call"] == 4 * 1 and unroll1["spec"]["unroll"] == 1 and d4["spec"]["unroll"] == 2
    assert d64["train_env_steps_per_s"] > d64["env_steps_per_s_with_eval"] and d4["params_finite"] is True
    # the command-buffer variant: another compile of the same step, timed in train_d64's process on its state
    (name, variant), = d64["variants"].items()
    assert name == "cmdbuf" and variant["params_finite"] is True and variant["compile_s"] > 0
    assert variant["train_env_steps_per_s"] == pytest.approx(4 * 5 / variant["step_s"])
    assert len(deep["step_times_s"]) == 1 and deep["step_s"] == deep["first_step_s"]  # one call, no warm-up
    assert len(d4["step_times_s"]) == 3 and d4["step_s"] == statistics.median(d4["step_times_s"][1:])  # after a warm-up
    assert fit["largest_batch"] == 16 and [t["batch_size"] for t in fit["tried"]] == [8, 16]
    # the estimates compiled from shapes are the programs these items compiled from real arrays
    assert d4["xla_bytes"] == entries["train_d4"]["programs"]["epoch"]["peak"]
    assert [t["xla_bytes"] for t in fit["tried"]] == [r["peak"] for r in entries["fit_d1024"]["programs"]["sgd"][:2]]
    assert env["env_steps_per_s"] * env["step_s"] == pytest.approx(env["env_steps_per_call"]) and env["env_steps_per_call"] == 4 * 5
    md = (out / "gpu.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line.split("|")[2].strip() in NUMERIC]
    assert len(rows) == len(NUMERIC) and all("| ok |" in row for row in rows)
    cells = {row.split("|")[2].strip(): [c.strip() for c in row.split("|")[7:11]] for row in rows}
    assert cells["train_d4"][0] == cells["train_d4"][1] == bench.size(d4["xla_bytes"])  # CPU: estimate = XLA here
    assert cells["seeds4_d4"][0] == "no CPU estimate" and cells["env_humanoid"] == [""] * 4
    assert "| 4 | 1.48 | 18,769 |" in md and "| 64 | 10.99 | 2,528 |" in md  # the paper's, 100M steps / hours
    assert md in proc.stdout
    proc = _bash("--tiny", "--out", str(out), "--only", "env_ant")
    assert proc.returncode == 1 and "refusing to overwrite" in proc.stderr


def test_timed_out_item_is_a_row(tmp_path):
    out = tmp_path / "r"
    proc = _bash("--tiny", "--out", str(out), "--wheels", str(tmp_path / "none"), "--only", "env_ant", "train_d64",
                 "--item-timeout", "1", timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    recs = _records(out)[1:]
    assert [(r["item"], r["status"]) for r in recs] == [("train_d64", "timeout"), ("env_ant", "timeout")]
    assert all(r["error"].startswith("timed out after 1 s") and r["wall_s"] < 10 for r in recs)
    rows = [line for line in (out / "gpu.md").read_text().splitlines() if "| timeout: timed out after 1 s" in line]
    assert len(rows) == 2


def test_bad_input_and_dry_run(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"items": 3}')
    for args, message in ((["--bogus"], "unrecognized arguments: --bogus"),
                          (["--only", "train_d5"], "unknown item 'train_d5'"),
                          (["--budget", "0"], "positive seconds"),
                          (["--estimates", str(tmp_path / "none.json")], "cannot read the CPU estimates"),
                          (["--estimates", str(bad)], "is not a CPU estimates file"),
                          (["--cpu-estimates", "--estimates", str(bad)], "is not a CPU estimates file"),
                          (["--cpu-estimates", "--only", "env_ant"], "none of these items holds a training state"),
                          (["--cpu-estimates", "--fused-block"], "drop --fused-block")):
        proc = _bash(*args, "--results-root", str(tmp_path), timeout=30)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, args
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    proc = _bash("--dry-run", "--results-root", str(tmp_path), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "plan: " in proc.stdout and "5 items" in proc.stdout and "dry run: nothing run" in proc.stdout
    limits = [int(line.split("(")[1].split(" s)")[0]) for line in proc.stdout.splitlines() if line.startswith("  [")]
    assert len(limits) == 5 and 30 + sum(limits) <= 8 * 60  # the wheels' 30 s included
    assert f"limits sum to {sum(limits)} s, budget {sum(limits) + 30} s" in proc.stdout
    proc = _bash("--dry-run", "--tiny", "--results-root", str(tmp_path), timeout=30)
    tiny = [int(line.split("(")[1].split(" s)")[0]) for line in proc.stdout.splitlines() if line.startswith("  [")]
    assert proc.returncode == 0 and len(tiny) == 5 and all(t > g for t, g in zip(tiny, limits))
    assert f"limits sum to {sum(tiny)} s, budget {sum(tiny) + 30} s" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["bad.json"]


def test_table_compares_seeds_and_bfloat16_to_their_baselines():
    meta = {"item": "meta", "tiny": False, "date": "2026-01-01 00:00", "commit": "abc", "machine": "m",
            "gpu": "NVIDIA H200", "python": "3.12"}
    recs = [{"item": "train_d4", "stage": 1, "what": "w", "status": "ok", "train_env_steps_per_s": 20_000.0,
             "env_steps_per_s_with_eval": 19_000.0, "eval_s": 2.0, "step_s": 1.5, "compile_s": 30.0,
             "projected_hours": 1.46, "backend": "gpu", "device": "H200", "jax": "0.11.2"},
            {"item": "train_d64", "stage": 1, "what": "w", "status": "ok", "step_s": 4.0,
             "train_env_steps_per_s": 8_000.0, "variants": {"cmdbuf": {"compile_s": 30.0, "step_s": 3.6,
                                                                      "first_step_s": 5.0,
                                                                      "train_env_steps_per_s": 8_888.9}}},
            {"item": "d64_unroll1", "stage": 2, "what": "w", "status": "ok", "step_s": 4.4},
            {"item": "d64_cmdbuf", "stage": 5, "what": "w", "status": "timeout", "error": "timed out after 60 s"},
            {"item": "d64_cmdbuf_options", "stage": 5, "what": "w", "status": "ok", "step_s": 4.1, "variants": {
                "cmdbuf_concurrent": {"compile_s": 31.0, "step_s": 3.28, "first_step_s": 4.0,
                                      "train_env_steps_per_s": 9_920.0},
                "cmdbuf_unroll_loops": {"error": "XlaRuntimeError: INVALID_ARGUMENT: No such compile option",
                                        "compile_s": 0.1}}},
            {"item": "seeds8_d64", "stage": 3, "what": "w", "status": "ok", "train_env_steps_per_s": 40_000.0},
            {"item": "train_d1024", "stage": 3, "what": "w", "status": "ok", "train_env_steps_per_s": 1_000.0},
            {"item": "seeds4_d4", "stage": 5, "what": "w", "status": "ok", "train_env_steps_per_s": 50_000.0},
            {"item": "seeds8_d4", "stage": 5, "what": "w", "status": "timeout", "error": "timed out after 40 s"},
            {"item": "bf16_d64", "stage": 5, "what": "w", "status": "ok", "step_s": 3.0}]
    md = bench.table(recs, meta)
    assert "4 seeds at depth 4: 2.50x the env steps/s of 1 seed" in md and "8 seeds at depth 4" not in md
    assert "8 seeds at depth 64: 5.00x the env steps/s of 1 seed" in md
    assert "step time at depth 64 against train_d64's (unroll 2, no XLA flags added): d64_unroll1 1.10;" in md
    assert ("train_d64's variants, step time against its own step (4.000 s) in the same process (each variant's "
            "second call; its first built what it builds once): cmdbuf 0.90;") in md
    assert "d64_cmdbuf_options's variants, step time against its own step (4.100 s)" in md
    assert "its first built what it builds once): cmdbuf_concurrent 0.80;" in md  # not the refused one
    assert "cmdbuf_unroll_loops: XlaRuntimeError: INVALID_ARGUMENT: No such compile option" in md
    assert "cmdbuf: 3.600 s per call (first 5.000), 8,889 env steps/s (compile 30.0 s)" in md
    assert "depth 1024 (actor 512): 1,000 env steps/s, 27.8 h for 100M env steps" in md
    assert "bfloat16 / float32 step time at depth 64: 0.75" in md
    assert "| 4 | 1.48 | 18,769 | 19,000 | 20,000 | 1.46 |" in md
    assert "| 5 | seeds8_d4 | w | timeout: timed out after 40 s |" in md
    with_eval = {"item": "train_d4_eval", "stage": 5, "what": "w", "status": "ok", "train_env_steps_per_s": 21_000.0,
                 "env_steps_per_s_with_eval": 20_000.0, "eval_s": 2.0, "projected_hours": 1.39}
    assert "| 4 | 1.48 | 18,769 | 20,000 | 21,000 | 1.39 |" in bench.table(recs + [with_eval], meta)
    assert "device: H200 (gpu)" in md and "jax 0.11.2" in md


def test_table_shows_cpu_estimates_beside_measured_peaks():
    """Per item: the CPU estimate of the same spec, XLA's figure on the device, the measured peak and their
    ratio; an item whose spec differs from the estimate's, or that has none, says so instead of a number."""
    meta = {"item": "meta", "tiny": False, "date": "2026-01-01 00:00", "commit": "abc", "machine": "m",
            "gpu": "NVIDIA H200", "python": "3.12", "estimates": "est.json"}
    spec = {"kind": "train", "depth": 4}
    prov = {"machine": "AMD EPYC, 2 CPU cores", "date": "2026-01-01 00:00", "commit": "c0ffee", "jax": "0.10.2"}
    estimates = {"items": [
        {"item": "train_d4", "tiny": False, "spec": spec, **prov, "programs": {"epoch": {"peak": 8 * GiB}}},
        {"item": "mem_d1024", "tiny": False, "spec": {**spec, "depth": 1024}, **prov,
         "programs": {"epoch": {"peak": 20 * GiB}}},
        {"item": "fit_d1024", "tiny": False, "spec": {"kind": "fit"}, **prov, "date": "2026-01-01 00:05", "programs": {"sgd": [
            {"remat": False, "batch_size": 512, "peak": 2 * GiB}, {"remat": False, "batch_size": 1024, "peak": 4 * GiB},
            {"remat": True, "batch_size": 2048, "peak": 3 * GiB}]}}]}
    recs = [{"item": "train_d4", "stage": 1, "what": "w", "status": "ok", "spec": spec, "xla_bytes": 9 * GiB,
             "peak_bytes_in_use": 10 * GiB},
            {"item": "mem_d1024", "stage": 2, "what": "w", "status": "ok", "spec": {**spec, "depth": 512},
             "xla_bytes": 21 * GiB, "peak_bytes_in_use": 22 * GiB},
            {"item": "fit_d1024", "stage": 2, "what": "w", "status": "ok", "spec": {"kind": "fit"}, "tried": [
                {"remat": False, "batch_size": 512, "status": "ok", "xla_bytes": 2.5 * GiB, "peak_bytes_in_use": 3 * GiB},
                {"remat": False, "batch_size": 1024, "status": "ok", "xla_bytes": 5 * GiB, "peak_bytes_in_use": 5 * GiB},
                {"remat": False, "batch_size": 2048, "status": "failed", "error": "out of memory"},
                {"remat": True, "batch_size": 2048, "status": "ok", "xla_bytes": 3 * GiB, "peak_bytes_in_use": 6 * GiB}],
             "largest_batch": 1024, "largest_batch_remat": 2048},
            {"item": "seeds4_d4", "stage": 3, "what": "w", "status": "timeout", "error": "timed out after 35 s",
             "spec": spec},
            {"item": "env_ant", "stage": 4, "what": "w", "status": "ok", "spec": {"kind": "env"}, "env_steps_per_s": 1e6}]
    md = bench.table(recs, meta, estimates)
    assert "| s per call | CPU estimate | XLA here | measured peak | measured / CPU estimate | result |" in md
    assert "| 1 | train_d4 | w | ok |  |  | 8.00 GiB | 9.00 GiB | 10.00 GiB | 1.25 |" in md
    assert "| 2 | mem_d1024 | w | ok |  |  | no CPU estimate (spec changed) | 21.00 GiB | 22.00 GiB |  |" in md
    assert "| 2 | fit_d1024 | w | ok |  |  | 4.00 GiB | 5.00 GiB | 5.00 GiB | 1.25 |" in md  # its largest batch
    assert "| 3 | seeds4_d4 | w | timeout: timed out after 35 s |  |  | no CPU estimate |  |  |  |" in md
    assert "| 4 | env_ant | w | ok |  |  |  |  |  |  | 1,000,000 env steps/s |" in md
    assert ("CPU estimates from train_d4, fit_d1024: AMD EPYC, 2 CPU cores, 2026-01-01 00:00 to 2026-01-01 00:05, "
            "commit c0ffee, jax 0.10.2.") in md
    tiny = bench.table(recs, {**meta, "tiny": True}, estimates)  # the entries are of the GPU sizes
    assert "| 1 | train_d4 | w | ok |  |  | no CPU estimate | 9.00 GiB |" in tiny
    assert "est.json" in md
    md = bench.table(recs, meta)  # no estimates file
    assert "| 1 | train_d4 | w | ok |  |  | no CPU estimate | 9.00 GiB | 10.00 GiB |  |" in md
    assert "CPU estimates from" not in md


def test_command_buffer_options_are_xla_options():
    """Every compile option of the plan's variants is one this XLA knows, with a value of its type (a CPU
    compile checks the GPU's options too): a misspelt option would fail only on a GPU, in its call."""
    import jax
    import jax.numpy as jnp

    plan = {i["name"]: i for i in bench.items(False)}
    assert plan["train_d64"]["spec"]["variants"] == bench.CMDBUF_VARIANTS[:1]
    assert [v["name"] for v in plan["d64_cmdbuf_options"]["spec"]["variants"]] == [
        "cmdbuf", "cmdbuf_concurrent", "cmdbuf_unroll_loops"]
    lowered = jax.jit(lambda x: 2 * x).lower(jnp.ones(3))
    for v in bench.CMDBUF_VARIANTS:
        lowered.compile(compiler_options=v["compiler_options"])
    with pytest.raises(Exception, match="not a valid enum value"):
        lowered.compile(compiler_options={"xla_gpu_enable_command_buffer": "FUSION,WHIL"})


def test_fused_block_plan_runs_every_training_item_with_fused_blocks():
    """--fused-block: the same items with the same limits, each train and fit spec (its variants inherit it) with
    fused_block; the env items as they were; without it the specs are the plain ones (the CPU estimates' keys)."""
    for tiny, only in ((False, None), (True, None), (False, ["train_d64", "fit_d1024", "env_ant", "d64_fused"])):
        plain, fused = bench.select(tiny, only, False), bench.select(tiny, only, True)
        assert [(i["name"], i["limit_s"]) for i in fused] == [(i["name"], i["limit_s"]) for i in plain]
        for p, f in zip(plain, fused):  # (d64_fused compares the plain step with the fused one: as it was)
            trains = p["spec"]["kind"] in ("train", "fit") and p["name"] != "d64_fused"
            assert "fused_block" not in p["spec"]
            assert f["spec"] == ({**p["spec"], "fused_block": True} if trains else p["spec"])
            assert f["what"].endswith("[fused blocks]") == trains
    assert any(i["spec"]["kind"] == "env" for i in bench.select(False, ["env_ant"], True))
    meta = {"item": "meta", "tiny": False, "fused_block": True, "date": "2026-01-01 00:00", "commit": "abc",
            "machine": "m", "gpu": "NVIDIA H200", "python": "3.12"}
    assert bench.table([meta], meta).startswith("### `bash benchmark.sh gpu --fused-block`: 2026-01-01 00:00")


@pytest.mark.slow  # two compiles of a tiny training step
def test_a_variant_that_does_not_compile_is_recorded_and_the_next_runs():
    """A train item's variants, in this process at tiny sizes on point_u_maze: one with an option XLA refuses
    is recorded with its error; the next, another unroll of the same step, still compiles and is timed, and so does
    the step with the blocks as fused kernels."""
    r = {}

    def emit(**fields):
        r.update(fields)

    emit.record = r
    spec = {**bench.TINY, "env_id": "point_u_maze", "kind": "train", "depth": 4, "num_seeds": 1, "remat": False,
            "compute_dtype": "float32", "evaluate": False, "calls": 1, "unroll": 2, "xla_flags": "", "variants": [
                {"name": "refused", "compiler_options": {"xla_gpu_enable_command_buffer": "NO_SUCH_KIND"}},
                {"name": "unroll1", "unroll": 1}, {"name": "fused", "fused_block": True}]}
    bench.measure_train(spec, emit)
    refused, unroll1, fused = r["variants"]["refused"], r["variants"]["unroll1"], r["variants"]["fused"]
    assert fused["params_finite"] is True and fused["step_s"] > 0  # the blocks as fused kernels, on the same state
    assert "NO_SUCH_KIND" in refused["error"] and "step_s" not in refused and refused["compile_s"] >= 0
    assert unroll1["params_finite"] is True and unroll1["step_s"] > 0 and unroll1["compile_s"] > 0
    assert unroll1["step_times_s"] == [unroll1["first_step_s"], unroll1["step_s"]]  # the second call is the timed one
    assert unroll1["train_env_steps_per_s"] == pytest.approx(r["env_steps_per_call"] / unroll1["step_s"])


def test_kernels_plan_without_the_cuda_plugin_is_one_line_and_status_2(tmp_path):
    """`bench.py kernels` compiles for a GPU through jax's CUDA plugin; where it is not installed (the README's
    install) the plan says so in one line, exit status 2, and writes nothing; so do bad depths and a missing --out
    directory, before anything is compiled, plugin or not."""
    import importlib.util

    for bad, says in ((["--depths", "4", "6"], "--depths must be positive multiples of 4 (got 4 6)"),
                      (["--out", str(tmp_path / "no" / "k.jsonl")], "no such directory")):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "kernels", *bad],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1 and says in proc.stderr

    if importlib.util.find_spec("jax_plugins") and any(importlib.util.find_spec(f"jax_plugins.xla_cuda{v}")
                                                       for v in (12, 13)):
        pytest.skip("jax's CUDA plugin is installed here: the plan would compile (minutes)")
    out = tmp_path / "kernels.jsonl"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "kernels", "--depths", "4",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "jax's CUDA plugin" in proc.stderr
    assert not out.exists()


def test_kernels_table_groups_each_rows_kernels():
    """Each row's kernels by group (GEMMs, Pallas kernels, elementwise, reductions, copies, the rest), which sum
    to its kernels per SGD step; a failed row shows its error."""
    ok = {"depth": 64, "variant": "fused", "status": "ok", "compile_s": 28.1, "kernels": 140, "layer_loop_trips": 0,
          "xla_bytes": 3 * GiB, "by_kind": {"fusion __triton_nested_gemm_fusion": 14,
                                            "custom-call __gpu$xla.gpu.triton": 4, "fusion kLoop": 67,
                                            "fusion kInput": 54, "sort": 1}, "train_step_kernels": 98_765}
    bad = {"depth": 4, "variant": "plain", "status": "error", "error": "ValueError: no"}
    lines = bench.kernels_table([ok, bad]).splitlines()
    assert lines[2] == "| 64 | fused | 28.1 | 140 | 14 | 4 | 67 | 54 | 0 | 1 | 0 | 3.00 GiB | 98,765 |"
    assert lines[3].startswith("| 4 | plain | error: ValueError: no |") and lines[3].count("|") == lines[2].count("|")
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
