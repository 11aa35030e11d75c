"""Helpers shared by the long-run and parallel tests of crl_depth.py, crl_depth_offline.py and
crl_collector_learner.py (tests/test_long_runs.py, tests/test_offline_long_runs.py,
tests/test_collector_learner_long_runs.py and the three test*_parallel.py): running a script in a
subprocess with a persistent JAX compilation cache (and forced CPU devices), reading a run
directory (metrics.jsonl, state.msgpack, checkpoints), spoiling a copy of one for the refused-resume
tests, comparing a run with a reference run, and the tiny OGBench-format dataset.

Not a test module: the test files import it as tests.run_dir_helpers (tests/conftest.py puts the
repository root on sys.path) after pytest.register_assert_rewrite("tests.run_dir_helpers"), so
the asserts in here report like the tests' own."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import flax
import numpy as np

import crl_runs


# --- subprocesses ----------------------------------------------------------------------------------
def subprocess_env(cache=None, **extra):
    """os.environ (with the test session's persistent JAX compilation cache, tests/conftest.py) plus
    extra. cache: ignored (the test session's cache is the one used).
    A run on several forced CPU devices compiles afresh: on this jax (0.10.2) a sharded CPU executable
    loaded from the persistent cache hangs in its collectives until XLA aborts the process (seen with
    the offline epoch), so such a run neither reads nor writes the cache."""
    env = dict(os.environ, **extra)
    if extra.get("XLA_FLAGS"):  # e.g. forced devices, with the session's flags (tests/conftest.py)
        env["XLA_FLAGS"] = f"{extra['XLA_FLAGS']} {os.environ.get('XLA_FLAGS', '')}".strip()
    if "xla_force_host_platform_device_count" in env.get("XLA_FLAGS", ""):
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


def run_script(cmd, tmp, cache, devices=1, **extra_env):
    """Runs cmd (a script and its flags; the run goes under tmp / "runs") in tmp with the compilation
    cache in cache, extra_env, and as many forced CPU devices as devices (XLA_FLAGS); asserts it
    succeeded. Returns (the run directory, its metrics.jsonl records, stdout)."""
    if devices > 1:
        extra_env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env = subprocess_env(cache, **extra_env)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (name,) = os.listdir(tmp / "runs")
    run_dir = str(tmp / "runs" / name)
    return run_dir, read_records(run_dir), proc.stdout


def run_line(stdout):
    """The line of a script's output that describes the run (backend, seeds, devices, matmul dtype)."""
    (line,) = [line for line in stdout.splitlines() if line.startswith("run ")]
    return line


def start_and_kill(cmd, tmp, env):
    """Starts cmd (a run writing under tmp / "runs", under tests/faults.py --stall-at-epoch) with env,
    waits until it says it stalled, SIGKILLs it; returns the run directory."""
    log = open(tmp / "killed.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env)
    deadline = time.time() + 900
    while "test hook: stalled" not in (tmp / "killed.log").read_text():
        assert proc.poll() is None and time.time() < deadline, (tmp / "killed.log").read_text()
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = list((tmp / "runs").iterdir())
    return run_dir


def error_lines(stderr):
    """The lines of stderr that start with "error:"."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- reading a run directory -----------------------------------------------------------------------
def read_records(run_dir):
    """The records of run_dir's metrics.jsonl."""
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def untimed(records, timing):
    """records without the keys that depend on wall-clock time: every time/* key and those in timing."""
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k not in timing} for r in records]


def metrics(run_dir, timing):
    """run_dir's metrics.jsonl records without the time/* keys and those in timing."""
    return untimed(read_records(run_dir), timing)


def checksummed(magic, payload):
    """A state file's bytes: the 16 magic bytes, the SHA-256 of payload, payload."""
    return magic + hashlib.sha256(payload).digest() + payload


def read_state(path, magic):
    """The restored contents of the state file at path, after checking its magic bytes and checksum."""
    blob = path.read_bytes()
    assert blob[:16] == magic and hashlib.sha256(blob[48:]).digest() == blob[16:48]
    return flax.serialization.msgpack_restore(blob[48:])


def state_epoch(path, magic):
    """The epoch of the (checked) state file at path."""
    return int(read_state(path, magic)["epoch"])


def snapshot(run_dir):
    """Every file of run_dir, name to bytes."""
    return {p.name: p.read_bytes() for p in run_dir.iterdir()}


def load_params(path):
    """The parameters in the checkpoint file at path (checkpoint.msgpack, checkpoint_seed{s}.msgpack)."""
    return crl_runs.read_networks(str(path))[1]


def flat_params(params):
    """Every leaf of params, raveled and concatenated in the sorted order of their names."""
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    return np.concatenate([np.ravel(flat[name]) for name in sorted(flat)])


# --- spoiling a copy of a run directory ------------------------------------------------------------
def resume_dir(straight_run, tmp_path):
    """A copy of the run directory straight_run, as tmp_path / "run"."""
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run, run_dir)
    return run_dir


