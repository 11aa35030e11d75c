"""The paper sweep as a SLURM job array: `bash benchmark.sh paper --slurm` (which calls `submit`), then
`status`, `resubmit` and `collect` on the results directory it printed.

    bash benchmark.sh paper --slurm --partition gpu --time 24:00:00 --max-parallel 8 [--dry-run]
    python tools/slurm.py status   RESULTS [--wait]   # every run: done, failed (with its logs), running, pending
    python tools/slurm.py resubmit RESULTS [SBATCH_OPTION...]   # only the failed runs, as a new array
    python tools/slurm.py collect  RESULTS            # runs.tsv + summary.md (tools/benchmark_summary.py)

`submit` (from benchmark.sh; the plan on stdin, one run a line: label, script, env, depth, seed,
flags, tab-separated) writes RESULTS/plan.tsv, RESULTS/meta.txt and RESULTS/slurm/array.sbatch and
submits it with sbatch (--dry-run: prints the script, writes and submits nothing). Array task i runs
line i of plan.tsv: `cd REPO && PYTHON SCRIPT FLAGS --runs-dir RESULTS/runs/LABEL`, the command the
local suite runs, its output in RESULTS/logs/LABEL.log, into the local suite's layout. A flag value
`@buffer:LABEL` is the buffer.npz that run LABEL saved: the runs that name one are a second array that
starts once the runs they name have finished (sbatch --dependency=afterok), the rest start at once. A task that
finds a run directory of its own from an earlier attempt (a requeue after preemption, the time limit
signal, or `resubmit`) continues it with --resume from its last state.msgpack (a directory without
one, stopped before its first checkpoint, is moved to RESULTS/slurm/discarded/ and the run starts
again). Each attempt appends a line to RESULTS/slurm/status/LABEL.tsv (job, host, start, wall
seconds, exit status); that and squeue are all `status` reads, so no SLURM accounting is needed.
Errors: one line on stderr, exit 2, nothing written or submitted; sbatch refusing the array: its
error in one line, exit 1, and what submit had written is removed again.
"""

import argparse
import csv
import datetime
import os
import platform
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN_FIELDS = ("label", "script", "env", "depth", "seed", "flags")
STATUS_FIELDS = ("job", "host", "start", "wall_s", "exit")
FIRST_JOB = "{first job}"  # in stage_options: the job id of the first array, once submitted
REQUEUE_SIGNAL_S = 600  # --time given: SIGUSR1 this long before the limit, and the task requeues itself

