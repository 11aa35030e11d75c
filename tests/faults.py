"""Runs one of the scripts with a fault injected from outside (the scripts hold no test hooks):

    python tests/faults.py --stall-at-epoch N crl_depth.py FLAGS...
        hangs after writing epoch N's state.msgpack.tmp, before the rename over state.msgpack (prints
        "test hook: stalled ..." first), so that a test can SIGKILL the run mid-checkpoint;
    python tests/faults.py --nan-at-epoch N [--nan-leaf PATH] crl_depth.py FLAGS...
        sets the training-state leaf PATH (default agent/log_alpha) to NaN before epoch N of a fresh
        run, for the divergence guard.

It patches crl_runs (save_state, os.replace, compile_all) in this process and then runs the script
as __main__; the script's `from crl_runs import ...` picks up the patched functions."""

import argparse
import os
import runpy
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import crl_runs  # noqa: E402


def stall_at(epoch: int) -> None:
    save_state, replace, saving = crl_runs.save_state, os.replace, {}

    def save_state_noting_epoch(path, header, e, *rest):
        saving["epoch"] = e
        return save_state(path, header, e, *rest)

    def stalling_replace(src, dst):
        if dst.endswith(crl_runs.STATE_FILE) and saving.get("epoch") == epoch:
            print(f"test hook: stalled before renaming {src}", flush=True)
            time.sleep(3600)
        return replace(src, dst)

    crl_runs.save_state, os.replace = save_state_noting_epoch, stalling_replace


def nan_at(epoch: int, leaf: str) -> None:
    compile_all = crl_runs.compile_all

    def with_nan(ts):
        flat, treedef = jax.tree_util.tree_flatten_with_path(ts)
        names = [crl_runs._path_name(p) for p, _ in flat]
        assert leaf in names, f"no leaf {leaf} in the training state"
        return jax.tree_util.tree_unflatten(treedef, [x + jnp.nan if name == leaf else x
                                                      for name, (_, x) in zip(names, flat)])

    def compile_all_with_nan(parts):
        compiled, seconds = compile_all(parts)
        epoch_c, calls = compiled["epoch"], []

        def epoch_fn(ts, *rest):
            calls.append(1)
            return epoch_c(with_nan(ts) if len(calls) == epoch else ts, *rest)

        return {**compiled, "epoch": epoch_fn}, seconds

    crl_runs.compile_all = compile_all_with_nan


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--stall-at-epoch", type=int)
    parser.add_argument("--nan-at-epoch", type=int)
    parser.add_argument("--nan-leaf", default="agent/log_alpha")
    parser.add_argument("script")
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    if opts.stall_at_epoch is not None:
        stall_at(opts.stall_at_epoch)
    if opts.nan_at_epoch is not None:
        nan_at(opts.nan_at_epoch, opts.nan_leaf)
    script = os.path.join(ROOT, opts.script)
    sys.argv = [script, *opts.flags]
    runpy.run_path(script, run_name="__main__")
