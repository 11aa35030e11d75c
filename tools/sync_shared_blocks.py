"""Copies the SHARED BLOCKs of crl_depth.py (network, replay buffer, losses: the algorithm) into
crl_depth_offline.py and crl_collector_learner.py, so a fix made in crl_depth.py reaches every copy.

    python tools/sync_shared_blocks.py          # rewrite the copies
    python tools/sync_shared_blocks.py --check  # exit 1 and name the blocks that differ
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = ["network", "replay buffer", "losses"]
COPIES = ["crl_depth_offline.py", "crl_collector_learner.py"]


def block_pattern(name: str) -> str:
    return rf"^# SHARED BLOCK: {re.escape(name)} .*?^# END SHARED BLOCK: {re.escape(name)}$"


def main() -> int:
    check = "--check" in sys.argv[1:]
    reference = open(os.path.join(ROOT, "crl_depth.py")).read()
    differ = []
    for script in COPIES:
        path = os.path.join(ROOT, script)
        if not os.path.exists(path):
            continue
        text = open(path).read()
        for name in BLOCKS:
            (ref_block,) = re.findall(block_pattern(name), reference, flags=re.S | re.M)
            found = re.findall(block_pattern(name), text, flags=re.S | re.M)
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
