"""Compile seconds, time per step and peak memory versus depth, for `benchmark.sh speed`.

Two things are measured at each depth, each in its own subprocess (a clean process, its own peak
memory, and a timeout that can stop an XLA compile):
  network     one SGD step of actor + alpha + critic (`crl_depth.make_sgd_update`) on a random batch;
  train_step  one full training step (`crl_depth.make_train_fns` with one training step per epoch):
              collect num_envs x unroll_length env steps, insert, sample + relabel, num_sgd_steps SGD
              steps at the paper's 1:40 update-to-data ratio.
Both with the scanned network of crl_depth.py, with and without --remat, and the network step also
with a plain unrolled network (`UnrolledTrunk` below: a Python loop of Dense/LayerNorm/Swish layers,
the way the original code builds it) so that the ratio of compile time and memory is visible.

Seeds and dtype: the train step is what crl_depth.py's main runs for --num-seeds N:
`jit(vmap(train_epoch))` of `crl_depth.make_train_fns` on a TrainState with a leading seed axis of size
N (seed i's state built from PRNGKey(i), one vmapped function for all); with N = 1 the plain
`jit(train_epoch)` (main drops the seed axis for one seed). The network step likewise:
`jit(vmap(sgd_update))` over N agents and N batches, or the plain `jit(sgd_update)` for N = 1
(record field seed_axis: whether the measured function was vmapped). Env steps per call are N times
one seed's. --num-seeds N... measures each N (the cost of the 2nd..Nth seed against N = 1),
--compute-dtypes float32 bfloat16 the dtype of the matmuls (crl_depth.py --compute-dtype); every
(depth, remat, dtype, N) combination is measured.

Compile seconds are those of `jax.jit(f).lower(...).compile()` (lower = trace + StableHLO, then
XLA). Time per step is the median of --iters calls after one warm-up call, each blocked until ready.
Peak memory: on GPU the device's `peak_bytes_in_use`; on CPU the compiled executable's
`memory_analysis()`: temporaries + arguments + outputs, less outputs aliased to donated arguments
(XLA's buffer assignment, what the step needs at once), plus the process's peak resident set size. Writes one JSON object per measurement (--out, JSON lines).

    python tools/speed.py --depths 4 16 64 --width 64 --batch-size 64 --out speed.jsonl
    python tools/speed.py --targets train_step --depths 4 --remat off --num-seeds 1 2 4 8
    python tools/speed.py --targets train_step --depths 4 64 --remat off --compute-dtypes float32 bfloat16
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPDATES_PER_ENV_STEP = 800 / (512 * 62)  # the paper's 1:40 ratio: 800 SGD steps per 31,744 env steps


# ==================================================================================================
# The unrolled network of the original code, for comparison only
# ==================================================================================================
def unrolled_trunk_class():
    """Same layers, initialisation and skips as crl_depth.ResidualTrunk, but built by a Python loop
    over layers: every layer is its own op in the compiled graph (graph size linear in depth)."""
    import flax.linen as nn

    import crl_depth as C

    class UnrolledTrunk(nn.Module):
        depth: int
        width: int
        layer_norm: bool = True
        activation: str = "swish"
        residual: bool = True
        remat: bool = False  # accepted for the same signature as ResidualTrunk; not used
        compute_dtype: str = "float32"  # dtype of the matmuls, as ResidualTrunk's

        @nn.compact
        def __call__(self, x):
            act = nn.swish if self.activation == "swish" else nn.relu

            def layer(h):
                h = C.dense(self.width, self.compute_dtype)(h)
                return act(nn.LayerNorm()(h) if self.layer_norm else h)

            x = layer(x)
            for _block in range(self.depth // 4):
                h = x
                for _layer in range(4):
                    h = layer(h)
                x = h + x if self.residual else h
            return x

    return UnrolledTrunk


def make_networks(impl: str, depth: int, width: int, repr_dim: int, action_size: int, remat: bool,
                  compute_dtype: str = "float32"):
    import crl_depth as C

    if impl == "scan":
        return C.make_networks(depth, depth, width, repr_dim, action_size, remat=remat, compute_dtype=compute_dtype)
    trunk = unrolled_trunk_class()
    return C.Networks(*(cls(trunk(depth, width, compute_dtype=compute_dtype), size)
                        for cls, size in ((C.Actor, action_size), (C.Encoder, repr_dim), (C.Encoder, repr_dim))))


# ==================================================================================================
# One measurement (runs in a child process)
# ==================================================================================================
def measure(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import crl_depth as C
    import crl_envs as E
    from crl_estimate import executed_ops

    env_spec = E.ENVS[spec["env_id"]]
    env = E.make_env(spec["env_id"])
    obs_dim, goal_dim = env_spec.obs_dim, env_spec.goal_end - env_spec.goal_start
    action_size = env.sys.act_size()
    num_seeds, compute_dtype = spec.get("num_seeds", 1), spec.get("compute_dtype", "float32")
    # seed i: key, key_agent, key_batch, key_env split from PRNGKey(i); the state of every seed is built
    # by one vmapped function, with a leading seed axis of size num_seeds (as crl_depth.py's main)
    seed_keys = jnp.stack([jax.random.split(jax.random.PRNGKey(i), 4) for i in range(num_seeds)])
    nets = make_networks(spec["impl"], spec["depth"], spec["width"], spec["repr_dim"], action_size, spec["remat"],
                         compute_dtype)
    opts = C.Optimizers(optax.adam(3e-4), optax.adam(3e-4), optax.adam(3e-4))

    def new_agent(key_agent):
        return C.agent_init(key_agent, nets, opts, obs_dim, goal_dim, action_size)

    if spec["target"] == "network":
        update = C.make_sgd_update(nets, opts, -0.5 * action_size, 0.1)
        b = spec["batch_size"]

        def one_seed(keys):
            key, key_agent, key_batch, _ = keys
            k1, k2, k3 = jax.random.split(key_batch, 3)
            batch = {"state": jax.random.normal(k1, (b, obs_dim)),
                     "action": jax.random.uniform(k2, (b, action_size), minval=-1.0, maxval=1.0),
                     "goal": jax.random.normal(k3, (b, goal_dim))}
            return new_agent(key_agent), batch, key

        state, batch, key = jax.tree.map(jnp.copy, jax.jit(jax.vmap(one_seed))(seed_keys))
        seed_axis = num_seeds > 1  # one seed: the plain SGD step, as measured before --num-seeds existed
        if not seed_axis:
            state, batch, key = jax.tree.map(lambda x: x[0], (state, batch, key))
        fn = jax.jit(jax.vmap(update) if seed_axis else update, donate_argnums=0)
        extra = (batch, key)
        env_steps_per_call = num_seeds / UPDATES_PER_ENV_STEP  # what one SGD step per seed stands for at 1:40
    else:
        args = C.Args(env_id=spec["env_id"], num_envs=spec["num_envs"], episode_length=spec["episode_length"],
                      unroll_length=spec["unroll_length"], num_sgd_steps=spec["num_sgd_steps"],
                      batch_size=spec["batch_size"], max_replay_size=spec["max_replay_size"],
                      min_replay_size=spec["episode_length"], num_epochs=1, depth=spec["depth"],
                      width=spec["width"], repr_dim=spec["repr_dim"], remat=spec["remat"],
                      compute_dtype=compute_dtype, num_seeds=num_seeds)
        prefill_steps, per_train_step, _ = C.schedule(args)
        args.total_env_steps = prefill_steps + per_train_step  # one training step per "epoch"
        error = C.validate_args(args)
        if error:
            raise ValueError(error)
        venv = E.VecGoalEnv(env, args.num_envs, args.episode_length)

        def one_seed(keys):
            key, key_agent, key_batch, key_env = keys
            # a full buffer of random states and actions, one episode per env: sampling, relabelling and
            # SGD cost what they cost on real data (all-zero states would make every goal the same)
            k1, k2 = jax.random.split(key_batch)
            shape = (args.max_replay_size, args.num_envs)
            buffer = C.Buffer(state=jax.random.normal(k1, shape + (obs_dim,)),
                              action=jax.random.uniform(k2, shape + (action_size,), minval=-1.0, maxval=1.0),
                              episode_id=jnp.zeros(shape, jnp.int32), ptr=jnp.zeros((), jnp.int32),
                              size=jnp.asarray(args.max_replay_size, jnp.int32))
            return C.TrainState(agent=new_agent(key_agent), env_state=venv.reset(key_env), buffer=buffer, key=key,
                                env_steps=jnp.zeros((), jnp.int32))

        state = jax.tree.map(jnp.copy, jax.jit(jax.vmap(one_seed))(seed_keys))  # own buffers: donatable
        _, train_epoch = C.make_train_fns(args, venv, nets, opts, (env_spec.goal_start, env_spec.goal_end))
        seed_axis, extra = num_seeds > 1, ()  # as crl_depth.py's main: one seed runs the plain step
        if not seed_axis:
            state = jax.tree.map(lambda x: x[0], state)
        fn = jax.jit(jax.vmap(train_epoch) if seed_axis else train_epoch, donate_argnums=0)
        env_steps_per_call = num_seeds * per_train_step
    agent = state.agent if hasattr(state, "agent") else state
    num_params = sum(x[0].size if seed_axis else x.size  # one seed's
                     for x in jax.tree.leaves((agent.actor_params, agent.critic_params)))

    t0 = time.perf_counter()
    lowered = fn.lower(state, *extra)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    hlo_ops = sum(1 for line in lowered.as_text().splitlines() if " = " in line)
    try:  # the ops one SGD step executes (the launches of a GPU's step): the update's, or one trip of the SGD loop's
        sgd_step_ops = executed_ops(compiled.as_text(), None if spec["target"] == "network" else spec["num_sgd_steps"])
    except ValueError:  # another loop of as many trips: no figure rather than a wrong one
        sgd_step_ops = None

    def call(state):
        out = compiled(state, *extra)
        jax.block_until_ready(out)
        return out[0]

    state = call(state)  # warm-up
    times = []
    for _ in range(spec["iters"]):
        t = time.perf_counter()
        state = call(state)
        times.append(time.perf_counter() - t)
    finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.agent if hasattr(state, "agent")
                                                                         else state) if jnp.issubdtype(x.dtype, jnp.floating))
    step_s = float(np.median(times))
    mem = compiled.memory_analysis()
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform == "gpu" else None
    result = {
        "status": "ok", "backend": device.platform, "device": device.device_kind, "num_params": int(num_params),
        "lower_s": t1 - t0, "xla_compile_s": t2 - t1, "compile_s": t2 - t0, "hlo_ops": hlo_ops,
        "sgd_step_ops": sgd_step_ops,
        "step_s": step_s, "step_s_min": float(min(times)), "env_steps_per_call": env_steps_per_call,
        "env_steps_per_s": env_steps_per_call / step_s, "params_finite": finite, "seed_axis": seed_axis,
        # XLA's buffer assignment: temporaries + arguments + outputs, less outputs aliased to donated arguments
        "xla_bytes": int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                         - mem.alias_size_in_bytes),
        "xla_temp_bytes": int(mem.temp_size_in_bytes), "xla_argument_bytes": int(mem.argument_size_in_bytes),
        "xla_output_bytes": int(mem.output_size_in_bytes), "xla_alias_bytes": int(mem.alias_size_in_bytes),
        "rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if stats:
        result["device_peak_bytes"] = int(stats.get("peak_bytes_in_use", 0))
    return result


# ==================================================================================================
# The sweep (parent process)
# ==================================================================================================
def has_gpu() -> bool:
    """Asked in a child process: initialising jax here would make this process take (preallocate)
    most of the GPU's memory that the measuring processes need."""
    proc = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                          capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[-1:] == ["gpu"]


