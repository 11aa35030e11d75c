"""The one measurement tool: speed, memory and the ops a step executes, for the training step, the SGD step
alone and the envs stepped alone; at the paper's sizes on a GPU, at small sizes on a CPU. Three plans, each
a list of measurements run one by one, each in its own process with its own time limit (a hung compile or an
out-of-memory stops that measurement alone; it is recorded as a row, status timeout or error), and a fourth
that needs no GPU to count what a GPU would launch:

  python tools/bench.py gpu [--tiny] [--only ITEM...] [--fused-block]
                                                        `bash benchmark.sh gpu`: the GPU numbers in one call
                                                        of at most 8 minutes (gpu.jsonl, gpu.md)
  python tools/bench.py sweep [--depths D...] ...       `bash benchmark.sh speed`: compile s, time per step,
                                                        memory and ops against depth (speed.jsonl)
  python tools/bench.py env [--env-ids ENV...] ...      envs stepped alone, env steps/s (`benchmark.sh probe`)
  python tools/bench.py kernels [--gpu h100|h200] [--depths D...] [--variants V...]
                                                        the training step compiled by this machine's XLA for an
                                                        H100 or H200 it does not have (jax's CUDA plugin, no GPU):
                                                        the kernels one SGD step launches there, by kind

The measurements (kinds): train, one training step of crl_depth.make_train_fns (collect, insert, sample and
relabel, the SGD steps) on a replay buffer filled with random states (sampling, relabelling and SGD cost what
they cost on real data) and the real env, with its evaluation where asked; sgd, one SGD step alone
(crl_depth.make_sgd_update on a random batch; the scanned network, or a plain unrolled one for comparison);
fit, the largest batch of one SGD step; env, num_envs copies of an env stepped with random actions. Each
records compile seconds, seconds per call (the median of the calls after the first, a warm-up), env steps/s,
XLA's buffer assignment (and on a GPU the device's peak), and the HLO ops one SGD step executes
(crl_estimate.executed_ops: on a GPU each is a kernel or a loop step).

The gpu plan. Five items by default, written as they finish to gpu.jsonl (one JSON object per item, flushed)
and summarised in gpu.md (a markdown table, rewritten after every item):

  1 train_d64, train_d4     humanoid, the paper's defaults (512 envs x 62 steps, 800 SGD steps of
                            batch 512, width 256; depth 64 with its evaluation, 128 eval envs x 1000
                            steps): compile s, s per training step, env steps/s (with the evaluation:
                            one per epoch of the paper's 100M-step schedule), against the paper's A100;
                            train_d64 then times the same step with XLA's command buffers taking in
                            the loops (a compile option), beside its own
  2 seeds8_d64, seeds8_d4   8 seeds in one process (1 seed: train_d64, train_d4)
  3 train_d1024             depth 1024 (actor 512) at the paper's update-to-data ratio, a 20th of its
                            training step: env steps/s and the hours of 100M env steps (no evaluation)
  5 extra (--only ITEM...): d64_unroll1, d64_unroll4, seeds8_d64_bf16; d64_cmdbuf (command buffers as
                            XLA_FLAGS, COMMAND_BUFFERS), d64_cmdbuf_unroll1, d64_cmdbuf_options
                            (CMDBUF_VARIANTS side by side in one process), d64_fused (the blocks as fused
                            kernels, --fused-block: alone, with command buffers, with bfloat16 matmuls;
                            FUSED_VARIANTS),
                            train_d4_eval; mem_d1024[_remat] (one
                            training step at depth 1024, 4 SGD steps after an unroll of 2, without and
                            with --remat: CPU estimate, XLA's buffer assignment, the device's peak);
                            fit_d1024 (the largest batch of one SGD step at depth 1024, without and
                            with --remat); seeds4_d4; bf16_d64; env_humanoid, env_ant,
                            env_arm_push_easy (raw env steps/s, 512 envs, random actions, no network)

Beside each measured peak gpu.md prints the CPU estimate of the same program: XLA's buffer assignment on a
CPU, compiled from the arguments' shapes (crl_estimate.program_figures), read from
tools/gpu_bench_cpu_estimates.json, which `gpu --cpu-estimates` writes on a CPU (no GPU time spent on it);
an item whose spec differs from the file's, or that it lacks, says "no CPU estimate". --tiny runs the items
at tiny sizes on reacher (a CPU, some minutes): a check before GPU time.

    python tools/bench.py gpu --tiny --out /tmp/gpu_tiny     # or: bash benchmark.sh gpu --tiny
    python tools/bench.py gpu --cpu-estimates [--tiny] [--only ITEM...]   # (re)write the CPU estimates
    python tools/bench.py sweep --depths 4 16 64 --out speed.jsonl        # CPU sizes on a CPU, the paper's on a GPU
    python tools/bench.py sweep --targets train_step --remat off --depths 4 --num-seeds 1 2 4 8
    python tools/bench.py env --env-ids point_u_maze point_big_maze --num-envs 1024 --out env_speed.jsonl
"""

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GiB = 2**30

# the paper's humanoid wall-clock on one 80 GB A100 (hours for 100M env steps, evaluation included;
# the wall-clock hours of arXiv 2503.14858): 1.48 h at depth 4, 10.99 h at depth 64
PAPER_HOURS = {4: 1.48, 64: 10.99}
# the paper's limit test: depth 1024 on humanoid_u_maze, about 120M env steps, 134.15 h (the same source)
PAPER_LIMIT_TEST = "the paper's limit test: 134 h for about 120M steps of humanoid_u_maze at depth 1024"
PAPER_STEPS = 100_000_000
UPDATES_PER_ENV_STEP = 800 / (512 * 62)  # the paper's 1:40 ratio: 800 SGD steps per 31,744 env steps

# the paper's defaults (arXiv 2503.14858, table 7); --tiny: sizes that run in seconds on a CPU
PAPER = dict(env_id="humanoid", num_envs=512, batch_size=512, num_sgd_steps=800, unroll_length=62,
             episode_length=1000, max_replay_size=10_000, min_replay_size=1_000, num_eval_envs=128, width=256,
             total_env_steps=PAPER_STEPS, num_epochs=100)
TINY = dict(env_id="reacher", num_envs=4, batch_size=8, num_sgd_steps=2, unroll_length=5, episode_length=20,
            max_replay_size=40, min_replay_size=20, num_eval_envs=2, width=16, total_env_steps=2_000, num_epochs=2)
TINY_DEPTH = {4: 4, 64: 8, 512: 8, 1024: 8}  # the GPU depths at --tiny (mem_d1024 compiles what train_d64 did)


# XLA's command buffers (CUDA graphs) with the loops taken in: the loop bodies replayed as graphs instead of
# their kernels launched one by one (XLA's default leaves loops out): as XLA_FLAGS for a process (the extra
# d64_cmdbuf items), or as a compile option of one program (train_d64's variant)
COMMAND_BUFFER_KINDS = "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"
COMMAND_BUFFERS = f"--xla_gpu_enable_command_buffer={COMMAND_BUFFER_KINDS}"
# the command buffers' own options, each a variant of d64_cmdbuf_options beside the command buffers alone:
# independent kernels of the graph run as concurrent regions, and loops of known trip count unrolled into it
CMDBUF_VARIANTS = [
    {"name": "cmdbuf", "compiler_options": {"xla_gpu_enable_command_buffer": COMMAND_BUFFER_KINDS}},
    {"name": "cmdbuf_concurrent", "compiler_options": {"xla_gpu_enable_command_buffer": COMMAND_BUFFER_KINDS,
                                                       "xla_gpu_graph_enable_concurrent_region": True}},
    # last: the SGD loop's 800 trips unrolled into one graph may take long to build
    {"name": "cmdbuf_unroll_loops", "compiler_options": {"xla_gpu_enable_command_buffer": COMMAND_BUFFER_KINDS,
                                                         "xla_gpu_command_buffer_unroll_loops": True}}]
# the residual blocks as fused kernels (--fused-block, crl_kernels.py): the same state, another program; alone, with
# command buffers (their graphs take in the kernels too), and with bfloat16 matmuls (half the weights' traffic)
FUSED_VARIANTS = [{"name": "fused", "fused_block": True},
                  {"name": "fused_cmdbuf", "fused_block": True,
                   "compiler_options": {"xla_gpu_enable_command_buffer": COMMAND_BUFFER_KINDS}},
                  {"name": "fused_bf16", "fused_block": True, "compute_dtype": "bfloat16"}]


def train_spec(base: dict, **kw) -> dict:
    """The spec of a training measurement at the sizes of base (PAPER or TINY): one seed, float32, the scan
    unrolled by 2, no evaluation, two calls; kw changes any of them."""
    return {**base, "kind": "train", "num_seeds": 1, "remat": False, "compute_dtype": "float32",
            "evaluate": False, "calls": 2, "unroll": 2, "xla_flags": "", "variants": [], **kw}