def edit_args(run_dir, **changes):
    """Rewrites run_dir's args.json with changes."""
    path = run_dir / "args.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def truncate(run_dir):
    """Cuts run_dir's state.msgpack to half its length."""
    blob = (run_dir / "state.msgpack").read_bytes()
    (run_dir / "state.msgpack").write_bytes(blob[: len(blob) // 2])


def replace_state(run_dir, data):
    """Replaces run_dir's state.msgpack by data."""
    (run_dir / "state.msgpack").write_bytes(data)


def npz_bytes(tmp_path):
    """The bytes of a small .npz file (written as tmp_path / "x.npz")."""
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    return (tmp_path / "x.npz").read_bytes()


def right_magic_wrong_payload(magic):
    """A state file with the right magic bytes and checksum whose payload is no state."""
    payload = flax.serialization.msgpack_serialize({"nothing": np.zeros(2)})
    return checksummed(magic, payload)


# --- comparing runs --------------------------------------------------------------------------------
def assert_same_run(records, reference, params, reference_params, other_seed_params, compared, counts, untrained):
    """Same run up to rounding: exact before training (the two sides untrained(record, reference
    record) gives for epoch 0 are equal); the counts keys equal and the compared metrics within 0.2%
    after one epoch and 2% after two (rounding differences grow with training); final parameters
    within 1% of the reference and 50 times closer to it than to the run of another seed."""
    assert [r["epoch"] for r in records] == [r["epoch"] for r in reference] == [0, 1, 2]
    got, want = untrained(records[0], reference[0])
    assert got == want  # untrained: exact
    for got, want, rtol in zip(records[1:], reference[1:], (2e-3, 2e-2)):
        assert [got[k] for k in counts] == [want[k] for k in counts]
        for name in compared:
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=1e-5, err_msg=name)
    p, ref, other = flat_params(params), flat_params(reference_params), flat_params(other_seed_params)
    assert p.shape == ref.shape
    distance, seeds_apart = np.linalg.norm(p - ref), np.linalg.norm(other - ref)
    assert distance < 1e-2 * np.linalg.norm(ref) and distance < seeds_apart / 50, (distance, seeds_apart)


def assert_seeds_are_single_runs(run_dir, records, single, same_run):
    """A --num-seeds 2 run (seeds 1 and 2) in run_dir, with its records, against single = {seed: (run
    dir, records, stdout)} of each seed run alone: one record per epoch and seed; each seed's records
    and checkpoint_seed{seed}.msgpack pass same_run(records, reference, params, reference_params,
    other_seed_params) against its own single run, with the other seed's as the far point; and no
    checkpoint.msgpack."""
    assert [(r["epoch"], r["seed"]) for r in records] == [(e, s) for e in range(3) for s in (1, 2)]
    for seed in (1, 2):
        ref_dir, ref_records, _ = single[seed]
        same_run([r for r in records if r["seed"] == seed], ref_records,
                 load_params(os.path.join(run_dir, f"checkpoint_seed{seed}.msgpack")),
                 load_params(os.path.join(ref_dir, "checkpoint.msgpack")),
                 load_params(os.path.join(single[3 - seed][0], "checkpoint.msgpack")))
    assert not os.path.exists(os.path.join(run_dir, "checkpoint.msgpack"))


# --- crl_depth_offline.py --------------------------------------------------------------------------
def make_dataset(path, seed=0, lengths=(12,) * 20):
    """An OGBench-format dataset (observations, actions, terminals): 20 episodes of 12 steps."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals = np.concatenate([np.eye(k)[-1] for k in lengths]).astype(np.float32)
    np.savez(path, observations=rng.normal(size=(n, 5)).astype(np.float32),
             actions=rng.uniform(-1, 1, size=(n, 3)).astype(np.float32), terminals=terminals)
    return path


def no_ogbench_dir(path):
    """Makes path a directory whose ogbench.py raises ImportError: on a subprocess's PYTHONPATH it
    hides the optional ogbench package (no env evaluation). Returns path."""
    path.mkdir()
    (path / "ogbench.py").write_text("raise ImportError('ogbench is hidden in these tests')\n")
    return path
