"""The algorithm blocks the scripts share (flags, network, replay buffer, losses; collection in the two
online scripts, evaluation in crl_depth.py and crl_depth_offline.py) are deliberate copies; this test
keeps them byte-for-byte identical so a fix in one cannot be forgotten in another. Which script holds
which block is declared once, in tools/sync_shared_blocks.py (BLOCKS). Everything else the scripts
share (environments, run plumbing) is imported from crl_envs.py, crl_runs.py and crl_plots.py."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("sync_shared_blocks", os.path.join(ROOT, "tools",
                                                                                  "sync_shared_blocks.py"))
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)


def shared_blocks(script: str) -> dict:
    """{block name: its text} of every block the script holds; asserts it holds each declared block
    once and no other."""
    text = open(os.path.join(ROOT, script)).read()
    blocks = {}
    for name, holders in sync.BLOCKS.items():
        found = sync.find_block(text, name)
        want = 1 if script in holders else 0
        assert len(found) == want, f"{script}: expected {want} '{name}' shared block(s), found {len(found)}"
        if found:
            blocks[name] = found[0]
    return blocks


def test_reference_script_has_every_block():
    blocks = shared_blocks(sync.REFERENCE)
    assert set(blocks) == set(sync.BLOCKS)
    assert "gamma: float" in blocks["algorithm flags"] and "width: int" in blocks["network flags"]
    assert "class ResidualTrunk" in blocks["network"]
    assert "def buffer_sample" in blocks["replay buffer"]
    assert "def infonce_loss" in blocks["losses"] and "def make_sgd_update" in blocks["losses"]
    assert "def make_collect" in blocks["collection"] and "def make_evaluate" in blocks["evaluation"]


@pytest.mark.parametrize("name", list(sync.BLOCKS))
def test_banner_names_the_scripts_that_keep_it(name):
    first_line = shared_blocks(sync.REFERENCE)[name].splitlines()[0]
    assert first_line == f"# SHARED BLOCK: {name} (keep identical in {sync.holders_phrase(name)})"


@pytest.mark.parametrize("script", sync.SCRIPTS[1:])
def test_blocks_identical_to_crl_depth(script):
    reference = shared_blocks(sync.REFERENCE)
    copy = shared_blocks(script)
    assert set(copy) == {name for name, holders in sync.BLOCKS.items() if script in holders}
    for name in copy:
        assert copy[name] == reference[name], f"shared block '{name}' of {script} differs from crl_depth.py"