def items(tiny: bool) -> list[dict]:
    """The plan: name, stage, what, limit_s (seconds), extra (not in the default plan: --only names it) and the
    spec of the measurement (a train spec's `unroll` is the trunk's scan unroll, `xla_flags` its XLA_FLAGS,
    `variants` other programs of the same step timed in the same process on the same state: another unroll,
    matmul dtype or compile options).

    The default plan's limits sum to 450 s (480 with the wheels' 30 s: the default --budget, 8 minutes): each
    the wall time that item took on one H200 (2026-12-04, docs/results.md), less what it no longer does, and
    5-10% more. There, a process's start and its state took ~23 s (8 seeds: ~30 s, 8 x 5.5 GB of random
    buffers), a training step compiled in 25-51 s (depth 4 to 1024: flat in depth; 8 seeds 51 s), an
    evaluation in ~20 s more, a depth-64 step took 7.9-8.7 s and its first call was within 1% of the later
    ones: so seeds8_d64 and depth 1024 time one call (no warm-up call), and train_d64 times its
    variant (command buffers) in its own process (~32 s to compile, two calls: the first builds the graphs)
    instead of a process of its own. d64_cmdbuf_options' and d64_fused's limits are estimated the same way
    (d64_fused: its fused kernels' compile guessed at ~60 s each), not measured.
    seeds8_d4 is not measured yet (its limit: its 1-seed item's and the 8 seeds' state). An item that ends
    before its limit leaves the seconds it did not use to the items after it; the budget ends the call at 8
    minutes whatever happens. The extra items (the unroll, command buffers as XLA_FLAGS and their options as
    compile options, the fused blocks, the memory, batch,
    bfloat16, 4-seed and env measurements) run with --only, in a second call. --tiny has limits of its own,
    for a laptop's CPU (a 2-core CPU shared with other work took up to ~2 minutes for a training item, ~1
    for an env's)."""
    base = TINY if tiny else PAPER
    d = (lambda x: TINY_DEPTH[x]) if tiny else (lambda x: x)
    limit = (lambda gpu_s, tiny_s: tiny_s) if tiny else (lambda gpu_s, tiny_s: gpu_s)  # seconds

    def train(**kw):
        return train_spec(base, **kw)

    def env(env_id):
        return dict(kind="env", env_id="reacher" if tiny else env_id, num_envs=base["num_envs"],
                    episode_length=base["episode_length"], steps=base["unroll_length"] if tiny else 100, calls=3)

    batches = [8, 16] if tiny else [512 * 2**k for k in range(8)]  # to 65,536
    # the memory items: one short training step (memory does not depend on how many SGD steps or env
    # steps the scans run; 800 SGD steps at depth 1024 would take minutes)
    short = dict(num_sgd_steps=4, unroll_length=2, calls=1)
    # the depth-1024 speed: 39 SGD steps after an unroll of 3 (1,536 env steps), the paper's 1:40 ratio
    # (800 after 62: 31,744) at a 20th of the step
    ratio = dict(num_sgd_steps=2, unroll_length=1) if tiny else dict(num_sgd_steps=39, unroll_length=3)
    return [
        dict(name="train_d64", stage=1, limit_s=limit(150, 250),
             what="humanoid depth 64, paper defaults, evaluation; command buffers with the loops, same process",
             spec=train(depth=d(64), evaluate=True, variants=CMDBUF_VARIANTS[:1])),
        dict(name="train_d4", stage=1, limit_s=limit(55, 200), what="humanoid depth 4, paper defaults",
             spec=train(depth=d(4), calls=3)),
        dict(name="seeds8_d64", stage=2, limit_s=limit(110, 150), what="8 seeds in one process, depth 64, one call",
             spec=train(depth=d(64), num_seeds=8, calls=1)),
        dict(name="seeds8_d4", stage=2, limit_s=limit(70, 150), what="8 seeds in one process, depth 4",
             spec=train(depth=d(4), num_seeds=8)),
        dict(name="train_d1024", stage=3, limit_s=limit(65, 150),
             what="depth 1024 (actor 512), 39 SGD steps after an unroll of 3 (the paper's ratio), one call",
             spec=train(depth=d(1024), actor_depth=d(512), calls=1, **ratio)),
        # extra: --only
        dict(name="d64_unroll1", stage=5, limit_s=limit(80, 150), extra=True, what="depth 64, the layer scan not unrolled",
             spec=train(depth=d(64), unroll=1)),
        dict(name="seeds8_d64_bf16", stage=5, limit_s=limit(130, 150), extra=True,
             what="8 seeds in one process, depth 64, bfloat16 matmuls (where the arithmetic starts to count)",
             spec=train(depth=d(64), num_seeds=8, compute_dtype="bfloat16")),
        dict(name="d64_cmdbuf", stage=5, limit_s=limit(90, 150), extra=True,
             what="depth 64, command buffers with the loops",
             spec=train(depth=d(64), xla_flags=COMMAND_BUFFERS)),
        dict(name="d64_cmdbuf_options", stage=5, limit_s=limit(270, 250), extra=True,
             what="depth 64; then command buffers alone, with concurrent regions, with their loops unrolled",
             spec=train(depth=d(64), variants=CMDBUF_VARIANTS)),
        dict(name="d64_fused", stage=5, limit_s=limit(300, 250), extra=True,
             what="depth 64; then the blocks as fused kernels (--fused-block): alone, with command buffers, bf16",
             spec=train(depth=d(64), variants=FUSED_VARIANTS)),
        dict(name="d64_unroll4", stage=5, limit_s=limit(75, 150), extra=True, what="depth 64, layer scan unrolled by 4",
             spec=train(depth=d(64), unroll=4)),
        dict(name="d64_cmdbuf_unroll1", stage=5, limit_s=limit(90, 150), extra=True,
             what="depth 64, command buffers with the loops, the layer scan not unrolled",
             spec=train(depth=d(64), unroll=1, xla_flags=COMMAND_BUFFERS)),
        dict(name="train_d4_eval", stage=5, limit_s=limit(85, 200), extra=True,
             what="humanoid depth 4, paper defaults, evaluation", spec=train(depth=d(4), evaluate=True, calls=3)),
        dict(name="mem_d1024", stage=5, limit_s=limit(60, 150), extra=True,
             what="training step, depth 1024 (actor 512), batch 512, 4 SGD steps after an unroll of 2",
             spec=train(depth=d(1024), actor_depth=d(512), **short)),
        dict(name="mem_d1024_remat", stage=5, limit_s=limit(60, 150), extra=True, what="same, --remat",
             spec=train(depth=d(1024), actor_depth=d(512), remat=True, **short)),
        dict(name="fit_d1024", stage=5, limit_s=limit(150, 150), extra=True,
             what="largest batch of one SGD step, depth 1024 (actor 512)",
             spec=dict(base, kind="fit", depth=d(1024), actor_depth=d(512), compute_dtype="float32", batches=batches,
                       num_sgd_steps=1)),  # (one SGD step: a training step's 800 of batch 65,536 exceed its data)
        dict(name="seeds4_d4", stage=5, limit_s=limit(75, 150), extra=True,
             what="4 seeds in one process, depth 4, one timed call", spec=train(depth=d(4), num_seeds=4, calls=1)),
        dict(name="bf16_d64", stage=5, limit_s=limit(70, 150), extra=True, what="bfloat16 matmuls, depth 64, one timed call",
             spec=train(depth=d(64), compute_dtype="bfloat16", calls=1)),
        dict(name="env_humanoid", stage=5, limit_s=limit(45, 90), extra=True, what="humanoid stepped alone",
             spec=env("humanoid")),
        dict(name="env_ant", stage=5, limit_s=limit(45, 90), extra=True, what="ant stepped alone", spec=env("ant")),
        dict(name="env_arm_push_easy", stage=5, limit_s=limit(45, 90), extra=True, what="arm_push_easy stepped alone",
             spec=env("arm_push_easy")),
    ]


