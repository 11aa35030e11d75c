"""The README's set-up command and its two test commands (the default tier and the slow one) are exactly what
.ci/run runs, so CI keeps them true."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _first_bash_block_after(text: str, heading: str) -> str:
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)\n```", section, flags=re.S).group(1).strip()


def test_readme_install_and_test_commands_are_what_ci_runs():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
    install = _first_bash_block_after(readme, "## Set up and run")
    tests = _first_bash_block_after(readme, "Tests:")
    assert "pip install -r requirements.txt" in install and "crl_depth.py" in install
    commands = [line.split("#")[0].strip() for line in tests.splitlines() if line.split("#")[0].strip()]
    assert len(commands) == 2 and all("pytest" in c for c in commands) and commands[1].endswith("-m slow")
    assert install in ci and all(c in ci for c in commands)  # both tiers, each a line of .ci/run
