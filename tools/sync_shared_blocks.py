"""Copies the SHARED BLOCKs of crl_depth.py (the algorithm code the scripts share: flags, network, replay
buffer, losses, collection, evaluation) into the other scripts that hold them, so a fix made in crl_depth.py
reaches every copy. BLOCKS below says which scripts hold which block; tests/test_shared_blocks.py reads it.

    python tools/sync_shared_blocks.py          # rewrite the copies
    python tools/sync_shared_blocks.py --check  # exit 1 and name the blocks that differ
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = "crl_depth.py"  # holds every block; its copy is the one the others follow
SCRIPTS = (REFERENCE, "crl_depth_offline.py", "crl_collector_learner.py")
# block name -> the scripts that hold it (a block is marked `# SHARED BLOCK: name (keep identical in ...)`
# ... `# END SHARED BLOCK: name`, both at column 0, also inside a class or function body)
BLOCKS = {
    "algorithm flags": SCRIPTS,
    "network flags": SCRIPTS,
    "network": SCRIPTS,
    "replay buffer": SCRIPTS,
    "losses": SCRIPTS,
    "online flags": (REFERENCE, "crl_collector_learner.py"),
    "collection": (REFERENCE, "crl_collector_learner.py"),
    "evaluation": (REFERENCE, "crl_depth_offline.py"),
    "online training state": (REFERENCE, "crl_collector_learner.py"),
    "online jit": (REFERENCE, "crl_collector_learner.py"),
    "online estimate": (REFERENCE, "crl_collector_learner.py"),
    "online compile": (REFERENCE, "crl_collector_learner.py"),
}


def block_pattern(name: str) -> str:
    """From the banner `# SHARED BLOCK: name (keep identical in ...)` to `# END SHARED BLOCK: name`."""
    return (rf"^# SHARED BLOCK: {re.escape(name)} \(keep identical in [^)\n]*\)$.*?"
            rf"^# END SHARED BLOCK: {re.escape(name)}$")


def find_block(text: str, name: str) -> list[str]:
    """Every copy of block `name` in a script's text (one where the script holds it)."""
    return re.findall(block_pattern(name), text, flags=re.S | re.M)


def holders_phrase(name: str) -> str:
    """What the block's banner says about who keeps it: 'all three scripts' or 'a.py and b.py'."""
    holders = BLOCKS[name]
    return "all three scripts" if len(holders) == len(SCRIPTS) else " and ".join(holders)


def main() -> int:
    check = "--check" in sys.argv[1:]
    reference = open(os.path.join(ROOT, REFERENCE)).read()
    differ = []
    for script in SCRIPTS[1:]:
        path = os.path.join(ROOT, script)
        if not os.path.exists(path):
            continue
        text = open(path).read()
        for name, holders in BLOCKS.items():
            if script not in holders:
                continue
            (ref_block,) = find_block(reference, name)
            found = find_block(text, name)
            if len(found) != 1:
                print(f"{script}: expected one '{name}' block, found {len(found)}", file=sys.stderr)
                return 2
            if found[0] != ref_block:
                differ.append(f"{script}: {name}")
                text = text.replace(found[0], ref_block)
        if not check:
            open(path, "w").write(text)
    for line in differ:
        print(("differs: " if check else "updated: ") + line)
    return 1 if (check and differ) else 0


if __name__ == "__main__":
    sys.exit(main())