# ==================================================================================================
# One measurement (a child process): prints one JSON line per phase, each holding all so far
# ==================================================================================================
def device_info() -> dict:
    import jax

    dev = jax.devices()[0]
    info = {"backend": dev.platform, "device": getattr(dev, "device_kind", str(dev)), "jax": jax.__version__}
    for mod in ("jaxlib", "flax", "optax", "brax", "mujoco", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # a version is information, not a requirement
            pass
    return info


def memory_now() -> dict:
    """The device allocator's peak and limit, where the device reports them (GPU; not CPU)."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:
        stats = {}
    return {k: int(stats[k]) for k in ("peak_bytes_in_use", "bytes_limit") if k in stats}


def memory_analysis(compiled) -> dict:
    """XLA's buffer assignment of a compiled executable: temporaries + arguments + outputs, less outputs
    aliased to donated arguments (what the step needs at once; crl_estimate's peak of a program), where
    this jax reports it."""
    try:
        m = compiled.memory_analysis()
        parts = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output", "alias")}
    except Exception:
        return {}
    return {"xla_bytes": parts["temp"] + parts["argument"] + parts["output"] - parts["alias"],
            **{f"xla_{k}_bytes": v for k, v in parts.items()}}


def rss_peak() -> int:
    """The peak resident set of this process (jax, the envs and the compiler included), bytes."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def stablehlo_ops(lowered) -> int:
    """The ops of a lowered program's StableHLO (before XLA): the graph's size, flat in depth when scanned."""
    return sum(1 for line in lowered.as_text().splitlines() if " = " in line)


def sgd_step_ops(compiled, num_sgd_steps: Optional[int]) -> Optional[int]:
    """The HLO ops one SGD step executes (crl_estimate.executed_ops): one trip of the program's loop of
    num_sgd_steps trips, or the whole program for None (an SGD step alone); None where another loop has as
    many trips (no figure rather than a wrong one)."""
    from crl_estimate import executed_ops

    try:
        return executed_ops(compiled.as_text(), num_sgd_steps)
    except ValueError:
        return None


def compile_timed(fn, *args, **options) -> tuple:
    """fn (jitted) lowered and compiled for args: (compiled, its figures: lower and XLA compile seconds, the
    StableHLO ops, XLA's memory)."""
    t = time.perf_counter()
    lowered = fn.lower(*args)
    lower_s = time.perf_counter() - t
    compiled = lowered.compile(**options)
    compile_s = time.perf_counter() - t
    return compiled, {"lower_s": lower_s, "xla_compile_s": compile_s - lower_s, "compile_s": compile_s,
                      "hlo_ops": stablehlo_ops(lowered), **memory_analysis(compiled)}


def error_line(e: BaseException, limit: int = 200) -> str:
    """An exception in one line: its type and the first line of its message, cut at limit characters."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:limit]}"


def median_after_first(times: list[float]) -> float:
    """The step time of timed calls: the median of those after the first (a warm-up), or the one call."""
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


def random_batch(key, batch_size: int, obs_dim: int, goal_dim: int, action_size: int) -> dict:
    """A batch of the SGD step: states and goals normal, actions uniform in [-1, 1]."""
    import jax

    k1, k2, k3 = jax.random.split(key, 3)
    return {"state": jax.random.normal(k1, (batch_size, obs_dim)), "goal": jax.random.normal(k3, (batch_size, goal_dim)),
            "action": jax.random.uniform(k2, (batch_size, action_size), minval=-1.0, maxval=1.0)}


def build(spec: dict, remat: bool, batch_size: int):
    """Args, vectorised env, networks and optimisers of a measurement, as crl_depth.py's main builds them."""
    import crl_depth as C
    import crl_envs as E

    args = C.Args(env_id=spec["env_id"], num_envs=spec["num_envs"], episode_length=spec["episode_length"],
                  num_eval_envs=spec["num_eval_envs"], unroll_length=spec["unroll_length"],
                  num_sgd_steps=spec["num_sgd_steps"], batch_size=batch_size, max_replay_size=spec["max_replay_size"],
                  min_replay_size=spec["min_replay_size"], total_env_steps=spec["total_env_steps"],
                  num_epochs=spec["num_epochs"], depth=spec["depth"], actor_depth=spec.get("actor_depth"),
                  width=spec["width"], repr_dim=spec.get("repr_dim", C.Args.repr_dim), remat=remat, compute_dtype=spec["compute_dtype"],
                  num_seeds=spec.get("num_seeds", 1), fused_block=spec.get("fused_block", False))
    error = C.validate_args(args)
    if error:
        raise ValueError(error)
    env = E.VecGoalEnv(E.make_env(args.env_id), args.num_envs, args.episode_length)
    nets = C.make_networks(args.actor_depth or args.depth, args.depth, args.width, args.repr_dim, env.action_size,
                           remat=remat, compute_dtype=args.compute_dtype, unroll=spec.get("unroll", 2),
                           fused=args.fused_block)
    opts = C.Optimizers(C.adam(args.actor_lr), C.adam(args.critic_lr), C.adam(args.alpha_lr))
    return args, env, nets, opts


def train_program(spec: dict) -> dict:
    """What a training item runs: its env, networks, the jitted initialiser of the state (`init`, of `keys`)
    and the jitted training step (`epoch`, the state donated), as measure_train runs them and as
    --cpu-estimates compiles them from shapes alone."""
    import jax
    import jax.numpy as jnp

    import crl_depth as C
    import crl_envs as E
    import crl_runs as R

    args, env, nets, opts = build(spec, spec["remat"], spec["batch_size"])
    es, n = E.ENVS[args.env_id], args.num_seeds
    obs_dim, goal_dim = es.obs_dim, es.goal_end - es.goal_start
    _, per_train_step, steps_per_epoch = C.schedule(args)  # the paper's: 31 training steps per epoch
    args.num_epochs, args.total_env_steps = 1, C.schedule(args)[0] + per_train_step  # one training step per call

    def fresh(keys):  # one seed: a full buffer of random states and actions, one episode per env
        key, key_agent, key_buffer, key_env = keys
        k1, k2 = jax.random.split(key_buffer)
        shape = (args.max_replay_size, args.num_envs)
        buffer = C.Buffer(state=jax.random.normal(k1, shape + (obs_dim,)),
                          action=jax.random.uniform(k2, shape + (env.action_size,), minval=-1.0, maxval=1.0),
                          episode_id=jnp.zeros(shape, jnp.int32), ptr=jnp.zeros((), jnp.int32),
                          size=jnp.asarray(args.max_replay_size, jnp.int32))
        return C.TrainState(agent=C.agent_init(key_agent, nets, opts, obs_dim, goal_dim, env.action_size),
                            env_state=env.reset(key_env), buffer=buffer, key=key, env_steps=jnp.zeros((), jnp.int32))

    _, train_epoch = C.make_train_fns(args, env, nets, opts, (es.goal_start, es.goal_end))
    return dict(args=args, env=env, nets=nets, es=es, n=n, per_train_step=per_train_step,
                steps_per_epoch=steps_per_epoch, keys=R.seed_keys(list(range(1, n + 1)), 4),
                init=jax.jit(R.seed_map(fresh, n)), epoch=jax.jit(R.seed_map(train_epoch, n), donate_argnums=0))


def sgd_program(spec: dict, remat: bool, batch_size: int) -> dict:
    """What the fit item runs at one batch size: the jitted SGD update (the agent donated), the agent's
    initialiser (`init`, of `key`) and a batch's shapes (`batch_shapes`)."""
    import jax
    import jax.numpy as jnp

    import crl_depth as C
    import crl_envs as E

    es = E.ENVS[spec["env_id"]]
    obs_dim, goal_dim = es.obs_dim, es.goal_end - es.goal_start
    args, env, nets, opts = build(spec, remat, batch_size)
    update = C.make_sgd_update(nets, opts, -args.target_entropy_scale * env.action_size, args.logsumexp_penalty)
    f32 = jnp.float32
    return dict(obs_dim=obs_dim, goal_dim=goal_dim, action_size=env.action_size,
                init=lambda key: C.agent_init(key, nets, opts, obs_dim, goal_dim, env.action_size),
                update=jax.jit(update, donate_argnums=0),
                batch_shapes={"state": jax.ShapeDtypeStruct((batch_size, obs_dim), f32),
                              "goal": jax.ShapeDtypeStruct((batch_size, goal_dim), f32),
                              "action": jax.ShapeDtypeStruct((batch_size, env.action_size), f32)})


def measure_train(spec: dict, emit) -> None:
    import jax
    import jax.numpy as jnp

    import crl_depth as C
    import crl_envs as E
    import crl_runs as R

    p = train_program(spec)
    args, nets, n, keys = p["args"], p["nets"], p["n"], p["keys"]
    per_train_step, steps_per_epoch = p["per_train_step"], p["steps_per_epoch"]
    ts = p["init"](keys)
    # every leaf its own buffer, so that the state can be donated (small leaves may share a constant);
    # the large random ones are distinct already, and copying them would double the peak
    ts = jax.tree.map(lambda x: jnp.copy(x) if x.size < 2**20 else x, ts)
    emit(num_params=int(sum(x[0].size for x in jax.tree.leaves((ts.agent.actor_params, ts.agent.critic_params)))),
         env_steps_per_call=n * per_train_step, paper_train_steps_per_epoch=steps_per_epoch, phase="state built")

    epoch_c, figures = compile_timed(p["epoch"], ts)
    compile_s = figures["compile_s"]
    emit(compile_train_s=compile_s, **figures, sgd_step_ops=sgd_step_ops(epoch_c, args.num_sgd_steps), seed_axis=n > 1,
         phase="train step compiled")
    if spec["evaluate"]:
        eval_env = E.VecGoalEnv(E.make_env(args.env_id, eval=True), args.num_eval_envs, args.episode_length)
        key_eval = keys[:, 0]
        t = time.perf_counter()
        eval_c = jax.jit(R.seed_map(C.make_evaluate(args, eval_env, nets), n)).lower(
            ts.agent.actor_params, key_eval).compile()
        compile_s += time.perf_counter() - t
        emit(compile_eval_s=compile_s - emit.record["compile_train_s"], compile_s=compile_s, phase="evaluation compiled")
    times, finite = [], True
    for i in range(spec["calls"]):
        t = time.perf_counter()
        ts, metrics = epoch_c(ts)
        jax.block_until_ready((ts, metrics))
        times.append(time.perf_counter() - t)
        finite = finite and bool(jnp.all(metrics["train/params_finite"] == 1))
        step_s = median_after_first(times)
        emit(first_step_s=times[0], step_s=step_s, step_times_s=times, params_finite=finite,
             train_env_steps_per_s=n * per_train_step / step_s, env_steps_per_s=n * per_train_step / step_s,
             rss_peak_bytes=rss_peak(), **memory_now(), phase=f"training step {i + 1}")
    if spec["evaluate"]:
        # one timed call, no warm-up: compiled ahead of time, on a device the training steps warmed up
        t = time.perf_counter()
        jax.block_until_ready(eval_c(ts.agent.actor_params, key_eval))
        eval_s, step_s = time.perf_counter() - t, emit.record["step_s"]
        epoch_s = steps_per_epoch * step_s + eval_s  # an epoch of the paper's schedule, its evaluation included
        emit(eval_s=eval_s, eval_env_steps=args.num_eval_envs * args.episode_length,
             env_steps_per_s_with_eval=n * steps_per_epoch * per_train_step / epoch_s,
             projected_hours=(compile_s + spec["num_epochs"] * epoch_s) / 3600, **memory_now(), phase="evaluated")
    variants = {}
    for v in spec.get("variants", []):  # the same step, another program: compiled, then two calls on a warm device
        other = train_program({**spec, **{k: v[k] for k in ("unroll", "compute_dtype", "fused_block") if k in v}})
        t = time.perf_counter()
        try:
            compiled, figures = compile_timed(other["epoch"], ts, compiler_options=v.get("compiler_options"))
        except Exception as e:  # e.g. an option this XLA lacks: the variant's error, and the next one goes on
            variants[v["name"]] = {"error": error_line(e),
                                   "compile_s": time.perf_counter() - t}
            emit(variants=variants, phase=f"variant {v['name']} not compiled")
            continue
        times = []
        try:  # the first call builds what the program builds once (command buffers: their graphs); the second is timed
            for _ in range(2):
                t = time.perf_counter()
                ts, metrics = compiled(ts)
                jax.block_until_ready((ts, metrics))
                times.append(time.perf_counter() - t)
        except Exception as e:  # the state went into the failed call: no variant after it can run
            variants[v["name"]] = {"error": f"call {len(times) + 1}: {error_line(e)}",
                                   "compile_s": figures["compile_s"], "step_times_s": times}
            emit(variants=variants, phase=f"variant {v['name']} failed")
            break
        variants[v["name"]] = {"compile_s": figures["compile_s"], "first_step_s": times[0], "step_s": times[1],
                               "step_times_s": times, "train_env_steps_per_s": n * per_train_step / times[1],
                               "params_finite": bool(jnp.all(metrics["train/params_finite"] == 1))}
        emit(variants=variants, phase=f"variant {v['name']}")  # (the measured peak stays the step's own)


def measure_fit(spec: dict, emit) -> None:
    """One SGD step at each batch size, doubling until one fails or XLA's buffer assignment exceeds the
    device's limit (then it is not run); without --remat, then with it from twice the largest fit."""
    import jax

    limit = memory_now().get("bytes_limit")
    tried, largest = [], {}
    for remat in (False, True):
        start = 2 * largest["off"] if remat and largest.get("off") else spec["batches"][0]
        for b in (b for b in spec["batches"] if b >= start):
            p = sgd_program(spec, remat, b)
            k0, k1 = jax.random.split(jax.random.PRNGKey(0))
            agent, batch = p["init"](k0), random_batch(k1, b, p["obs_dim"], p["goal_dim"], p["action_size"])
            row = {"remat": remat, "batch_size": b}
            try:
                t = time.perf_counter()
                compiled = p["update"].lower(agent, batch, k0).compile()
                row.update(compile_s=time.perf_counter() - t, **memory_analysis(compiled))
                if limit and row.get("xla_bytes", 0) > limit:
                    row.update(status="too large", error=f"XLA needs {row['xla_bytes'] / GiB:.1f} GiB of "
                                                         f"{limit / GiB:.1f}")
                else:
                    t = time.perf_counter()
                    jax.block_until_ready(compiled(agent, batch, k0))
                    row.update(status="ok", step_s=time.perf_counter() - t, **memory_now())
            except Exception as e:  # out of memory, most likely
                row.update(status="failed", error=error_line(e))
            del agent, batch
            tried.append(row)
            if row["status"] == "ok":
                largest["on" if remat else "off"] = b
            emit(tried=tried, largest_batch=largest.get("off"), largest_batch_remat=largest.get("on"),
                 **memory_now(), phase=f"{'remat' if remat else 'no remat'} batch {b}")
            if row["status"] != "ok":
                break


def random_rollout(env, steps: int):
    """roll(state, key) -> state: `steps` steps of env (a crl_envs.VecGoalEnv, auto reset included) with actions
    uniform in [-1, 1] drawn inside one lax.scan."""
    import jax

    def roll(state, key):
        def step(state, k):
            action = jax.random.uniform(k, (env.num_envs, env.action_size), minval=-1.0, maxval=1.0)
            return env.step(state, action), None

        return jax.lax.scan(step, state, jax.random.split(key, steps))[0]

    return roll


def measure_env(spec: dict, emit) -> None:
    import jax

    import crl_envs as E

    env = E.VecGoalEnv(E.make_env(spec["env_id"]), spec["num_envs"], spec["episode_length"])
    state, key = env.reset(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
    t = time.perf_counter()
    roll_c = jax.jit(random_rollout(env, spec["steps"])).lower(state, key).compile()
    emit(compile_s=time.perf_counter() - t, env_steps_per_call=env.num_envs * spec["steps"], phase="compiled")
    times = []
    for i in range(spec["calls"]):
        key, k = jax.random.split(key)
        t = time.perf_counter()
        state = jax.block_until_ready(roll_c(state, k))
        times.append(time.perf_counter() - t)
        step_s = median_after_first(times)
        emit(step_s=step_s, env_steps_per_s=env.num_envs * spec["steps"] / step_s, phase=f"call {i + 1}")


def unrolled_trunk_class():
    """For comparison only (the sgd kind's impl "unrolled"): the same layers, initialisation and skips as
    crl_depth.ResidualTrunk, built by a Python loop over layers, as the original code builds them: every layer
    its own op in the compiled graph (graph size linear in depth)."""
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


def measure_sgd(spec: dict, emit) -> None:
    """One SGD step alone (actor, alpha and critic; crl_depth.make_sgd_update) on a random batch of the env's
    sizes, of the scanned network or the unrolled one (spec impl); num_seeds > 1: jit(vmap(update)) over that
    many agents and batches, as crl_depth.py --num-seeds trains them (1: the plain step). Env steps/s: what one
    SGD step per seed stands for at the paper's 1:40 ratio."""
    import jax
    import jax.numpy as jnp

    import crl_depth as C
    import crl_envs as E

    es = E.ENVS[spec["env_id"]]
    obs_dim, goal_dim = es.obs_dim, es.goal_end - es.goal_start
    action_size = E.make_env(spec["env_id"]).sys.act_size()
    n, b, depth, dtype = spec["num_seeds"], spec["batch_size"], spec["depth"], spec["compute_dtype"]
    if spec["impl"] == "scan":
        nets = C.make_networks(depth, depth, spec["width"], spec["repr_dim"], action_size, remat=spec["remat"],
                               compute_dtype=dtype, unroll=spec.get("unroll", 2))
    else:
        trunk = unrolled_trunk_class()
        nets = C.Networks(*(cls(trunk(depth, spec["width"], compute_dtype=dtype), size)
                            for cls, size in ((C.Actor, action_size), (C.Encoder, spec["repr_dim"]),
                                              (C.Encoder, spec["repr_dim"]))))
    a = C.Args
    opts = C.Optimizers(C.adam(a.actor_lr), C.adam(a.critic_lr), C.adam(a.alpha_lr))
    update = C.make_sgd_update(nets, opts, -a.target_entropy_scale * action_size, a.logsumexp_penalty)

    def one_seed(key):
        key, key_agent, key_batch = jax.random.split(key, 3)
        return (C.agent_init(key_agent, nets, opts, obs_dim, goal_dim, action_size),
                random_batch(key_batch, b, obs_dim, goal_dim, action_size), key)

    seed_axis = n > 1  # one seed: the plain SGD step
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(n)])
    agent, batch, key = jax.tree.map(jnp.copy, jax.jit(jax.vmap(one_seed))(keys))  # own buffers: donatable
    if not seed_axis:
        agent, batch, key = jax.tree.map(lambda x: x[0], (agent, batch, key))
    fn = jax.jit(jax.vmap(update) if seed_axis else update, donate_argnums=0)
    num_params = sum(x[0].size if seed_axis else x.size for x in jax.tree.leaves((agent.actor_params,
                                                                                   agent.critic_params)))
    env_steps_per_call = n / UPDATES_PER_ENV_STEP
    emit(num_params=int(num_params), env_steps_per_call=env_steps_per_call, seed_axis=seed_axis, phase="state built")
    compiled, figures = compile_timed(fn, agent, batch, key)
    emit(**figures, sgd_step_ops=sgd_step_ops(compiled, None), phase="compiled")
    times = []
    for i in range(spec["calls"]):
        t = time.perf_counter()
        agent, _ = jax.block_until_ready(compiled(agent, batch, key))
        times.append(time.perf_counter() - t)
        step_s = median_after_first(times)
        emit(step_s=step_s, step_s_min=min(times[1:] or times), env_steps_per_s=env_steps_per_call / step_s,
             rss_peak_bytes=rss_peak(), **memory_now(), phase=f"call {i + 1}")
    emit(params_finite=bool(C.all_finite(agent) == 1), phase="checked")


def child(spec: dict) -> None:
    sys.path.insert(0, ROOT)
    record = {"status": "running"}

    def emit(**fields):
        record.update(fields)
        print(json.dumps(record), flush=True)

    emit.record = record
    try:
        emit(**device_info(), phase="started")
        {"train": measure_train, "sgd": measure_sgd, "fit": measure_fit, "env": measure_env}[spec["kind"]](spec, emit)
    except Exception as e:
        emit(status="error", error=error_line(e, 300))
        sys.exit(1)
    emit(status="ok", phase="done")


# ==================================================================================================
# CPU estimates (--cpu-estimates): each memory-holding item's programs compiled on the CPU from shapes
# ==================================================================================================
ESTIMATES = os.path.join("tools", "gpu_bench_cpu_estimates.json")


def estimate_item(spec: dict) -> dict:
    """crl_estimate.program_figures of the programs an item compiles, for this backend, from the shapes of
    their arguments (jax.eval_shape: nothing large is allocated): a training item's step (`epoch`), or the
    fit item's SGD update at each of its batch sizes, without and with --remat (`sgd`, one row each)."""
    import jax

    from crl_estimate import program_figures

    if spec["kind"] == "train":
        p = train_program(spec)
        return {"epoch": program_figures(p["epoch"], (jax.eval_shape(p["init"], p["keys"]),), 1)}
    rows, key = [], jax.random.PRNGKey(0)
    for remat in (False, True):
        for b in spec["batches"]:
            p = sgd_program(spec, remat, b)
            agent = jax.eval_shape(p["init"], key)
            try:  # a batch that does not compile is a row with its error, as measure_fit records it
                rows.append({"remat": remat, "batch_size": b,
                             **program_figures(p["update"], (agent, p["batch_shapes"], key))})
            except Exception as e:
                rows.append({"remat": remat, "batch_size": b, "error": error_line(e)})
    return {"sgd": rows}


def cpu_model() -> str:
    model = next((line.split(":", 1)[1].strip() for line in sh(["lscpu"]).splitlines()
                  if line.startswith("Model name:")), "") or platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} CPU cores"


