"""A clone is the whole product: no file of the repository (git ls-files) names a path outside it.

A user's clone has nothing beside it, so a script, test, tool or page that reads, or points the
reader to, a folder next to the repository works only on the machine where it was written.
Flagged: a relative path that climbs out of the repository (resolved from the file's folder for
markdown, from the repository root, where the scripts run, for everything else), the folders of a
development checkout (spec, data, tools and style.md under a "shared" folder), code that goes above
the repository root (its dirname, its parent, ".." joined to it) and absolute paths of the
development machines."""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "runs", "wandb", "benchmark_results", ".jax_cache", ".whl", "__pycache__",
             ".pytest_cache"}

# (what it is, pattern)
NAMED = [
    ("a development checkout's folder", re.compile(r"\bshared[/\\](spec|data|tools|style\.md)\b")),
    ("a development checkout's folder", re.compile(r"""["']shared["']\s*,\s*["'](spec|data|tools)["']""")),
    ("a folder beside the repository", re.compile(r"""["']\.\.["']\s*,\s*["']shared["']""")),
    ("a folder beside the repository", re.compile(r"(?<![\w.])\.\./shared\b")),
    ("code above the repository root", re.compile(r"dirname\(\s*ROOT\s*\)")),
    ("code above the repository root", re.compile(r"""\bROOT\s*[,/]\s*["']\.\.["']""")),
    ("code above the repository root", re.compile(r"\bROOT\.parent\b")),
    ("an absolute path of a development machine", re.compile(r"(?<![\w.\-])/wor[k]/")),
]
# a relative path: one or more ".." each with its slash (not the tail of "...", "x/.." or "name.."), then a name
RELATIVE = re.compile(r"(?<![\w./\-])((?:\.\./)+)([\w\-.]*)")


def product_files() -> list[str]:
    """The repository's files (git ls-files, with the new ones that .gitignore does not exclude), or
    every file but the run outputs where there is no git."""
    try:
        cmd = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            files += [os.path.relpath(os.path.join(dirpath, f), ROOT) for f in filenames]
    return sorted(files)


def text_of(path: str) -> str | None:
    """The file's text, or None for a binary file (a picture, an array file) or one that is absent."""
    try:
        data = open(os.path.join(ROOT, path), "rb").read()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def outside_paths(path: str, text: str) -> list[str]:
    """'path:line: what: the line' for each place of text that names a path outside the repository."""
    base = os.path.dirname(os.path.join(ROOT, path)) if path.endswith(".md") else ROOT
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        whats = [what for what, pattern in NAMED if pattern.search(line)]
        for m in RELATIVE.finditer(line):
            target = os.path.normpath(os.path.join(base, m.group(1), m.group(2)))
            if os.path.relpath(target, ROOT).startswith(".."):
                whats.append(f"a relative path out of the repository ({m.group(0)})")
        if whats:
            found.append(f"{path}:{n}: {'; '.join(dict.fromkeys(whats))}: {line.strip()[:160]}")
    return found


# the examples below are put together from pieces, so that this file names no such path itself
UP, SHARED, ABOVE = ".." + "/", "sha" + "red", "ROOT"


def test_the_checks_flag_each_kind_of_outside_path():
    """Each pattern catches what it is for, and leaves the repository's own paths alone."""
    bad = [f"see {UP}{SHARED}/spec/paper.md", f"conventions: {SHARED}/style.md",
           f'os.path.join(os.path.dirname({ABOVE}), "x")', f'os.path.join(HERE, "..", "{SHARED}", "data")',
           f'{ABOVE} / ".." / "notes"', "cat /wor" + "k/notes/x", f"python {UP}other_repo/tool.py",
           f'path = {ABOVE}.parent / "x"']
    for line in bad:
        assert outside_paths("tools/x.sh", line), line
    assert outside_paths("docs/x.md", f"[it]({UP}{UP}README.md)")  # from docs/: one level above the root
    good = [f"[README]({UP}README.md)", "runs/.../state.msgpack", 'cd "$(dirname "$0")/.."', "/tmp/run/x",
            "the shared buffer", "# SHARED BLOCK: losses", "tests/data/panda/panda_push_easy.xml"]
    for line in good:
        assert not outside_paths("docs/x.md", line), line


def test_no_file_of_the_repository_names_a_path_outside_it():
    files = product_files()
    assert "README.md" in files and "crl_depth.py" in files
    found = []
    for path in files:
        text = text_of(path)
        if text is not None:
            found += outside_paths(path, text)
    assert not found, "paths outside the repository (a clone has nothing beside it):\n" + "\n".join(found)
