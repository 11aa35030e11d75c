"""Env steps per second of goal-conditioned envs stepped alone (no network, no learning).

    python tools/env_speed.py --env-ids point_u_maze point_big_maze --num-envs 1024 [--out speed.jsonl]

Each env id is stepped as num_envs copies through crl_envs.VecGoalEnv (auto reset included, as in
training) with actions uniform in [-1, 1] drawn inside the compiled loop, for --steps steps in one
jitted lax.scan; the time is the best of --repeats calls after a compile call. One JSON line per env
id (to --out, appended, and to stdout) and a Markdown table at the end.
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import crl_envs  # noqa: E402


def random_rollout(env: crl_envs.VecGoalEnv, steps: int):
    """roll(state, key) -> (state, successes): `steps` steps of env with actions uniform in [-1, 1]
    drawn inside one lax.scan (not jitted); also tools/gpu_bench.py's env items."""

    def roll(state, key):
        def step(carry, k):
            state, successes = carry
            action = jax.random.uniform(k, (env.num_envs, env.action_size), minval=-1.0, maxval=1.0)
            state = env.step(state, action)
            return (state, successes + state.metrics["success"].sum()), None

        (state, successes), _ = jax.lax.scan(step, (state, jnp.zeros(())), jax.random.split(key, steps))
        return state, successes

    return roll


def measure(env_id: str, num_envs: int, steps: int, repeats: int) -> dict:
    env = crl_envs.VecGoalEnv(crl_envs.make_env(env_id), num_envs, episode_length=1000)
    rollout = random_rollout(env, steps)

    @jax.jit
    def roll(key):
        return rollout(env.reset(key), key)[1]

    t = time.perf_counter()
    jax.block_until_ready(roll(jax.random.PRNGKey(0)))
    compile_s = time.perf_counter() - t
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(roll(jax.random.PRNGKey(i + 1)))
        times.append(time.perf_counter() - t)
    return {"env_id": env_id, "num_envs": num_envs, "steps": steps, "compile_s": round(compile_s, 2),
            "best_call_s": min(times), "env_steps_per_s": round(num_envs * steps / min(times)),
            "backend": jax.default_backend(), "cpus": os.cpu_count(), "machine": platform.machine()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-ids", nargs="+", default=["point_u_maze", "point_big_maze", "point_hardest_maze"])
    p.add_argument("--num-envs", type=int, default=1024)
    p.add_argument("--steps", type=int, default=1000, help="steps per timed call (one lax.scan)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls; the best is reported")
    p.add_argument("--out", help="JSON lines file to append to")
    a = p.parse_args()
    for env_id in a.env_ids:
        if env_id not in crl_envs.ENVS:
            p.exit(2, f"error: unknown env id {env_id!r}; valid ids: {', '.join(crl_envs.ENVS)}\n")
    for name in ("num_envs", "steps", "repeats"):
        if getattr(a, name) < 1:
            p.exit(2, f"error: --{name.replace('_', '-')} must be at least 1\n")
    rows = []
    for env_id in a.env_ids:
        row = measure(env_id, a.num_envs, a.steps, a.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps({"target": "env_step", **row}) + "\n")
    print("\n| env | envs | env steps/s (auto reset included) | compile s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['env_id']} | {r['num_envs']:,} | {r['env_steps_per_s']:,} | {r['compile_s']:.1f} |")


if __name__ == "__main__":
    main()
