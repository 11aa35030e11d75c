"""One persistent JAX compilation cache for the whole test session, in-process and subprocess runs
alike: set here, before anything imports jax, and inherited by every subprocess through os.environ.
A tiny program that several tests (or several runs of a script) compile is compiled once. The tests run
on the CPU backend, also where a GPU is present."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests check numbers on the CPU, on a machine with a GPU too: there a GPU backend would take each process's
# share of its memory (the workers and the runs they start at once), have one device where the parallel tests
# force two CPU devices, and round float32 matmuls in TF32 where the tolerances are a CPU's. GPU speed and memory
# are `bash benchmark.sh gpu`'s. JAX_PLATFORMS set by the user wins.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The scripts and tools the tests start compile with XLA's optimisation passes off: tiny runs took 0-25% less
# time so (docs/ci.md), and the programs compute the same up to float32 rounding. The test workers'
# own backend, initialised here before the flag is set, keeps XLA's defaults (the fidelity tests compare
# in-process results with recorded ones); so does the learning test's run (tests/test_point_maze_learning.py).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
import jax  # noqa: E402

jax.devices()
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

# Scheduling on the two workers (pytest.ini: -n 2 --dist loadfile: each file on one worker, so its module
# fixtures are built once). The files start in this order, the longest first, so that no long one is
# left to run alone at the end; files whose runs compile the same programs (the collector-learner's, the
# tiny reacher runs of crl_depth.py) are spread out, so that the later ones find those programs in the
# persistent cache instead of compiling them at the same time on the other worker.
LONGEST_FIRST = ("test_point_maze_learning.py", "test_offline.py", "test_collector_learner_parallel.py", "test_e2e.py",
                 "test_forks.py", "test_parallel.py", "test_long_runs.py", "test_gpu_bench.py", "test_offline_parallel.py",
                 "test_replicate.py", "test_collector_learner_long_runs.py", "test_paper_code.py", "test_envs.py",
                 "test_estimate.py", "test_arms.py", "test_benchmark.py", "test_paper_figures.py",
                 "test_collector_learner.py", "test_checkpoint_structure.py", "test_losses.py", "test_mazes.py",
                 "test_offline_long_runs.py", "test_curves.py")


def pytest_configure(config):
    config.option.loadscopereorder = False  # xdist would order the files by their numbers of tests


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the tests of a file keep their order
