"""One persistent JAX compilation cache for the whole test session, in-process and subprocess runs
alike: set here, before anything imports jax, and inherited by every subprocess through os.environ.
A tiny program that several tests (or several runs of a script) compile is compiled once."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

# Scheduling on the two workers (pytest.ini: -n 2 --dist loadfile). Each group below runs on one worker,
# its files one after the other, so that the tiny runs of the later files load the programs the first
# one compiled from the persistent cache instead of compiling them at the same time on the other
# worker; every other file is a group of its own (its module fixtures are built once). The groups
# start longest first, so that no long one is left to run alone at the end.
GROUPS = {
    "collector-learner": ("test_collector_learner.py", "test_collector_learner_parallel.py",
                          "test_collector_learner_long_runs.py"),
    "online-tiny-reacher": ("test_e2e.py", "test_long_runs.py", "test_parallel.py", "test_slurm.py",
                            "test_paper_figures.py"),
    "offline": ("test_offline.py", "test_offline_parallel.py", "test_offline_long_runs.py"),
}
LONGEST_FIRST = ("collector-learner", "online-tiny-reacher", "offline", "test_point_maze_learning.py",
                 "test_mazes.py", "test_gpu_bench.py", "test_forks.py", "test_benchmark.py", "test_envs.py",
                 "test_paper_code.py", "test_arms.py")
GROUP_OF = {name: group for group, names in GROUPS.items() for name in names}


def group_of(path: str) -> str:
    name = os.path.basename(path.split("::", 1)[0])
    return GROUP_OF.get(name, name)


def pytest_collection_modifyitems(config, items):
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: files keep their order


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with the groups above as its units of work (xdist's own loadgroup marks do not
    reach its scheduler under pytest 9)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # in LONGEST_FIRST's order, not by their numbers of tests

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)