def plan(a: argparse.Namespace) -> list[dict]:
    common = dict(env_id=a.env_id, width=a.width, batch_size=a.batch_size, repr_dim=a.repr_dim, iters=a.iters,
                  num_envs=a.num_envs, unroll_length=a.unroll_length, num_sgd_steps=a.num_sgd_steps,
                  episode_length=a.episode_length, max_replay_size=a.max_replay_size)
    remats = {"both": (False, True), "off": (False,), "on": (True,)}[a.remat]
    specs = []
    for target in a.targets:
        for remat in remats:
            for depth in a.depths:
                for dtype in a.compute_dtypes:
                    for n in a.num_seeds:
                        specs.append(dict(common, target=target, impl="scan", depth=depth, remat=remat,
                                          compute_dtype=dtype, num_seeds=n))
    if "network" in a.targets:  # the comparison: each dtype, at the smallest number of seeds
        for depth in a.unrolled_depths:
            for dtype in a.compute_dtypes:
                specs.append(dict(common, target="network", impl="unrolled", depth=depth, remat=False,
                                  compute_dtype=dtype, num_seeds=min(a.num_seeds)))
    return specs


def describe(spec: dict) -> str:
    remat = " remat" if spec["remat"] else ""
    dtype = f" {spec['compute_dtype']}" if spec.get("compute_dtype", "float32") != "float32" else ""
    n = spec.get("num_seeds", 1)
    seeds = f" x{n} seeds" if n != 1 else ""
    return f"{spec['target']:<10} {spec['impl']:<8} depth {spec['depth']:>4}{remat}{dtype}{seeds}"