# The batch script: bash, self-contained (absolute paths filled in at submission), one run per task.
TASK_SCRIPT = r"""#!/bin/bash
# benchmark.sh paper --slurm: one array task per run of {results}/plan.tsv (task i: line i).
# Written by tools/slurm.py at {date} for: {command}
# Resubmit the failed runs: python tools/slurm.py resubmit {results}
{directives}
set -uo pipefail
cd {repo} || exit 1
results={results_q}
python={python_q}
i=${{SLURM_ARRAY_TASK_ID:?submit this script with sbatch --array}}
IFS=$'\t' read -r label script env depth seed flags < <(sed -n "${{i}}p" "$results/plan.tsv")
[ -n "${{label:-}}" ] || {{ echo "no line $i in $results/plan.tsv"; exit 1; }}
log=$results/logs/$label.log status=$results/slurm/status/$label.tsv runs=$results/runs/$label
job=${{SLURM_ARRAY_JOB_ID}}_$i
echo "task $i: $label | log: $log"
if [ -f "$status" ] && [ "$(tail -n 1 "$status" | cut -f5)" = 0 ]; then
  echo "$label finished earlier (exit 0; $status): nothing to do"; exit 0
fi
# an earlier attempt of this run (requeued after preemption or the time limit, or resubmitted): continue it
resume=()
prev=$(ls -d "$runs"/*/ 2>/dev/null | tail -n 1)
if [ -n "$prev" ] && [ -f "$prev/state.msgpack" ]; then
  resume=(--resume "${{prev%/}}")
elif [ -n "$prev" ]; then  # stopped before its first checkpoint: nothing to resume, start again
  mkdir -p "$results/slurm/discarded"
  mv "${{prev%/}}" "$results/slurm/discarded/${{label}}__$(basename "$prev")__$(date +%s)"
  echo "moved $prev (no state.msgpack) to $results/slurm/discarded/"
fi
# shellcheck disable=SC2206
args=($flags)
start=$(date +%s)
printf '%s\t%s\t%s\t-\tstarted\n' "$job" "$(hostname)" "$start" >>"$status"
{{
  echo "=== slurm job $job (restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname) at $(date '+%F %T %Z'); gpus: ${{CUDA_VISIBLE_DEVICES:-none}}"
  echo "$python $script ${{args[*]}} --runs-dir $runs ${{resume[*]}}"
}} >>"$log"
child=
finish() {{  # finish EXIT_STATUS: one line in the status file, then exit with it
  printf '%s\t%s\t%s\t%s\t%s\n' "$job" "$(hostname)" "$start" $(( $(date +%s) - start )) "$1" >>"$status"
  echo "$label: exit $1 after $(( $(date +%s) - start ))s"
  exit "$1"
}}
on_term() {{  # scancel, preemption, the time limit: the run stops; its last checkpoint stays
  echo "SIGTERM: stopping $label" | tee -a "$log"
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
  finish 143
}}
on_usr1() {{  # --signal=B:USR1@{signal_s} before the time limit: requeue; the next attempt resumes
  echo "time limit near: requeueing $job (it continues from its last checkpoint)" | tee -a "$log"
  scontrol requeue "$job"
}}
trap on_term TERM
trap on_usr1 USR1
for k in "${{!args[@]}}"; do  # @buffer:LABEL: the buffer.npz that run LABEL of this plan saved
  if [[ ${{args[$k]}} == @buffer:* ]]; then
    src=${{args[$k]#@buffer:}}
    args[$k]=$(find "$results/runs/$src" -name buffer.npz 2>/dev/null | sort | tail -n 1)
    [ -n "${{args[$k]}}" ] || {{ echo "no buffer.npz of run $src in $results/runs/$src" | tee -a "$log"; finish 1; }}
  fi
done
"$python" "$script" "${{args[@]}}" --runs-dir "$runs" "${{resume[@]}}" >>"$log" 2>&1 &
child=$!
while :; do
  wait "$child"; st=$?
  kill -0 "$child" 2>/dev/null || break  # wait returns early when a trapped signal arrives
done
finish "$st"
"""


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run_cmd(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# --- the results directory ---------------------------------------------------------------------------
def read_plan(results: str) -> list:
    path = os.path.join(results, "plan.tsv")
    if not os.path.isfile(path):
        fail(f"{results}: not a `benchmark.sh paper --slurm` results directory (no plan.tsv)")
    with open(path) as f:
        return [dict(zip(PLAN_FIELDS, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def read_jobs(results: str) -> list:
    path = os.path.join(results, "slurm", "jobs.tsv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [line.split("\t")[0] for line in f.read().splitlines()[1:] if line.strip()]


def attempts(results: str, label: str) -> list:
    path = os.path.join(results, "slurm", "status", f"{label}.tsv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [dict(zip(STATUS_FIELDS, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def queued(results: str, retries: int = 0, delay: float = 10.0) -> dict:
    """{task index: state} of this sweep's array tasks still in the queue (pending, running, ...).
    retries: how many more times to ask a failing squeue (a busy or restarting slurmctld), delay s apart."""
    jobs = set(read_jobs(results))
    if not jobs:
        return {}
    user = pwd.getpwuid(os.getuid()).pw_name  # as `id -un` (squeue --me is not in older SLURMs)
    for attempt in range(retries + 1):
        proc = run_cmd(["squeue", "-h", "-r", "-u", user, "-o", "%F %K %T"])
        if proc.returncode == 0:
            break
        if attempt < retries:
            time.sleep(delay)
    else:
        message = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
        fail(f"squeue failed{f' {retries + 1} times' if retries else ''}: {message}")
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in jobs and parts[1].isdigit():
            out[int(parts[1])] = parts[2].lower()
    return out


def run_states(results: str, **squeue_retry) -> list:
    """One dict per plan line: index, label, state (done, failed, running, pending, ... or not run),
    exit, wall_s (all attempts), attempts, logs. squeue_retry: queued()'s retries and delay."""
    plan, queue = read_plan(results), queued(results, **squeue_retry)
    out = []
    for i, run in enumerate(plan, start=1):
        tries = attempts(results, run["label"])
        ended = [a for a in tries if a["exit"] != "started"]
        last = tries[-1] if tries else None
        exit_status = last["exit"] if last and last["exit"] != "started" else ""
        if i in queue:
            state = queue[i]
        elif not tries:
            state = "not run"  # cancelled before it started, or never submitted
        elif last["exit"] == "started":
            state = "lost"  # started and never wrote its exit status (killed hard, node failure)
        else:
            state = "done" if exit_status == "0" else "failed"
        logs = [os.path.join(results, "logs", run["label"] + ".log")]
        logs += [os.path.join(results, "slurm", f"{a['job']}.out") for a in tries if a["job"]]
        out.append(dict(run, index=i, state=state, exit=exit_status, attempts=len(tries),
                        wall_s=sum(int(a["wall_s"]) for a in ended if a["wall_s"].isdigit()),
                        logs=list(dict.fromkeys(p for p in logs if os.path.exists(p)))))
    return out


# --- submit ------------------------------------------------------------------------------------------
def directives(a: argparse.Namespace, n: int, results_abs: str) -> list:
    array = f"1-{n}" + (f"%{a.max_parallel}" if a.max_parallel else "")
    lines = ["--job-name=crl-paper", f"--array={array}", f"--output={results_abs}/slurm/%A_%a.out",
             "--ntasks=1", "--requeue", "--open-mode=append"]
    if a.gpus_per_task:
        lines.append(f"--gpus-per-task={a.gpus_per_task}")
    if a.partition:
        lines.append(f"--partition={a.partition}")
    if a.time:
        lines.append(f"--time={a.time}")
        lines.append(f"--signal=B:USR1@{REQUEUE_SIGNAL_S}")
    lines += a.sbatch_args
    return ["#SBATCH " + line for line in lines]


def submit(a: argparse.Namespace) -> None:
    plan = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not plan:
        fail("the plan is empty")
    for line in plan:
        if len(line.split("\t")) != len(PLAN_FIELDS):
            fail(f"bad plan line (want {len(PLAN_FIELDS)} tab-separated fields): {line!r}")
    if a.time and time_seconds(a.time) is None:
        fail(f"--time: one of SLURM's formats, MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (a bare number is "
             f"minutes; got {a.time!r})")
    if a.time and time_seconds(a.time) <= 2 * REQUEUE_SIGNAL_S:
        fail(f"--time {a.time}: give more than {2 * REQUEUE_SIGNAL_S // 60} minutes (the task asks for its "
             f"requeue {REQUEUE_SIGNAL_S // 60} minutes before the limit)")
    python = shutil.which(a.python) or a.python
    python = os.path.abspath(python) if os.sep in python else python
    results_abs = os.path.join(ROOT, a.results) if not os.path.isabs(a.results) else a.results
    script = TASK_SCRIPT.format(
        results=a.results, results_q=shlex.quote(a.results), repo=shlex.quote(ROOT), python_q=shlex.quote(python),
        date=datetime.datetime.now().strftime("%F %T"), command=a.command, signal_s=REQUEUE_SIGNAL_S,
        directives="\n".join(directives(a, len(plan), results_abs)))
    stages = plan_stages(plan)
    if a.dry_run:
        print(f"sbatch script ({a.results}/slurm/array.sbatch):")
        print(script, end="")
        if len(stages) > 1:
            print("submitted as " + ", then ".join(
                "sbatch " + " ".join(o.replace(FIRST_JOB, "<job of the first>") for o in extra)
                for extra in stage_options(stages, a.max_parallel)))
        print("dry run: nothing submitted, nothing written")
        return
    if shutil.which("sbatch") is None:
        fail("sbatch not found: run this on a SLURM login node (--dry-run prints the script)")
    made = []  # what this submission creates: directories (parents first), then files; removed if sbatch fails
    for sub in ("logs", "runs", "slurm/status"):
        missing, d = [], os.path.abspath(os.path.join(a.results, sub))
        while not os.path.exists(d):
            missing.append(d)
            d = os.path.dirname(d)
        os.makedirs(os.path.join(a.results, sub), exist_ok=True)
        made += reversed(missing)
    path = os.path.join(a.results, "slurm", "array.sbatch")
    made += [os.path.abspath(p) for p in (os.path.join(a.results, "plan.tsv"), path, os.path.join(a.results, "meta.txt"))
             if not os.path.exists(p)]
    with open(os.path.join(a.results, "plan.tsv"), "w") as f:
        f.write("\n".join(plan) + "\n")
    with open(path, "w") as f:
        f.write(script)
    with open(os.path.join(a.results, "meta.txt"), "w") as f:
        f.write(f"suite: paper (SLURM job array, {len(plan)} tasks; slurm/array.sbatch)\n"
                f"command: {a.command}\n"
                f"date: {datetime.datetime.now().astimezone().strftime('%F %T %Z')}\n"
                f"commit: {a.describe}\n"
                f"submitted from: {platform.node()} ({platform.system()} {platform.release()} {platform.machine()})\n"
                f"python: {python}\n"
                "machines: each run's log (logs/LABEL.log) names its node and GPUs\n")
    try:
        jobs = []
        for extra in stage_options(stages, a.max_parallel):
            jobs.append(sbatch(a.results, [o.replace(FIRST_JOB, jobs[0]) if jobs else o for o in extra]))
    except SbatchError as e:
        for p in reversed(made):  # files first, then the directories, deepest first (only if still empty)
            try:
                os.rmdir(p) if os.path.isdir(p) else os.remove(p)
            except OSError:
                pass
        print(f"error: {e} (nothing submitted; what submit wrote is removed)", file=sys.stderr)
        sys.exit(1)
    print(f"submitted job array {', '.join(jobs)}: {len(plan)} tasks (one per run), script {path}")
    print(f"  progress, failed runs and their logs: python tools/slurm.py status {a.results}")
    print(f"  resubmit only the failed runs:        python tools/slurm.py resubmit {a.results}")
    print(f"  once all have finished, the summary:  python tools/slurm.py collect {a.results}")


def plan_stages(plan: list) -> list:
    """[task indices] to submit: all at once, or where some runs take the buffer of another
    (@buffer:LABEL), three arrays: the runs they name, the others, and (after the first) the runs that
    name one."""
    labels = [line.split("\t")[0] for line in plan]
    needs = {i: {w.split(":", 1)[1] for w in line.split("\t")[5].split() if w.startswith("@buffer:")}
             for i, line in enumerate(plan, start=1)}
    named = set().union(*needs.values())
    for label in named - set(labels):
        fail(f"a run takes the buffer of {label}, which is not in the plan")
    if not named:
        return [list(range(1, len(plan) + 1))]
    sources = [i for i, label in enumerate(labels, start=1) if label in named]
    later = [i for i in needs if needs[i]]
    rest = [i for i in needs if not needs[i] and i not in sources]
    return [sources, rest, later]


def stage_options(stages: list, max_parallel) -> list:
    """sbatch options of each array of plan_stages; the last waits for the first (FIRST_JOB: its id,
    known once it is submitted)."""
    throttle = f"%{max_parallel}" if max_parallel else ""
    if len(stages) == 1:
        return [[]]
    return [[f"--array={','.join(map(str, stages[0]))}{throttle}"],
            *([[f"--array={','.join(map(str, stages[1]))}{throttle}"]] if stages[1] else []),
            [f"--array={','.join(map(str, stages[2]))}{throttle}", f"--dependency=afterok:{FIRST_JOB}"]]


def time_seconds(text: str):
    """Seconds of a SLURM time limit, or None if text is not one of SLURM's formats: MM, MM:SS, HH:MM:SS,
    D-HH, D-HH:MM, D-HH:MM:SS (a bare number is minutes)."""
    m = re.fullmatch(r"([0-9]+)-([0-9]+)(?::([0-9]+))?(?::([0-9]+))?", text)
    if m:
        days, hours, minutes, seconds = (int(x or 0) for x in m.groups())
        return days * 86400 + hours * 3600 + minutes * 60 + seconds
    if not re.fullmatch(r"[0-9]+(?::[0-9]+){0,2}", text):
        return None
    parts = [int(x) for x in text.split(":")]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


class SbatchError(Exception):
    """sbatch refused (its error, one line)."""


def sbatch(results: str, extra: list) -> str:
    proc = run_cmd(["sbatch", "--parsable", *extra, os.path.join(results, "slurm", "array.sbatch")])
    if proc.returncode != 0:
        raise SbatchError(f"sbatch failed: {' '.join(proc.stderr.split()) or f'exit {proc.returncode}'}")
    job = proc.stdout.strip().split(";")[0]
    path = os.path.join(results, "slurm", "jobs.tsv")
    new = not os.path.exists(path)
    with open(path, "a") as f:
        f.write("job\tsubmitted\tsbatch options\n" if new else "")
        f.write(f"{job}\t{datetime.datetime.now().strftime('%F %T')}\t{' '.join(extra) or '-'}\n")
    return job


# --- status, resubmit, collect ---------------------------------------------------------------------
def status(a: argparse.Namespace) -> None:
    while True:  # waiting: a failing squeue (slurmctld busy or restarting) is asked 4 more times
        states = run_states(a.results, **({"retries": 4, "delay": a.poll} if a.wait else {}))
        in_queue = [s for s in states if s["state"] not in ("done", "failed", "lost", "not run")]
        if not (a.wait and in_queue):
            break
        time.sleep(a.poll)
    counts = {}
    for s in states:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    print(f"{a.results}: {len(states)} runs: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    for s in states:
        note = f"exit {s['exit']}" if s["exit"] else ""
        if s["exit"] == "143":
            note += " (SIGTERM: scancel, preemption or time limit)"
        print(f"  [{s['index']}] {s['state']:<10} {s['label']}  {note}".rstrip())
        if s["state"] in ("failed", "lost", "not run"):
            for path in s["logs"]:
                print(f"        log: {path}")
    bad = [s for s in states if s["state"] in ("failed", "lost", "not run")]
    if bad and not in_queue:
        print(f"resubmit the {len(bad)} failed: python tools/slurm.py resubmit {a.results}")
    elif not bad and not in_queue:
        print(f"all done; the summary: python tools/slurm.py collect {a.results}")
    sys.exit(1 if bad else 0)


def resubmit(a: argparse.Namespace) -> None:
    states = run_states(a.results)
    bad = [s for s in states if s["state"] in ("failed", "lost", "not run")]
    if not bad:
        fail(f"{a.results}: no failed run to resubmit ("
             + ", ".join(sorted({s['state'] for s in states})) + ")")
    indices = ",".join(str(s["index"]) for s in bad)
    script = open(os.path.join(a.results, "slurm", "array.sbatch")).read()
    throttle = [line.split("%")[1] for line in script.splitlines() if line.startswith("#SBATCH --array=") and "%" in line]
    array = indices + (f"%{throttle[0]}" if throttle else "")
    try:
        job = sbatch(a.results, [f"--array={array}", *a.sbatch_args])
    except SbatchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"resubmitted {len(bad)} runs as job array {job} (tasks {indices}); each continues its run from its "
          "last checkpoint where it has one")


def collect(a: argparse.Namespace) -> None:
    states = run_states(a.results)
    in_queue = [s for s in states if s["state"] not in ("done", "failed", "lost", "not run")]
    if in_queue:
        fail(f"{a.results}: {len(in_queue)} runs are still in the queue "
             f"({', '.join(sorted({s['state'] for s in in_queue}))}); wait: python tools/slurm.py status "
             f"{a.results} --wait")
    with open(os.path.join(a.results, "runs.tsv"), "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["label", "script", "env", "depth", "seed", "status", "wall_s", "log"])
        for s in states:
            w.writerow([s["label"], s["script"].removesuffix(".py"), s["env"], s["depth"], s["seed"],
                        s["exit"] or s["state"].replace(" ", "_"), s["wall_s"],
                        os.path.join(a.results, "logs", s["label"] + ".log")])
    with open(os.path.join(a.results, "meta.txt"), "a") as f:
        f.write(f"collected: {datetime.datetime.now().astimezone().strftime('%F %T %Z')}; "
                f"{sum(s['state'] == 'done' for s in states)} of {len(states)} runs done, run time "
                f"{sum(s['wall_s'] for s in states) / 3600:.2f} h in all (every attempt)\n")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark_summary.py"), "summarize", a.results])
    bad = [s for s in states if s["state"] != "done"]
    print(f"collected {a.results}: {len(states) - len(bad)} of {len(states)} runs done; summary: "
          f"{os.path.join(a.results, 'summary.md')}")
    sys.exit(1 if bad or proc.returncode else 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command_name", required=True)
    s = sub.add_parser("submit", help="(from benchmark.sh paper --slurm) write the sbatch script and submit it")
    s.add_argument("--results", required=True)
    s.add_argument("--python", default="python")
    s.add_argument("--command", default="")
    s.add_argument("--describe", default="")
    s.add_argument("--partition")
    s.add_argument("--gpus-per-task", type=int, default=1)
    s.add_argument("--time")
    s.add_argument("--max-parallel", type=int)
    s.add_argument("--sbatch-args", default="")
    s.add_argument("--dry-run", action="store_true")
    st = sub.add_parser("status", help="every run: done, failed (with its logs), running, pending; exit 1 if any failed")
    st.add_argument("results")
    st.add_argument("--wait", action="store_true", help="first wait until no task of the sweep is in the queue")
    st.add_argument("--poll", type=float, default=30.0, help="with --wait: seconds between two looks at squeue")
    r = sub.add_parser("resubmit", help="submit the failed runs again (a new array of their task ids)")
    r.add_argument("results")
    r.add_argument("sbatch_args", nargs=argparse.REMAINDER, help="more sbatch options, e.g. --time 48:00:00")
    c = sub.add_parser("collect", help="runs.tsv and the summary (tools/benchmark_summary.py) of a finished sweep")
    c.add_argument("results")
    a = p.parse_args()
    if a.command_name == "submit":
        a.sbatch_args = shlex.split(a.sbatch_args)
        submit(a)
        return
    if not os.path.isdir(a.results):
        fail(f"{a.results}: no such directory")
    {"status": status, "resubmit": resubmit, "collect": collect}[a.command_name](a)


if __name__ == "__main__":
    main()