def write_cpu_estimates(plan: list[dict], tiny: bool, path: str, command: str) -> int:
    """Computes the CPU estimate of every item in plan that holds memory (training and fit items) and merges
    it into the JSON file at path (an entry per item and size, replaced when recomputed), rewritten after
    every item. Returns how many failed."""
    os.environ["JAX_PLATFORMS"] = "cpu"  # a CPU's buffer assignment, also on a machine with a GPU
    sys.path.insert(0, ROOT)
    import jax

    data = read_estimates(path) if os.path.exists(path) else {}
    data["about"] = ("XLA's buffer assignment on a CPU (crl_estimate.program_figures, bytes) of the "
                     "programs `tools/bench.py gpu` compiles for each item, from the shapes of their "
                     "arguments; written by `python tools/bench.py gpu --cpu-estimates`")
    entries = data.setdefault("items", [])
    # the commit of the code measured: changes to the estimates file itself (an earlier command's) are not "-dirty"
    changed = [name for name in sh(["git", "diff", "--name-only", "HEAD"]).splitlines()
               if os.path.abspath(os.path.join(ROOT, name)) != os.path.abspath(path)]
    commit = (sh(["git", "describe", "--always"]) or "nogit") + ("-dirty" if changed else "")
    prov = {"command": command, "machine": cpu_model(), "commit": commit,
            "jax": jax.__version__, "backend": jax.default_backend()}
    failed = 0
    for item in (i for i in plan if i["spec"]["kind"] in ("train", "fit")):
        t = time.perf_counter()
        try:
            programs = estimate_item(item["spec"])
        except Exception as e:
            failed += 1
            print(f"{item['name']}: error {error_line(e, 300)}", flush=True)
            continue
        wall = time.perf_counter() - t
        entry = {"item": item["name"], "tiny": tiny, "spec": item["spec"], **prov,
                 "date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "wall_s": round(wall, 1), "programs": programs}
        entries[:] = [e for e in entries if (e["item"], e["tiny"]) != (item["name"], tiny)] + [entry]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        peaks = [r["peak"] for r in programs.get("sgd", []) if "peak" in r] or [programs.get("epoch", {}).get("peak", 0)]
        print(f"{item['name']}: peak {size(max(peaks))}{' (largest batch)' if 'sgd' in programs else ''}, "
              f"{wall:.0f} s", flush=True)
    return failed


def read_estimates(path: str) -> dict:
    """The estimates file (--cpu-estimates); ValueError if it is not one."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the CPU estimates {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ValueError(f"{path} is not a CPU estimates file (no list 'items')")
    return data


def cpu_estimate(record: dict, estimates: Optional[dict], tiny: bool) -> tuple[Optional[dict], str]:
    """The estimates entry of a record's item, size (--tiny or not) and spec, and ''; or None and why none."""
    same = [e for e in (estimates or {}).get("items", []) if (e.get("item"), e.get("tiny")) == (record["item"], tiny)]
    spec = json.dumps(record.get("spec"), sort_keys=True)
    for e in same:
        if json.dumps(e.get("spec"), sort_keys=True) == spec:
            return e, ""
    return None, "no CPU estimate (spec changed)" if same else "no CPU estimate"


def memory_columns(r: dict, estimates: Optional[dict], tiny: bool) -> list[str]:
    """CPU estimate, XLA on this device, measured peak (size) and measured / CPU estimate of a training or
    fit record (the fit item: its largest batch without --remat); four blanks for any other."""
    if r["item"].startswith("env_"):
        return [""] * 4
    entry, why = cpu_estimate(r, estimates, tiny)
    if r["item"].startswith("fit"):
        ok = [x for x in r.get("tried", []) if not x["remat"] and x["status"] == "ok"]
        row = ok[-1] if ok else {}
        est = next((x.get("peak") for x in (entry or {}).get("programs", {}).get("sgd", [])
                    if not x["remat"] and x["batch_size"] == row.get("batch_size")), None) if row else None
        if entry and row and est is None:
            why = f"no CPU estimate at batch {row['batch_size']}"
    else:
        row, est = r, (entry or {}).get("programs", {}).get("epoch", {}).get("peak")
    measured, xla = row.get("peak_bytes_in_use"), row.get("xla_bytes")
    ratio = f"{measured / est:.2f}" if measured and est else ""
    return [size(est) if est else why, size(xla), size(measured), ratio]


# ==================================================================================================
# The suite (parent process: no jax here, so that it takes no GPU memory)
# ==================================================================================================
def last_record(out: str) -> dict:
    """The last line of a child's stdout that parses as a JSON object (a line cut short by a kill does not)."""
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                return record
    return {}


def run_child(spec: dict, timeout: float, env: dict, log, name: str) -> dict:
    """One measurement in its own process: its last record, status ok, timeout or error, and wall_s. Its stderr
    goes to log under a line with name."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)]
    if spec.get("xla_flags"):
        env = dict(env, XLA_FLAGS=" ".join(x for x in (env.get("XLA_FLAGS"), spec["xla_flags"]) if x))
    t0 = time.perf_counter()
    # output into files, not pipes: nothing the child leaves behind can hold the parent up reading them.
    # process_group=0: its own process group, killed whole on a timeout, but in this process session (a
    # process in a new session outlives the command that started it, holding the GPU's memory)
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out_f, stderr=err_f, text=True, process_group=0)
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # not dead 15 s after SIGKILL (stuck in the driver): move on
                pass
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    wall = time.perf_counter() - t0
    log.write(f"===== {name} (exit {proc.returncode}, {wall:.1f} s)\n{err}\n")
    log.flush()
    record = last_record(out)
    if timed_out and record.get("status") != "ok":  # (one that finished measuring and hung on exit is ok)
        record.update(status="timeout", error=f"timed out after {timeout:.0f} s (reached: {record.get('phase', 'start')})")
    elif record.get("status") != "ok":
        tail = (err.strip().splitlines() or ["(no output)"])[-1][:300]
        record.update(status="error", error=record.get("error") or f"exit {proc.returncode}: {tail}")
    elif record.get("params_finite") is False or any(v.get("params_finite") is False
                                                     for v in record.get("variants", {}).values()):
        record.update(status="error", error="non-finite parameters after the timed steps")
    return {**record, "wall_s": round(wall, 2)}


def run_item(item: dict, timeout: float, env: dict, log) -> dict:
    """A gpu plan's item: run_child's record with the item's name, stage, what, limit and spec."""
    record = run_child(item["spec"], timeout, env, log, item["name"])
    return {"item": item["name"], "stage": item["stage"], "what": item["what"], "limit_s": item["limit_s"],
            "timeout_s": round(timeout, 1), **record, "spec": item["spec"]}


def install_wheels(wheels: str, site: str, timeout: float) -> dict:
    found = sorted(f for f in os.listdir(wheels) if f.endswith(".whl"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", site] + [os.path.join(wheels, f) for f in found]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        status = "ok" if proc.returncode == 0 else "error"
        error = None if status == "ok" else (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    except subprocess.TimeoutExpired:
        status, error = "timeout", f"timed out after {timeout:.0f} s"
    return {"item": "wheels", "status": status, "error": error, "wheels": len(found), "site": site,
            "wall_s": round(time.perf_counter() - t0, 2)}


def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
    except Exception:
        return ""


def git_describe() -> str:
    """The commit measured, "-dirty" with uncommitted changes; "nogit" outside a git checkout."""
    return sh(["git", "describe", "--always", "--dirty"]) or "nogit"


def fmt(x, spec=",.0f", scale=1.0) -> str:
    return "" if x is None else format(x / scale, spec)


def size(n) -> str:
    """Bytes in GiB (two decimals), or in MiB or KiB below a hundredth of a GiB (--tiny's); '' for None."""
    if n is None:
        return ""
    for unit, scale in (("GiB", GiB), ("MiB", 2**20)):
        if n >= 0.01 * GiB or unit == "MiB" and n >= 2**20:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def result_text(r: dict) -> str:
    """The one-cell summary of an item's numbers."""
    name = r["item"]
    if name.startswith("fit"):
        rows = r.get("tried", [])
        last = {remat: [x for x in rows if x["remat"] == remat] for remat in (False, True)}
        text = []
        for remat, label in ((False, "without remat"), (True, "with remat")):
            if last[remat]:
                best = r.get("largest_batch_remat" if remat else "largest_batch")
                bad = [x for x in last[remat] if x["status"] != "ok"]
                stop = f", {bad[0]['batch_size']} {bad[0]['status']}" if bad else ""
                peak = [x.get("peak_bytes_in_use") for x in last[remat] if x["status"] == "ok"]
                mem = f" ({peak[-1] / GiB:.1f} GiB)" if peak and peak[-1] else ""
                text.append(f"{label}: largest batch {best or 'none'}{mem}{stop}")
        return "; ".join(text)
    if name.startswith("env_"):
        return f"{fmt(r.get('env_steps_per_s'))} env steps/s" if "env_steps_per_s" in r else ""
    parts = []
    if "train_env_steps_per_s" in r and not name.startswith("mem"):  # (mem: a shortened step, not a speed)
        parts.append(f"{fmt(r['train_env_steps_per_s'])} env steps/s training")
    if "env_steps_per_s_with_eval" in r:
        parts.append(f"{fmt(r['env_steps_per_s_with_eval'])} with evaluation (eval {r['eval_s']:.1f} s)")
    for name, v in r.get("variants", {}).items():
        parts.append(f"{name}: {v['error']}" if "error" in v else
                     f"{name}: {v['step_s']:.3f} s per call (first {v['first_step_s']:.3f}), "
                     f"{fmt(v['train_env_steps_per_s'])} env steps/s (compile {v['compile_s']:.1f} s)")
    return ", ".join(parts)


def table(records: list[dict], meta: dict, estimates: Optional[dict] = None) -> str:
    """gpu.md: the items' rows (with the CPU estimates of their memory, where estimates has them), the
    comparison with the paper and the notes."""
    info = next((r for r in records if r.get("backend")), {})
    versions = ", ".join(f"{k} {info[k]}" for k in ("jax", "jaxlib", "flax", "optax", "brax", "mujoco") if k in info)
    flags = (" --tiny" if meta["tiny"] else "") + (" --fused-block" if meta.get("fused_block") else "")
    lines = [f"### `bash benchmark.sh gpu{flags}`: {meta['date']}, commit {meta['commit']}",
             "", f"machine: {meta['machine']}; GPU: {meta['gpu'] or 'none'}; device: {info.get('device', '?')} "
                 f"({info.get('backend', '?')}); python {meta['python']}, {versions}", "",
             "| stage | item | what | status | compile s | s per call | CPU estimate | XLA here | "
             "measured peak | measured / CPU estimate | result |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    used = {}
    for r in records:
        if "stage" not in r:
            continue
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')}"
        entry = cpu_estimate(r, estimates, meta["tiny"])[0] if not r["item"].startswith("env_") else None
        if entry:
            used.setdefault((entry["machine"], entry["commit"], entry["jax"]), []).append((r["item"], entry["date"]))
        lines.append(f"| {r['stage']} | {r['item']} | {r['what']} | {status} | {fmt(r.get('compile_s'), '.1f')} | "
                     f"{fmt(r.get('step_s'), '.3f')} | {' | '.join(memory_columns(r, estimates, meta['tiny']))} | {result_text(r)} |")
    lines += ["", "Memory: CPU estimate: XLA's buffer assignment on a CPU of the item's program, compiled from its "
                  "arguments' shapes (arguments + outputs - donated + temporaries; `python tools/bench.py gpu "
                  f"--cpu-estimates`, {meta.get('estimates') or ESTIMATES}); XLA here: the same for this device's "
                  "compile of it; measured peak: the device allocator's peak bytes in use of the item's process "
                  "(training items: its state, the step and, for the ones with evaluation, the evaluation; "
                  "fit_d1024: its largest batch without --remat)."]
    if used:
        def dates(got):
            first, last = min(d for _, d in got), max(d for _, d in got)
            return first if first == last else f"{first} to {last}"
        lines += ["CPU estimates from " + "; ".join(f"{', '.join(n for n, _ in got)}: {m}, {dates(got)}, commit {c}, "
                                                    f"jax {j}" for (m, c, j), got in used.items()) + "."]
    by = {r["item"]: r for r in records if "stage" in r}
    lines += ["", "Against the paper (humanoid, one 80 GB A100, 100M env steps; evaluation included):", "",
              "| depth | paper h | paper env steps/s | here: env steps/s with evaluation | training only | projected h |",
              "|---|---|---|---|---|---|"]
    for depth, name in ((4, "train_d4"), (64, "train_d64")):
        r = by.get(name, {})
        if depth == 4 and "env_steps_per_s_with_eval" in by.get("train_d4_eval", {}):  # (an extra item)
            r = by["train_d4_eval"]
        lines.append(f"| {depth} | {PAPER_HOURS[depth]} | {PAPER_STEPS / PAPER_HOURS[depth] / 3600:,.0f} | "
                     f"{fmt(r.get('env_steps_per_s_with_eval'))} | {fmt(r.get('train_env_steps_per_s'))} | "
                     f"{fmt(r.get('projected_hours'), '.2f')} |")
    bf = by.get("bf16_d64", {}).get("step_s")
    notes = []
    for name, n, base in (("seeds4_d4", 4, "train_d4"), ("seeds8_d4", 8, "train_d4"), ("seeds8_d64", 8, "train_d64")):
        sps, one = by.get(name, {}).get("train_env_steps_per_s"), by.get(base, {}).get("train_env_steps_per_s")
        if one and sps:
            notes.append(f"{n} seeds at depth {base[7:]}: {sps / one:.2f}x the env steps/s of 1 seed")
    f32 = by.get("train_d64", {}).get("step_s")
    options = [f"{name} {by[name]['step_s'] / f32:.2f}" for name in by  # (an item of variants: its own line)
               if f32 and name.startswith("d64_") and by[name].get("step_s") and not by[name].get("variants")]
    if f32 and options:
        notes.append("step time at depth 64 against train_d64's (unroll 2, no XLA flags added): " + ", ".join(options))
    for item, r in by.items():
        timed = [f"{name} {v['step_s'] / r['step_s']:.2f}" for name, v in r.get("variants", {}).items()
                 if "step_s" in v and r.get("step_s")]
        if timed:
            notes.append(f"{item}'s variants, step time against its own step ({r['step_s']:.3f} s) in the same process "
                         "(each variant's second call; its first built what it builds once): " + ", ".join(timed))
    deep = by.get("train_d1024", {}).get("train_env_steps_per_s")
    if deep:
        notes.append(f"depth 1024 (actor 512): {deep:,.0f} env steps/s, {PAPER_STEPS / deep / 3600:.1f} h for 100M "
                     f"env steps without evaluation ({PAPER_LIMIT_TEST})")
    if bf and f32:
        notes.append(f"bfloat16 / float32 step time at depth 64: {bf / f32:.2f}")
    if any(name.startswith("mem") for name in by):
        notes.append("mem_d1024: one training step shortened to 4 SGD steps after an unroll of 2 (the paper's: "
                     "800 after 62); its memory does not depend on the scans' lengths")
    if notes:
        lines += ["", "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (benchmark.sh's `die`)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def select(tiny: bool, only: Optional[list[str]], fused_block: bool) -> list[dict]:
    """The items to run: those named (--only), else the default plan; with fused_block each item that trains (a
    train or fit spec) runs its blocks as fused kernels, the same step as another program (its variants too),
    but for an item whose variants already do (d64_fused: the plain step against the fused one)."""
    plan = [i for i in items(tiny) if i["name"] in only] if only else [i for i in items(tiny) if not i.get("extra")]
    if not fused_block:
        return plan
    return [dict(i, spec={**i["spec"], "fused_block": True}, what=f"{i['what']} [fused blocks]")
            if i["spec"]["kind"] in ("train", "fit") and not any(v.get("fused_block") for v in i["spec"].get(
                "variants", [])) else i for i in plan]


def gpu_main(argv: list[str]) -> None:
    names = [i["name"] for i in items(False)]
    p = Parser(prog="bash benchmark.sh gpu", description="The GPU numbers in one call of at most 8 minutes.",
               epilog="\n\n".join(__doc__.split("\n\n")[3:6]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny sizes on reacher, limits for a CPU: a check of every item")
    p.add_argument("--only", nargs="+", metavar="ITEM", help=f"these items only ({', '.join(names)})")
    p.add_argument("--item-timeout", type=float, metavar="S", help="seconds for every item instead of its own limit")
    p.add_argument("--budget", type=float, metavar="S",
                   help="seconds for everything, wheels included; an item gets what is left if less (default: the "
                        "limits' sum plus the wheels' 30 s: 480, at --tiny 930)")
    p.add_argument("--estimates", metavar="FILE", help=f"the CPU estimates to print beside the measured peaks "
                                                       f"(default {ESTIMATES}, if it is there)")
    p.add_argument("--cpu-estimates", action="store_true",
                   help="instead of measuring: compile each training and fit item's programs on the CPU from their "
                        "shapes and write their memory figures into --estimates (merged with what it holds)")
    p.add_argument("--out", metavar="DIR", help="results directory (default: "
                                                "RESULTS_ROOT/gpu__{date}__{git describe})")
    p.add_argument("--results-root", default="benchmark_results", metavar="DIR")
    p.add_argument("--wheels", default=".whl", metavar="DIR",
                   help="wheels to install first, if there are any (tools/gpu_wheels.sh; default .whl)")
    p.add_argument("--site", default=None, metavar="DIR",
                   help="where they go, put on PYTHONPATH (default: $TMPDIR/crl_gpu_site)")
    p.add_argument("--fused-block", action="store_true",
                   help="every item that trains runs its residual blocks as fused kernels (--fused-block), its "
                        "variants too (d64_fused, which compares the two, as it is); the limits stay the plain "
                        "blocks' (a fused program's compile is not measured: an item may run out of its limit)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the results directory; run nothing")
    a = p.parse_args(argv)
    for name in a.only or []:
        if name not in names:
            p.error(f"unknown item '{name}' (one of: {', '.join(names)})")
    if a.item_timeout is not None and a.item_timeout <= 0 or a.budget is not None and a.budget <= 0:
        p.error("--item-timeout and --budget need positive seconds")
    if a.cpu_estimates and a.fused_block:
        p.error("--cpu-estimates writes the estimates of the plain blocks' programs: drop --fused-block")
    plan = select(a.tiny, a.only, a.fused_block)
    budget = a.budget or sum(i["limit_s"] for i in plan) + 30.0
    estimates_path = os.path.join(ROOT, a.estimates or ESTIMATES)
    if a.cpu_estimates:
        if os.path.exists(estimates_path):  # merged into: it must be one
            try:
                read_estimates(estimates_path)
            except ValueError as e:
                p.error(str(e).splitlines()[0])
        if not any(i["spec"]["kind"] in ("train", "fit") for i in plan):
            p.error("--cpu-estimates: none of these items holds a training state (the env items have no estimate)")
        if a.dry_run:
            print(f"dry run: would write the CPU estimates of {', '.join(i['name'] for i in plan)} into {estimates_path}")
            return
        command = "python tools/bench.py gpu" + "".join(f" {x}" for x in argv)
        sys.exit(1 if write_cpu_estimates(plan, a.tiny, estimates_path, command) else 0)
    estimates = None
    if a.estimates or os.path.exists(estimates_path):  # (the default file need not be there)
        try:
            estimates = read_estimates(estimates_path)
        except ValueError as e:
            p.error(str(e).splitlines()[0])
    for i in plan:
        i["limit_s"] = a.item_timeout or i["limit_s"]
    wheels = os.path.join(ROOT, a.wheels) if not os.path.isabs(a.wheels) else a.wheels
    has_wheels = os.path.isdir(wheels) and any(f.endswith(".whl") for f in os.listdir(wheels))
    describe = git_describe()
    date = datetime.datetime.now()
    out = a.out or os.path.join(
        a.results_root, f"gpu{'-tiny' if a.tiny else ''}{'-fused' if a.fused_block else ''}__{date:%Y-%m-%d}__{describe}")
    jsonl, md = os.path.join(out, "gpu.jsonl"), os.path.join(out, "gpu.md")
    if os.path.exists(jsonl):
        print(f"error: {jsonl} already exists; refusing to overwrite it (move it away, or pass --out)", file=sys.stderr)
        sys.exit(1)

    print(f"benchmark gpu{' --tiny' if a.tiny else ''} | results: {out}")
    print(f"plan: {'install ' + a.wheels + '/*.whl (30 s), then ' if has_wheels else ''}{len(plan)} items, "
          f"each in its own process; limits sum to {sum(i['limit_s'] for i in plan):.0f} s, budget {budget:.0f} s "
          f"(an item that ends early leaves its unused seconds to the next)")
    for n, i in enumerate(plan, 1):
        print(f"  [{n}/{len(plan)}] stage {i['stage']} {i['name']} ({i['limit_s']:.0f} s): {i['what']}")
    if a.dry_run:
        print("dry run: nothing run, nothing written")
        return

    deadline = time.monotonic() + budget
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.90")  # most of it for the largest batch, some left over
    meta = {"item": "meta", "tiny": a.tiny, "fused_block": a.fused_block, "date": f"{date:%Y-%m-%d %H:%M}", "commit": describe,
            "command": "bash benchmark.sh gpu" + "".join(f" {x}" for x in argv),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores",
            "gpu": sh(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]),
            "python": platform.python_version(),
            "estimates": os.path.relpath(estimates_path, ROOT) if estimates else None}
    records, failed = [meta], 0
    with open(jsonl, "a") as f, open(os.path.join(out, "gpu.log"), "a") as log:
        def write(record):
            if record is not meta:
                records.append(record)
            f.write(json.dumps(record) + "\n")
            f.flush()
            with open(md, "w") as g:  # after every item: a later hang or kill still leaves the table so far
                g.write(table(records, meta, estimates))

        write(meta)
        if has_wheels:
            site = a.site or os.path.join(os.environ.get("TMPDIR", "/tmp"), "crl_gpu_site")
            r = install_wheels(wheels, site, min(30.0, deadline - time.monotonic()))
            write(r)
            print(f"wheels: {r['status']} ({r['wheels']} into {site}, {r['wall_s']:.0f} s) {r['error'] or ''}", flush=True)
            if r["status"] == "ok":
                env["PYTHONPATH"] = os.pathsep.join(x for x in (site, env.get("PYTHONPATH")) if x)
        saved = 0.0  # what the items so far left unused of their limits
        for n, item in enumerate(plan, 1):
            left = deadline - time.monotonic()
            if left < 5:
                r = {"item": item["name"], "stage": item["stage"], "what": item["what"], "limit_s": item["limit_s"],
                     "status": "skipped", "error": f"the budget of {budget:.0f} s is spent", "wall_s": 0.0,
                     "spec": item["spec"]}
            else:
                r = run_item(item, min(item["limit_s"] + saved, left), env, log)
                saved = max(0.0, saved + item["limit_s"] - r["wall_s"])
            write(r)
            failed += r["status"] != "ok"
            print(f"[{n}/{len(plan)}] {item['name']}: {r['status']} {r.get('error') or ''} | "
                  f"{result_text(r)} | {r['wall_s']:.0f} s", flush=True)
    text = table(records, meta, estimates)
    print("\n" + text + f"\nbenchmark gpu: {len(plan) - failed} of {len(plan)} items ok | results: {out}")
    sys.exit(1 if failed else 0)


# ==================================================================================================
# The sweep: compile s, time per step, memory and ops against depth (bash benchmark.sh speed)
# ==================================================================================================
def has_gpu() -> bool:
    """Asked in a child process: initialising jax here would make this process take (preallocate)
    most of the GPU's memory that the measuring processes need."""
    proc = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"], capture_output=True,
                          text=True)  # (no time limit: a GPU's start may take minutes)
    return proc.stdout.strip().splitlines()[-1:] == ["gpu"]


def sweep_plan(a: argparse.Namespace) -> list[dict]:
    """The sweep's measurements: each target (network: the sgd kind; train_step: the train kind) at every
    (remat, depth, dtype, seeds) of the scanned network, then the unrolled comparison network (network
    target, each dtype, the smallest number of seeds). Every spec carries the fields its table rows show."""
    common = dict(env_id=a.env_id, width=a.width, batch_size=a.batch_size, repr_dim=a.repr_dim, calls=a.iters + 1,
                  num_envs=a.num_envs, unroll_length=a.unroll_length, num_sgd_steps=a.num_sgd_steps,
                  episode_length=a.episode_length, max_replay_size=a.max_replay_size,
                  min_replay_size=a.episode_length, num_eval_envs=a.num_envs, total_env_steps=PAPER_STEPS,
                  num_epochs=100, evaluate=False, unroll=2, xla_flags="")
    kind = {"network": "sgd", "train_step": "train"}
    remats = {"both": (False, True), "off": (False,), "on": (True,)}[a.remat]
    specs = [dict(common, kind=kind[target], target=target, impl="scan", depth=depth, remat=remat,
                  compute_dtype=dtype, num_seeds=n)
             for target in a.targets for remat in remats for depth in a.depths for dtype in a.compute_dtypes
             for n in a.num_seeds]
    if "network" in a.targets:
        specs += [dict(common, kind="sgd", target="network", impl="unrolled", depth=depth, remat=False,
                       compute_dtype=dtype, num_seeds=min(a.num_seeds))
                  for depth in a.unrolled_depths for dtype in a.compute_dtypes]
    return specs


def describe(spec: dict) -> str:
    remat = " remat" if spec["remat"] else ""
    dtype = f" {spec['compute_dtype']}" if spec.get("compute_dtype", "float32") != "float32" else ""
    n = spec.get("num_seeds", 1)
    seeds = f" x{n} seeds" if n != 1 else ""
    return f"{spec['target']:<10} {spec['impl']:<8} depth {spec['depth']:>4}{remat}{dtype}{seeds}"


def sweep_main(argv: list[str]) -> None:
    p = Parser(prog="python tools/bench.py sweep",
               description="Compile s, time per step, memory and the ops of one SGD step against depth: one SGD "
                           "step alone (network) and one training step (train_step), the scanned network with and "
                           "without --remat, and a plain unrolled network for comparison. Sizes: the paper's on a "
                           "GPU, small ones on a CPU (the defaults below). One JSON object per measurement "
                           "(--out, JSON lines); `bash benchmark.sh speed` runs it and tabulates them.")
    p.add_argument("--out", help="JSON-lines file to append one object per measurement to")
    p.add_argument("--log", help="file for the measuring processes' stderr (default: none kept)")
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
    a = p.parse_args(argv)
    import crl_envs as E  # (no jax initialised by importing it)

    if a.env_id not in E.ENVS:
        p.error(f"unknown env id '{a.env_id}' (one of: {', '.join(E.ENVS)})")
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
    if min(a.num_seeds) < 1 or a.iters < 1 or a.timeout <= 0:
        p.error("--num-seeds, --iters and --timeout must be positive")
    a.num_seeds = list(dict.fromkeys(a.num_seeds))  # each once, in the order given
    a.compute_dtypes = list(dict.fromkeys(a.compute_dtypes))
    specs = sweep_plan(a)
    print(f"speed: {len(specs)} measurements | backend {'gpu' if gpu else 'cpu'} | width {a.width} batch {a.batch_size} | "
          f"train step: {a.env_id}, {a.num_envs} envs x {a.unroll_length} steps, {a.num_sgd_steps} SGD steps | "
          + (f"matmuls {' '.join(a.compute_dtypes)} | " if a.compute_dtypes != ["float32"] else "")
          + (f"seeds in one process {' '.join(map(str, a.num_seeds))} | " if a.num_seeds != [1] else "")
          + f"timeout {a.timeout:.0f} s each", flush=True)
    t_start = time.perf_counter()
    unrolled_stop, failures = None, 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(a.log or os.devnull, "a") as log:
        for i, spec in enumerate(specs, 1):
            if spec["impl"] == "unrolled" and unrolled_stop is not None:
                result = {"status": "skipped", "error": f"depth {unrolled_stop} already timed out", "wall_s": 0.0}
            else:
                result = run_child(spec, a.timeout, env, log, describe(spec))
                if spec["impl"] == "unrolled" and result["status"] == "timeout":
                    unrolled_stop = spec["depth"]
            record = {**spec, **result}
            if "peak_bytes_in_use" in record:
                record["device_peak_bytes"] = record["peak_bytes_in_use"]
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if result["status"] == "ok":
                peak = record.get("device_peak_bytes", record["xla_bytes"])
                line = (f"compile {record['compile_s']:6.1f} s | step {1e3 * record['step_s']:9.1f} ms | "
                        f"{record['env_steps_per_s']:10,.0f} env steps/s | peak {peak / 2**20:8.1f} MiB | "
                        f"{record['hlo_ops']} HLO ops")
            else:
                line = f"{result['status']}: {result['error']}"
            print(f"[{i}/{len(specs)}] {describe(spec)} | {line} | elapsed {time.perf_counter() - t_start:.0f} s",
                  flush=True)
            # the unrolled network may time out or fail to compile; the scanned one must not, and no parameter
            # of either may end non-finite
            failures += (spec["impl"] == "scan" and result["status"] != "ok") or record.get("params_finite") is False
    if failures:
        print(f"speed: {failures} measurement(s) of the scanned network failed", flush=True)
        sys.exit(1)


# ==================================================================================================
# Envs stepped alone (bash benchmark.sh probe)
# ==================================================================================================
def env_main(argv: list[str]) -> None:
    p = Parser(prog="python tools/bench.py env",
               description="Env steps per second of goal-conditioned envs stepped alone (no network, no learning): "
                           "num_envs copies through crl_envs.VecGoalEnv (auto reset included, as in training), "
                           "actions uniform in [-1, 1] drawn inside the compiled loop, --steps steps in one jitted "
                           "lax.scan per call; the median of the calls after the first (compile s: the compile "
                           "alone, no call). One JSON line per env id "
                           "(--out, appended) and a Markdown table at the end.")
    p.add_argument("--env-ids", nargs="+", default=["point_u_maze", "point_big_maze", "point_hardest_maze"])
    p.add_argument("--num-envs", type=int, default=1024)
    p.add_argument("--steps", type=int, default=1000, help="steps per call (one lax.scan)")
    p.add_argument("--calls", type=int, default=6, help="calls, the first a warm-up")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for one env (a subprocess)")
    p.add_argument("--out", help="JSON lines file to append to")
    a = p.parse_args(argv)
    import crl_envs as E

    for env_id in a.env_ids:
        if env_id not in E.ENVS:
            p.error(f"unknown env id '{env_id}' (one of: {', '.join(E.ENVS)})")
    for name in ("num_envs", "steps", "calls"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    rows, failures = [], 0
    for env_id in a.env_ids:
        spec = dict(kind="env", env_id=env_id, num_envs=a.num_envs, episode_length=1000, steps=a.steps, calls=a.calls)
        r = run_child(spec, a.timeout, dict(os.environ), sys.stderr, env_id)  # (its stderr: this command's)
        row = {"target": "env_step", "env_id": env_id, "num_envs": a.num_envs, "steps": a.steps,
               **{k: r.get(k) for k in ("status", "error", "compile_s", "step_s", "env_steps_per_s", "backend")},
               "calls": a.calls, "cpus": os.cpu_count(), "machine": platform.machine()}
        rows.append(row)
        failures += r["status"] != "ok"
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print("\n| env | envs | env steps/s (auto reset included) | compile s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['env_id']} | {r['num_envs']:,} | {fmt(r['env_steps_per_s'])} | {fmt(r['compile_s'], '.1f')} |"
              if r["status"] == "ok" else f"| {r['env_id']} | {r['num_envs']:,} | {r['status']}: {r['error']} | |")
    sys.exit(1 if failures else 0)


# ==================================================================================================
# The kernels plan: the training step compiled for a GPU by this machine's XLA, with no GPU
# ==================================================================================================
# what XLA needs to know of a GPU to compile for one it does not have (a GpuTargetConfig, in text): the published
# figures of the SXM cards (132 SMs of compute capability 9.0, 50 MiB of L2), their memory and bandwidth
GPU_TARGETS = {"h100": ("NVIDIA H100 80GB HBM3", 84_929_347_584, 3_352_320_000_000),
               "h200": ("NVIDIA H200", 150_755_016_704, 4_800_000_000_000)}
# the variants of the training step the plan compiles at each depth (spec changes)
KERNEL_VARIANTS = {"plain": {}, "unroll1": {"unroll": 1}, "unroll4": {"unroll": 4}, "remat": {"remat": True},
                   "bf16": {"compute_dtype": "bfloat16"}, "seeds8": {"num_seeds": 8}, "fused": {"fused_block": True},
                   "fused_remat": {"fused_block": True, "remat": True},
                   "fused_bf16": {"fused_block": True, "compute_dtype": "bfloat16"},
                   "fused_seeds8": {"fused_block": True, "num_seeds": 8}}


def gpu_target_config(name: str) -> str:
    kind, memory, bandwidth = GPU_TARGETS[name]
    fields = dict(threads_per_block_limit=1024, threads_per_warp=32, shared_memory_per_block=49152,
                  shared_memory_per_core=233472, threads_per_core_limit=2048, core_count=132, fpus_per_core=128,
                  block_dim_limit_x=2**31 - 1, block_dim_limit_y=65535, block_dim_limit_z=65535,
                  memory_bandwidth=bandwidth, l2_cache_size=52_428_800, clock_rate_ghz=1.98,
                  device_memory_size=memory, shared_memory_per_block_optin=232448, registers_per_core_limit=65536,
                  registers_per_block_limit=65536)
    info = "".join(f"  {k}: {v}\n" for k, v in fields.items())
    return (f"gpu_device_info {{\n{info}  cuda_compute_capability {{ major: 9 }}\n}}\nplatform_name: \"CUDA\"\n"
            f"dnn_version_info {{ major: 9 minor: 7 }}\ndevice_description_str: \"{kind}\"\n")


def kernels_row(spec: dict, sharding) -> dict:
    """One training step of spec compiled for the GPU of sharding's topology: compile s, what one SGD step
    executes by kind (crl_estimate.executed_op_kinds: on a GPU each op is a kernel), what the whole training step
    executes (None where a loop of it has no known trip count), XLA's memory there."""
    import jax

    from crl_estimate import executed_op_kinds

    p = train_program(spec)
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                          jax.eval_shape(p["init"], p["keys"]))
    compiled, figures = compile_timed(p["epoch"], shapes)
    text = compiled.as_text()  # megabytes at the paper's sizes: made once
    kinds = executed_op_kinds(text, spec["num_sgd_steps"])
    trips = kinds.pop("loop trips", 0)
    try:  # the program: one training step, its collection included
        whole = executed_op_kinds(text)
        whole.pop("loop trips", 0)
    except ValueError:  # a loop without a known trip count: the SGD step's figures still stand
        whole = None
    return {**figures, "kernels": sum(kinds.values()), "layer_loop_trips": trips, "by_kind": dict(kinds),
            "train_step_kernels": None if whole is None else sum(whole.values())}


def kernels_table(rows: list[dict]) -> str:
    """The kernels plan's markdown table: a row per depth and variant, its kernels per SGD step by group."""
    groups = [("GEMMs", lambda k: "gemm" in k or "cublas" in k),
              ("Pallas", lambda k: "triton" in k and "custom-call" in k),
              ("elementwise", lambda k: k == "fusion kLoop"), ("reductions", lambda k: k == "fusion kInput"),
              ("copies", lambda k: k == "copy")]
    head = ("| depth | variant | compile s | kernels per SGD step | " + " | ".join(g for g, _ in groups)
            + " | other | layer-loop trips | XLA's memory there | kernels per training step |\n|"
            + "---|" * (len(groups) + 8))
    lines = [head]
    for r in rows:
        what = f"| {r['depth']} | {r['variant']} | "
        if r["status"] != "ok":
            lines.append(what + f"{r['status']}: {r['error']} |" + " |" * (len(groups) + 5))
            continue
        split = [sum(v for k, v in r["by_kind"].items() if test(k)) for _, test in groups]
        lines.append(what + f"{r['compile_s']:.1f} | {r['kernels']:,} | " + " | ".join(f"{n:,}" for n in split)
                     + f" | {r['kernels'] - sum(split):,} | {r['layer_loop_trips']} | {size(r.get('xla_bytes'))} | "
                     + (f"{r['train_step_kernels']:,} |" if r.get("train_step_kernels") is not None else " |"))
    return "\n".join(lines)


def kernels_main(argv: list[str]) -> None:
    p = Parser(prog="python tools/bench.py kernels",
               description="The training step at the paper's sizes (humanoid, 512 envs x 62 steps, 800 SGD steps of "
                           "batch 512, width 256; depth 1024 with an actor of 512), compiled by this machine's XLA "
                           "for a GPU it does not need to have: the kernels one SGD step launches there, by kind, the "
                           "kernels of the whole training step (its collection included) and XLA's memory there. "
                           "Needs jax's CUDA plugin (pip install \"jax[cuda12]\"), no GPU.")
    p.add_argument("--gpu", choices=sorted(GPU_TARGETS), default="h100", help="the GPU to compile for")
    p.add_argument("--depths", type=int, nargs="+", default=[4, 64, 1024])
    p.add_argument("--variants", nargs="+", choices=list(KERNEL_VARIANTS), default=["plain", "unroll1", "fused"])
    p.add_argument("--out", metavar="FILE", help="JSON-lines file to append one object per row to")
    a = p.parse_args(argv)
    if any(d <= 0 or d % 4 for d in a.depths):
        p.error(f"--depths must be positive multiples of 4 (got {' '.join(map(str, a.depths))})")
    if a.out and not os.path.isdir(os.path.dirname(os.path.abspath(a.out))):
        p.error(f"--out {a.out}: no such directory")
    os.environ["JAX_PLATFORMS"] = "cpu"  # jax's own backend stays the CPU's; the plugin only compiles
    import jax
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(platform="cuda", target_config=gpu_target_config(a.gpu),
                                                topology="1x1x1")
    except Exception as e:
        print(f"error: compiling for a GPU needs jax's CUDA plugin (pip install \"jax[cuda12]=={jax.__version__}\"; "
              f"no GPU needed): {error_line(e)}", file=sys.stderr)
        sys.exit(2)
    mesh = topologies.make_mesh(topology, (1,), ("devices",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    meta = (f"{GPU_TARGETS[a.gpu][0]} (compiled for, not run on), jax {jax.__version__}, on "
            f"{cpu_model()}; {datetime.datetime.now():%Y-%m-%d %H:%M}, "
            f"commit {git_describe()}")
    print(meta, flush=True)
    rows = []
    for depth in a.depths:
        for variant in a.variants:
            spec = train_spec(PAPER, depth=depth, actor_depth=512 if depth == 1024 else None,
                              **KERNEL_VARIANTS[variant])
            row = {"depth": depth, "variant": variant, "gpu": a.gpu, "spec": spec, "meta": meta}
            try:
                row.update(status="ok", **kernels_row(spec, sharding))
            except Exception as e:
                row.update(status="error", error=error_line(e))
            rows.append(row)
            print(f"depth {depth} {variant}: " + (f"{row['kernels']:,} kernels per SGD step, compiled in "
                  f"{row['compile_s']:.0f} s" if row["status"] == "ok" else row["error"]), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(kernels_table(rows))
    sys.exit(1 if any(r["status"] != "ok" for r in rows) else 0)


PLANS = {"gpu": gpu_main, "sweep": sweep_main, "env": env_main, "kernels": kernels_main}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":  # internal: one measurement in this process
        return child(json.loads(sys.argv[2]))
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if len(sys.argv) < 2 or sys.argv[1] not in PLANS:
        print(f"error: the first argument names the plan: {', '.join(PLANS)} (python tools/bench.py --help)",
              file=sys.stderr)
        sys.exit(2)
    sys.path.insert(0, ROOT)
    PLANS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