def run_one(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": "error", "error": f"exit {proc.returncode}: {tail}", "wall_s": wall}
    return {**json.loads(lines[-1]), "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, JSON spec
    p.add_argument("--out", help="JSON-lines file to append one object per measurement to")
    p.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64, 256, 1024], help="depths of the scanned network")
    p.add_argument("--unrolled-depths", type=int, nargs="*", default=None,
                   help="depths of the unrolled comparison network (default: 4 16 64 on CPU, 4 16 64 256 on GPU); "
                        "after a timeout the larger ones are skipped")
    p.add_argument("--targets", nargs="+", choices=["network", "train_step"], default=["network", "train_step"])
    p.add_argument("--width", type=int, help="hidden width (default: 256 on GPU, 64 on CPU)")
    p.add_argument("--batch-size", type=int, help="SGD batch size (default: 512 on GPU, 64 on CPU)")
    p.add_argument("--repr-dim", type=int, default=64)
    p.add_argument("--env-id", default="humanoid", help="env of the train step (and obs/action sizes of the network)")
    p.add_argument("--num-envs", type=int, help="train step: parallel envs (default: 512 on GPU, 16 on CPU)")
    p.add_argument("--unroll-length", type=int, default=62, help="train step: env steps per env")
    p.add_argument("--num-sgd-steps", type=int, help="train step: SGD steps (default: the paper's 1:40 ratio, "
                                                     "num_envs x unroll_length x 800 / 31,744)")
    p.add_argument("--episode-length", type=int, default=1000, help="train step: episode and sampling-window length")
    p.add_argument("--max-replay-size", type=int, help="train step: buffer steps per env (default: 10,000 on GPU, 1,000 on CPU)")
    p.add_argument("--remat", choices=["both", "off", "on"], default="both",
                   help="scanned network without and with --remat (both), or only one of them")
    p.add_argument("--num-seeds", type=int, nargs="+", default=[1],
                   help="seeds trained in one process (crl_depth.py --num-seeds), each measured: the state gets a "
                        "leading seed axis of this size and the step is jit(vmap(...)) (N = 1: the plain step); env steps/s "
                        "count all seeds")
    p.add_argument("--compute-dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32"],
                   help="dtypes of the matmuls (crl_depth.py --compute-dtype), each measured")
    p.add_argument("--iters", type=int, default=3, help="timed calls after one warm-up call")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for one measurement (a subprocess)")
    a = p.parse_args()

    if a.one:
        sys.path.insert(0, ROOT)
        print(json.dumps(measure(json.loads(a.one))), flush=True)
        return

    gpu = has_gpu()
    a.width = a.width or (256 if gpu else 64)
    a.batch_size = a.batch_size or (512 if gpu else 64)
    a.num_envs = a.num_envs or (512 if gpu else 16)
    a.max_replay_size = a.max_replay_size or (10_000 if gpu else 1_000)
    a.num_sgd_steps = a.num_sgd_steps or max(1, round(a.num_envs * a.unroll_length * UPDATES_PER_ENV_STEP))
    if a.unrolled_depths is None:
        a.unrolled_depths = [4, 16, 64, 256] if gpu else [4, 16, 64]
    for depth in a.depths + a.unrolled_depths:
        if depth <= 0 or depth % 4:
            p.error(f"depths must be positive multiples of 4 (got {depth})")
    if min(a.num_seeds) < 1:
        p.error(f"--num-seeds must be positive (got {min(a.num_seeds)})")
    a.num_seeds = list(dict.fromkeys(a.num_seeds))  # each once, in the order given
    a.compute_dtypes = list(dict.fromkeys(a.compute_dtypes))
    specs = plan(a)
    print(f"speed: {len(specs)} measurements | backend {'gpu' if gpu else 'cpu'} | width {a.width} batch {a.batch_size} | "
          f"train step: {a.env_id}, {a.num_envs} envs x {a.unroll_length} steps, {a.num_sgd_steps} SGD steps | "
          + (f"matmuls {' '.join(a.compute_dtypes)} | " if a.compute_dtypes != ["float32"] else "")
          + (f"seeds in one process {' '.join(map(str, a.num_seeds))} | " if a.num_seeds != [1] else "")
          + f"timeout {a.timeout:.0f} s each", flush=True)
    t_start = time.perf_counter()
    unrolled_stop, failures = None, 0
    for i, spec in enumerate(specs, 1):
        if spec["impl"] == "unrolled" and unrolled_stop is not None:
            result = {"status": "skipped", "error": f"depth {unrolled_stop} already timed out", "wall_s": 0.0}
        else:
            result = run_one(spec, a.timeout)
            if spec["impl"] == "unrolled" and result["status"] == "timeout":
                unrolled_stop = spec["depth"]
        record = {**spec, **result}
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(record) + "\n")
        if result["status"] == "ok":
            peak = result.get("device_peak_bytes", result["xla_bytes"])
            line = (f"compile {result['compile_s']:6.1f} s | step {1e3 * result['step_s']:9.1f} ms | "
                    f"{result['env_steps_per_s']:10,.0f} env steps/s | peak {peak / 2**20:8.1f} MiB | "
                    f"{result['hlo_ops']} HLO ops")
        else:
            line = f"{result['status']}: {result['error']}"
        elapsed = time.perf_counter() - t_start
        print(f"[{i}/{len(specs)}] {describe(spec)} | {line} | elapsed {elapsed:.0f} s", flush=True)
        if result["status"] == "ok" and not result["params_finite"]:
            print("  error: non-finite parameters after the timed steps", flush=True)
            failures += 1
        elif spec["impl"] == "scan" and result["status"] != "ok":
            failures += 1  # the unrolled network may time out; the scanned one must not
    if failures:
        print(f"speed: {failures} measurement(s) of the scanned network failed", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
