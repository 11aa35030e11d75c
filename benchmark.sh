#!/usr/bin/env bash
# Benchmarks: check that a change did not break learning or speed, and regenerate the paper's comparisons.
#
#   bash benchmark.sh quick                 # CPU, minutes: each script on reacher, small settings
#   bash benchmark.sh speed                 # compile s, time per step, memory vs depth (scan, remat, unrolled),
#                                           # seeds in one process (N = 1 2 4 8), bfloat16 vs float32
#   bash benchmark.sh paper --envs humanoid --depths 4 16 64   # the GPU sweep, paper step budgets
#   bash benchmark.sh paper --figure NAME   # one table or figure of the paper (--list: all of them)
#   bash benchmark.sh probe                 # CPU, about an hour: the depth comparison on a point maze
#   bash benchmark.sh gpu                   # the GPU numbers, one device call (tools/bench.py gpu)
#   bash benchmark.sh replicate             # GPU, 9 minutes: the paper's early learning curves (tools/replicate.py)
#   bash benchmark.sh compare RUN_DIR...    # a run against the paper's learning curve of its env and depth
#
# Every suite writes under benchmark_results/{suite}__{YYYY-MM-DD}__{git describe}/ (paper --figure NAME:
# paper-NAME__...; refused if it exists, but for paper --resume): meta.txt, plan.tsv, runs.tsv, logs/,
# runs/{label}/{run_name}/metrics.jsonl, speed.jsonl, figures.tsv, and the summary of
# tools/benchmark_summary.py: summary.md, curves_{env}.png, speed.png, figure_{NAME}.png.
# `bash benchmark.sh --help` lists the options.
set -euo pipefail
caller_pwd=$PWD  # --datasets paths given relative to where benchmark.sh was called
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
usage: bash benchmark.sh <quick|speed|paper|probe|gpu|replicate|compare> [options]

suites
  quick   crl_depth.py on reacher (the README quick start's settings, 400k env steps in 16 epochs),
          then crl_depth_offline.py on the buffer that run saved (1,200 SGD steps) and
          crl_collector_learner.py (60k env steps), each if present; records compile s, SPS and time
          at goal per run; exits 1 on a crash or a non-finite metric. 5-15 minutes on 2 CPU cores.
  speed   tools/bench.py sweep: compile s, time per step, memory and the ops one SGD step executes vs
          depth, for one SGD step (network alone) and one full training step, with and without --remat,
          plus an unrolled network.
          Defaults: GPU width 256 batch 512 (512 envs, 800 SGD steps); CPU width 64 batch 64 (16 envs).
          Then two more sweeps, of the training step without remat only (appended to the
          same speed.jsonl; their float32 / N = 1 baselines are the depth sweep's own rows):
            seeds in one process: --num-seeds 2 4 8 at the smallest depth (the cost of seeds 2..N);
            bfloat16 vs float32:  --compute-dtypes bfloat16 at every depth of the sweep.
          Adds about 8 train-step measurements (on CPU about 1 minute each).
  paper   crl_depth.py for every env x depth x seed with the paper's env-step budget (tools/paper_numbers.json);
          defaults: the paper's main-table envs that crl_depth.py has, depths 4 8 16 32 64, seeds 1 2 3.
          Depth 1024 runs with --actor-depth 512 (as the paper's). GPU work: days on one GPU.
          --figure NAME: instead, the grid of runs of one table or figure of the paper, with its settings
          (tools/paper_figures.py; docs/paper_figures.md): main_table, depth_sweep, layer_norm, activation,
          residual, width_vs_depth, batch_size, actor_critic_depth, limit_test, collector_learner,
          offline, or all; its summary adds figure_{NAME}.png and a table beside the paper's numbers.
          --list: one result a line (name, runs, the paper's GPU hours).
  probe   the paper's depth comparison at CPU scale (docs/point_mazes.md): crl_depth.py on point_big_maze
          (pure-JAX point mazes), depths 4 16 64, seeds 1 2 3, the settings of PROBE below; then the
          critic heatmaps of the shallowest and the deepest network (seed 1) side by side
          (heatmap_{env}.png) and env steps/s of the point mazes alone (tools/bench.py env,
          env_speed.jsonl). About an hour on 2 CPU cores.
  gpu     tools/bench.py gpu, its own options (bash benchmark.sh gpu --help; --tiny: a CPU check): humanoid
          env steps/s at depths 4, 64 and 1024 against the paper, command buffers beside the depth-64 step,
          8 seeds at depths 64 and 4; 5 items, each its own process and time limit, 8 minutes in all
          (--only ITEM...: the extra items: the scan's unroll, memory, largest batch, bf16, envs); gpu.jsonl
          and gpu.md in --out DIR (default benchmark_results/gpu__...).
  replicate  tools/replicate.py, its own options (bash benchmark.sh replicate --help; --tiny: a CPU check): the
          early part of the paper's learning curves (tools/paper_curves/) at the paper's settings, only the
          env-step budget shortened, in one command of at most 9 minutes on one GPU: humanoid depth 4,
          ant_hardest_maze and arm_push_easy depth 8 against 4, as many epochs as the budget allows by the
          throughput measured as the runs go (or --throughput FILE); per epoch ours against the paper's,
          whether each curve stayed inside the paper's band and the depths in the paper's order
          (docs/replicate.md).
  compare RUN_DIR...  tools/curves.py compare: runs of crl_depth.py against the paper's learning curve of
          their env and depth, per evaluation, at the same env steps; a table and paper_curve.png.

options
  --envs ENV...            paper: env ids (quick: default reacher; probe: point_big_maze)
  --depths D...            paper: default 4 8 16 32 64; quick: 4; speed: 4 16 64 256 1024; probe: 4 16 64
  --seeds S...             paper, probe: default 1 2 3; quick: 1
  --total-env-steps N      paper: instead of the paper's budget; quick: instead of 400000; probe: of PROBE_STEPS
  --width N, --batch-size N   speed only (defaults above)
  --unrolled-depths D...   speed: depths of the unrolled comparison (default 4 16 64 on CPU, to 256 on GPU)
  --timeout S              speed: seconds allowed for one measurement (default 600)
  --num-seeds N...         speed: seeds in one process for the seeds sweep (default 1 2 4 8; 1 alone: no sweep)
  --compute-dtypes T...    speed: matmul dtypes compared (float32, bfloat16; default both; float32 alone: none)
  --extra "FLAGS"          extra flags for every training run (quick/paper) or for tools/bench.py sweep
  --results-root DIR       where the results directory goes (default benchmark_results)
  --figure NAME            paper: the runs of one result of the paper (NAME or all; --list names them);
                           --envs, --depths and --seeds replace the figure's own
  --list                   paper: list the results --figure takes, with run counts and the paper's GPU hours
  --datasets FILE...       paper --figure offline: train offline on these .npz files (OGBench format; their
                           flags, e.g. --obs-dim, by --extra) instead of buffers saved by online runs
  --resume DIR             paper: continue the results directory DIR of the same plan: finished runs are kept,
                           a stopped run continues from its last state.msgpack, the rest run
  --dry-run                print the plan and the results directory; run and write nothing
  --slurm                  paper: submit the runs as a SLURM job array instead (tools/slurm.py; docs/cluster.md),
                           one task per run; then: python tools/slurm.py status|resubmit|collect RESULTS
  --partition P, --gpus-per-task N (default 1), --time [D-]HH:MM:SS, --max-parallel N (tasks at once),
  --sbatch-args "OPTIONS"  --slurm: the array's sbatch options
environment: PYTHON (default: python, else python3)
EOF
}

die() { echo "error: $*" >&2; exit 2; }

suite=${1:-}
command_line="bash benchmark.sh$(printf ' %q' "$@")"
case "$suite" in
  quick|speed|paper|probe) shift ;;
  gpu) shift; exec "${PYTHON:-python3}" tools/bench.py gpu "$@" ;;
  replicate|compare)  # from where benchmark.sh was called: paths given (RUN_DIR, --out, --throughput) are relative to it
    shift; tools=$PWD/tools; cd "$caller_pwd"
    if [ "$suite" = replicate ]; then exec "${PYTHON:-python3}" "$tools/replicate.py" "$@"; fi
    exec "${PYTHON:-python3}" "$tools/curves.py" compare "$@" ;;
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
  *) die "unknown suite '$suite' (one of: quick, speed, paper, probe, gpu, replicate, compare; see --help)" ;;
esac

envs=() depths=() seeds=() unrolled_depths=() num_seeds=() dtypes=() datasets=()
total_steps="" width="" batch="" timeout="" extra="" results_root="benchmark_results" dry_run=0
figure="" list_figures="" resume=""
slurm="" slurm_args=()  # --slurm and the sbatch options, passed on to tools/slurm.py submit
list_arg() {  # collects the values after a list option; prints how many
  local n=0; shift
  while [ $# -gt 0 ] && [[ $1 != --* ]]; do n=$((n + 1)); shift; done
  echo "$n"
}
positive_int() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer (got '$2')"; }
while [ $# -gt 0 ]; do
  opt=$1
  case "$opt" in
    --envs|--depths|--seeds|--unrolled-depths|--num-seeds|--compute-dtypes|--datasets)
      n=$(list_arg "$@"); [ "$n" -gt 0 ] || [ "$opt" = --unrolled-depths ] || die "$opt needs at least one value"
      shift; vals=("${@:1:$n}"); shift "$n"
      case "$opt" in
        --envs) envs=("${vals[@]}") ;;
        --depths) depths=("${vals[@]}") ;;
        --seeds) seeds=("${vals[@]}") ;;
        --unrolled-depths) unrolled_depths=("${vals[@]+"${vals[@]}"}"); unrolled_set=1 ;;
        --num-seeds) num_seeds=("${vals[@]}") ;;
        --compute-dtypes) dtypes=("${vals[@]}") ;;
        --datasets) for f in "${vals[@]}"; do
                      [[ $f == /* ]] || f=$caller_pwd/$f
                      [ -f "$f" ] || die "--datasets: no such file: $f"; datasets+=("$f")
                    done ;;
      esac ;;
    --total-env-steps|--width|--batch-size|--timeout)
      [ $# -ge 2 ] || die "$opt needs a value"; positive_int "$opt" "$2"
      case "$opt" in
        --total-env-steps) total_steps=$2 ;; --width) width=$2 ;; --batch-size) batch=$2 ;; --timeout) timeout=$2 ;;
      esac; shift 2 ;;
    --extra) [ $# -ge 2 ] || die "--extra needs a value"; extra=$2; shift 2 ;;
    --results-root) [ $# -ge 2 ] || die "--results-root needs a value"; results_root=$2; shift 2 ;;
    --figure) [ $# -ge 2 ] || die "--figure needs a value"; figure=$2; shift 2 ;;
    --list) list_figures=1; shift ;;
    --resume) [ $# -ge 2 ] || die "--resume needs a results directory"; resume=${2%/}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --slurm) slurm=1; shift ;;
    --partition|--gpus-per-task|--time|--max-parallel|--sbatch-args)
      [ $# -ge 2 ] || die "$opt needs a value"
      case "$opt" in --gpus-per-task) [[ $2 =~ ^[0-9]+$ ]] || die "$opt needs a number (got '$2')" ;;
                     --max-parallel) positive_int "$opt" "$2" ;; esac
      slurm_args+=("$opt=$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$opt' (see --help)" ;;
  esac
done
for d in "${depths[@]+"${depths[@]}"}" "${unrolled_depths[@]+"${unrolled_depths[@]}"}"; do
  [[ $d =~ ^[1-9][0-9]*$ ]] && [ $((d % 4)) -eq 0 ] || die "depths must be positive multiples of 4 (got '$d')"
done
for s in "${seeds[@]+"${seeds[@]}"}"; do [[ $s =~ ^[0-9]+$ ]] || die "seeds must be integers (got '$s')"; done
for s in "${num_seeds[@]+"${num_seeds[@]}"}"; do positive_int --num-seeds "$s"; done
for t in "${dtypes[@]+"${dtypes[@]}"}"; do
  [ "$t" = float32 ] || [ "$t" = bfloat16 ] || die "--compute-dtypes: float32 or bfloat16 (got '$t')"
done
applies() {  # applies OPTION SUITE...: refuse an option the suite does not use
  local opt=$1 set=$2; shift 2
  [ -z "$set" ] && return 0
  for s in "$@"; do [ "$s" = "$suite" ] && return 0; done
  die "$opt does not apply to the $suite suite"
}
applies --envs "${envs[*]+x}" quick paper probe
applies --seeds "${seeds[*]+x}" quick paper probe
applies --total-env-steps "$total_steps" quick paper probe
applies --width "$width" speed
applies --batch-size "$batch" speed
applies --unrolled-depths "${unrolled_set:-}" speed
applies --timeout "$timeout" speed
applies --num-seeds "${num_seeds[*]+x}" speed
applies --compute-dtypes "${dtypes[*]+x}" speed
applies --slurm "$slurm" paper
applies --figure "$figure" paper
applies --list "$list_figures" paper
applies --datasets "${datasets[*]+x}" paper
applies --resume "$resume" paper
[ ${#datasets[@]} -eq 0 ] || [ "$figure" = offline ] || [ "$figure" = all ] || die "--datasets needs --figure offline (or all)"
[ -z "$resume" ] || [ -z "$slurm" ] || die "--resume: a SLURM sweep continues with python tools/slurm.py resubmit $resume"
[ ${#slurm_args[@]} -eq 0 ] || [ -n "$slurm" ] || die "${slurm_args[0]%%=*} needs --slurm"

if [ -z "${PYTHON:-}" ]; then
  if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi

# the paper's tables and figures (tools/paper_figures.py): the options that shape a figure's grid
fig_args=()
[ ${#envs[@]} -gt 0 ] && fig_args+=(--envs "${envs[@]}")
[ ${#depths[@]} -gt 0 ] && fig_args+=(--depths "${depths[@]}")
[ ${#seeds[@]} -gt 0 ] && fig_args+=(--seeds "${seeds[@]}")
[ -n "$total_steps" ] && fig_args+=(--total-env-steps "$total_steps")
if [ -n "$list_figures" ]; then exec "$PYTHON" tools/paper_figures.py list "${fig_args[@]+"${fig_args[@]}"}"; fi

# --- results directory: named by suite (and figure), date and git describe; never overwritten ---
describe=$(git describe --always --dirty 2>/dev/null || echo nogit)
results="$results_root/${suite}${figure:+-$figure}__$(date +%F)__${describe}"
if [ -n "$resume" ]; then
  [ -f "$resume/plan.tsv" ] || die "--resume $resume: not a results directory of benchmark.sh paper (no plan.tsv)"
  results=$resume
elif [ -e "$results" ]; then
  echo "error: $results already exists; refusing to overwrite it (move it away, pass --results-root, or --resume it)" >&2
  exit 1
fi

# --- the plan: one line per run, fields separated by tabs: label, script, env, depth, seed, flags ---
plan=()
add_run() { plan+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"$'\t'"$5"$'\t'"$6"); }
# the README quick start: 32 envs x 20 steps, 16 SGD steps of batch 128 (1:40), episodes of 100 steps
QUICK="--num-envs 32 --episode-length 100 --num-eval-envs 32 --unroll-length 20 --num-sgd-steps 16 --batch-size 128 --max-replay-size 1000 --min-replay-size 100 --width 128"
# the probe (docs/point_mazes.md says how these were chosen): 128 envs x 10 steps and 32 SGD steps of batch
# 256 per training step (6.4 relabelled samples per env step), episodes of 100 steps, width 64
PROBE="--num-envs 128 --episode-length 100 --num-eval-envs 64 --unroll-length 10 --num-sgd-steps 32 --batch-size 256 --max-replay-size 1000 --min-replay-size 100 --width 64 --num-epochs 20"
PROBE_STEPS=1000000
case "$suite" in
  probe)
    [ ${#envs[@]} -gt 0 ] || envs=(point_big_maze)
    [ ${#depths[@]} -gt 0 ] || depths=(4 16 64)
    [ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
    for env in "${envs[@]}"; do
      [[ $env == point_* ]] || die "the probe runs on the point mazes (point_u_maze, point_big_maze, point_hardest_maze), not '$env'"
      for depth in "${depths[@]}"; do for seed in "${seeds[@]}"; do
        add_run "crl_depth__${env}__d${depth}__s${seed}" crl_depth.py "$env" "$depth" "$seed" \
          "--env-id $env --depth $depth --seed $seed --total-env-steps ${total_steps:-$PROBE_STEPS} $PROBE $extra"
      done; done
    done ;;
  quick)
    [ ${#envs[@]} -gt 0 ] || envs=(reacher)
    [ ${#depths[@]} -gt 0 ] || depths=(4)
    [ ${#seeds[@]} -gt 0 ] || seeds=(1)
    steps=${total_steps:-400000}
    for env in "${envs[@]}"; do for depth in "${depths[@]}"; do for seed in "${seeds[@]}"; do
      add_run "crl_depth__${env}__d${depth}__s${seed}" crl_depth.py "$env" "$depth" "$seed" \
        "--env-id $env --depth $depth --seed $seed --total-env-steps $steps --num-epochs 16 $QUICK --save-buffer $extra"
      # offline: 1,200 SGD steps on the buffer that run saved (@buffer: the run's buffer.npz once it exists)
      add_run "crl_depth_offline__${env}__d${depth}__s${seed}" crl_depth_offline.py "$env" "$depth" "$seed" \
        "--dataset @buffer:crl_depth__${env}__d${depth}__s${seed} --depth $depth --seed $seed --num-gradient-steps 1200 --eval-every 400 --num-sgd-steps 16 --batch-size 128 --num-eval-envs 32 --width 128 $extra"
      # collector/learners: collector and deep learner at this depth (at least 8), shallow learner 4; 3/20 of the steps
      deep=$(( depth > 4 ? depth : 8 ))
      add_run "crl_collector_learner__${env}__d${deep}__s${seed}" crl_collector_learner.py "$env" "$deep" "$seed" \
        "--env-id $env --collector-depth $deep --deep-learner-depth $deep --shallow-learner-depth 4 --seed $seed --total-env-steps $((steps * 3 / 20)) --num-epochs 2 $QUICK $extra"
    done; done; done ;;
  speed)
    # up to three sweeps (tools/bench.py sweep), one line each in speed_runs: "what<TAB>flags"; all append to speed.jsonl
    [ ${#depths[@]} -gt 0 ] || depths=(4 16 64 256 1024)
    [ ${#num_seeds[@]} -gt 0 ] || num_seeds=(1 2 4 8)
    [ ${#dtypes[@]} -gt 0 ] || dtypes=(float32 bfloat16)
    common=""  # --out "$results/speed.jsonl" goes first (kept out of these strings: the path may hold spaces)
    [ -n "$width" ] && common+=" --width $width"
    [ -n "$batch" ] && common+=" --batch-size $batch"
    [ -n "$timeout" ] && common+=" --timeout $timeout"
    [ -n "$extra" ] && common+=" $extra"
    unrolled=""
    [ -n "${unrolled_set:-}" ] && unrolled=" --unrolled-depths ${unrolled_depths[*]+"${unrolled_depths[*]}"}"
    speed_runs=("depth sweep (network + train step, scan +- remat, unrolled; float32, 1 seed)"$'\t'"$common --depths ${depths[*]}$unrolled")
    smallest=$(printf '%s\n' "${depths[@]}" | sort -n | head -n 1)
    more_seeds=(); for n in "${num_seeds[@]}"; do [ "$n" -ne 1 ] && more_seeds+=("$n"); done
    [ ${#more_seeds[@]} -gt 0 ] && speed_runs+=("seeds in one process (train step, depth $smallest, float32; N = 1 is the depth sweep's row)"$'\t'"$common --targets train_step --remat off --depths $smallest --num-seeds ${more_seeds[*]}")
    for t in "${dtypes[@]}"; do
      [ "$t" = bfloat16 ] && speed_runs+=("bfloat16 vs float32 (train step, 1 seed; float32 is the depth sweep's rows)"$'\t'"$common --targets train_step --remat off --depths ${depths[*]} --compute-dtypes bfloat16")
    done ;;
  paper)
    if [ ${#envs[@]} -gt 0 ] || [ -z "$figure" ]; then  # (a figure's own envs are the paper's)
      known=$("$PYTHON" -c "import crl_envs; print(' '.join(crl_envs.ENVS))" 2>/dev/null | tail -n 1) ||
        die "could not import crl_envs.py with $PYTHON"
    fi
    for env in "${envs[@]+"${envs[@]}"}"; do
      [[ " $known " == *" $env "* ]] || die "unknown env id '$env'; crl_depth.py has: $known"
    done
    if [ -n "$figure" ]; then  # the figure's grid: plan lines, and each run's place in its figure
      fig_args+=(--extra "$extra")
      [ ${#datasets[@]} -gt 0 ] && fig_args+=(--datasets "${datasets[@]}")
      lines=$("$PYTHON" tools/paper_figures.py plan "$figure" "${fig_args[@]}") || exit 2
      cells=$("$PYTHON" tools/paper_figures.py plan "$figure" "${fig_args[@]}" --cells) || exit 2
      while IFS= read -r line; do plan+=("$line"); done <<<"$lines"
    elif [ ${#envs[@]} -eq 0 ]; then
      paper_envs=$("$PYTHON" tools/benchmark_summary.py paper-envs) || exit 2
      for env in $paper_envs; do [[ " $known " == *" $env "* ]] && envs+=("$env"); done
      [ ${#envs[@]} -gt 0 ] || die "none of the paper's envs ($paper_envs) is in crl_depth.py's ENVS ($known)"
    fi
    [ ${#depths[@]} -gt 0 ] || depths=(4 8 16 32 64)
    [ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
    [ -n "$figure" ] && envs=()  # the plan is the figure's
    for env in "${envs[@]+"${envs[@]}"}"; do
      if [ -n "$total_steps" ]; then steps=$total_steps
      else steps=$("$PYTHON" tools/benchmark_summary.py budget "$env") || exit 2
      fi
      for depth in "${depths[@]}"; do
        actor=""; [ "$depth" -ge 1024 ] && actor="--actor-depth 512 "  # the paper's 1024-layer runs
        for seed in "${seeds[@]}"; do
          add_run "crl_depth__${env}__d${depth}__s${seed}" crl_depth.py "$env" "$depth" "$seed" \
            "--env-id $env --depth $depth ${actor}--seed $seed --total-env-steps $steps $extra"
        done
      done
    done ;;
esac

if [ -n "$resume" ] && ! diff -q <(printf '%s\n' "${plan[@]}") "$results/plan.tsv" >/dev/null; then
  die "--resume $results: its plan.tsv is not this plan (give the options it was started with: $(sed -n 's/^command: //p' "$results/meta.txt" 2>/dev/null))"
fi
echo "benchmark $suite${figure:+ --figure $figure} | results: $results${resume:+ (resumed)}"
if [ "$suite" = speed ]; then
  echo "plan: ${#speed_runs[@]} tools/bench.py sweep runs"
  for i in "${!speed_runs[@]}"; do
    IFS=$'\t' read -r what flags <<<"${speed_runs[$i]}"
    echo "  [$((i + 1))/${#speed_runs[@]}] $what: $PYTHON tools/bench.py sweep --out $results/speed.jsonl --log $results/logs/speed_measurements.log$flags"
  done
else
  echo "plan: ${#plan[@]} runs"
  for i in "${!plan[@]}"; do
    IFS=$'\t' read -r label script _ _ _ flags <<<"${plan[$i]}"
    echo "  [$((i + 1))/${#plan[@]}] $label: $PYTHON $script $flags"
  done
fi
if [ -n "$slurm" ]; then  # the same plan as one SLURM job array (tools/slurm.py; docs/cluster.md)
  dry=(); [ "$dry_run" -eq 1 ] && dry=(--dry-run)
  printf '%s\n' "${plan[@]}" | "$PYTHON" tools/slurm.py submit --results "$results" --python "$PYTHON" \
    --command "$command_line" --describe "$describe" "${slurm_args[@]+"${slurm_args[@]}"}" "${dry[@]+"${dry[@]}"}" ||
    exit
  [ "$dry_run" -eq 1 ] || [ -z "$figure" ] || printf '%s\n' "$cells" >"$results/figures.tsv"
  exit
fi
[ "$dry_run" -eq 1 ] && { echo "dry run: nothing run, nothing written"; exit 0; }

# --- run ---
mkdir -p "$results/logs" "$results/runs"
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime; }
if [ -n "$resume" ]; then
  echo "resumed: $(date '+%Y-%m-%d %H:%M:%S %Z'), commit $describe: $command_line" >>"$results/meta.txt"
else  # plan.tsv and figures.tsv: what --resume and the summary read
  [ "$suite" = speed ] || printf '%s\n' "${plan[@]}" >"$results/plan.tsv"
  [ -z "$figure" ] || printf '%s\n' "$cells" >"$results/figures.tsv"
  {
    echo "suite: $suite"
    echo "command: $command_line"
    echo "date: $(date '+%Y-%m-%d %H:%M:%S %Z')"
    echo "commit: $describe"
    echo "machine: $(uname -srm), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //'))"
    echo "gpu: $(nvidia-smi -L 2>/dev/null | head -n 1 || true)"
    echo "python: $("$PYTHON" -c 'import sys, jax; print(sys.version.split()[0], "jax", jax.__version__, "backend", jax.default_backend())' 2>/dev/null | tail -n 1)"
    echo "load average at start (1/5/15 min): $(load)"
  } >"$results/meta.txt"
  sed -i 's/^gpu: $/gpu: none/' "$results/meta.txt"
fi
start=$(date +%s)
elapsed() { local s=$(( $(date +%s) - start )); printf '%dh%02dm%02ds' $((s / 3600)) $((s % 3600 / 60)) $((s % 60)); }
status=0

if [ "$suite" = speed ]; then
  for i in "${!speed_runs[@]}"; do
    IFS=$'\t' read -r what flags <<<"${speed_runs[$i]}"
    echo "[$((i + 1))/${#speed_runs[@]}] tools/bench.py sweep: $what | elapsed $(elapsed)"
    # shellcheck disable=SC2206
    args=($flags)
    set +e
    "$PYTHON" tools/bench.py sweep --out "$results/speed.jsonl" --log "$results/logs/speed_measurements.log" "${args[@]}" 2>&1 | tee -a "$results/logs/speed.log" |
      grep --line-buffered -v -E 'warnings.warn|UserWarning|Failed to import warp'
    st=${PIPESTATUS[0]}
    set -e
    [ "$st" -eq 0 ] || { status=1; echo "  FAILED with exit status $st"; }
  done
else
  [ -f "$results/runs.tsv" ] || printf 'label\tscript\tenv\tdepth\tseed\tstatus\twall_s\tlog\n' >"$results/runs.tsv"
  n=${#plan[@]} done_runs=0 failed=0
  for i in "${!plan[@]}"; do
    IFS=$'\t' read -r label script env depth seed flags <<<"${plan[$i]}"
    log="$results/logs/$label.log"
    echo "[$((i + 1))/$n] $label | $((n - i - 1)) left after this | elapsed $(elapsed) | load $(load)"
    if [ -n "$resume" ] && [ "$(awk -F'\t' -v l="$label" '$1 == l {s = $6} END {print s}' "$results/runs.tsv")" = 0 ]; then
      echo "  kept: finished earlier (runs.tsv)"
      continue
    fi
    # shellcheck disable=SC2206
    args=($flags)
    if [ ! -f "$script" ]; then
      echo "  skipped: $script does not exist (yet)"
      continue
    fi
    help=$("$PYTHON" "$script" --help 2>/dev/null || true)
    missing=""
    for j in "${!args[@]}"; do  # @buffer:LABEL: the buffer.npz that run LABEL of this plan saved
      if [[ ${args[$j]} == @buffer:* ]]; then
        args[$j]=$(find "$results/runs/${args[$j]#@buffer:}" -name buffer.npz 2>/dev/null | sort | tail -n 1 || true)
        [ -n "${args[$j]}" ] || missing=1
      fi
    done
    if [ -n "$missing" ]; then echo "  skipped: no dataset (the run that saves its buffer.npz wrote none)"; continue; fi
    prev=$(find "$results/runs/$label" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort | tail -n 1 || true)
    if [ -n "$prev" ] && [ -f "$prev/state.msgpack" ]; then  # a run stopped part way (--resume DIR): continue it
      args+=(--resume "$prev")
      echo "  continues $prev from its last state.msgpack"
    elif [ -n "$prev" ]; then  # stopped before its first checkpoint: nothing to continue, start again
      mkdir -p "$results/discarded"
      mv "$prev" "$results/discarded/${label}__$(basename "$prev")__$(date +%s)"
      echo "  moved $prev (no state.msgpack) to $results/discarded/"
    fi
    kept=()  # drop flags that this script's --help does not list (scripts added later may lack some)
    for ((j = 0; j < ${#args[@]}; j++)); do
      a=${args[$j]}
      if [[ $a == --* ]] && ! grep -q -- "$a[ ,]" <<<"$help"$'\n'; then
        echo "  note: $script has no $a; left out"
        if [ $((j + 1)) -lt ${#args[@]} ] && [[ ${args[$((j + 1))]} != --* ]]; then j=$((j + 1)); fi
        continue
      fi
      kept+=("$a")
    done
    t0=$(date +%s)
    set +e
    "$PYTHON" "$script" "${kept[@]}" --runs-dir "$results/runs/$label" 2>&1 | tee "$log" |
      grep --line-buffered -E '^(run |compiled|epoch|error|done)' | sed -u 's/^/    /'
    st=${PIPESTATUS[0]}
    set -e
    wall=$(( $(date +%s) - t0 ))
    done_runs=$((done_runs + 1))
    [ "$st" -eq 0 ] || { failed=$((failed + 1)); echo "  FAILED with exit status $st; log: $log"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "${script%.py}" "$env" "$depth" "$seed" "$st" "$wall" "$log" >>"$results/runs.tsv"
    echo "  finished in ${wall}s (exit $st) | elapsed $(elapsed)"
  done
  echo "ran $done_runs of $n runs, $failed failed"
  [ "$failed" -eq 0 ] || status=1
fi
if [ "$suite" = probe ]; then
  # the shallowest and the deepest critic of the first seed, side by side on the same goal
  shallow=$(printf '%s\n' "${depths[@]}" | sort -n | head -n 1); deep=$(printf '%s\n' "${depths[@]}" | sort -n | tail -n 1)
  for env in "${envs[@]}"; do
    ckpts=()
    for depth in $(printf '%s\n' "$shallow" "$deep" | uniq); do
      c=$(find "$results/runs/crl_depth__${env}__d${depth}__s${seeds[0]}" -name checkpoint.msgpack 2>/dev/null | head -n 1)
      [ -n "$c" ] && ckpts+=("$c")
    done
    if [ ${#ckpts[@]} -gt 0 ]; then
      echo "critic heatmap of $env: depths $shallow and $deep, seed ${seeds[0]}"
      "$PYTHON" crl_depth.py --env-id "$env" --plot-critic --load "${ckpts[@]}" --plot-out "$results/heatmap_${env}.png" \
        >>"$results/logs/heatmaps.log" 2>&1 || { status=1; echo "  FAILED; log: $results/logs/heatmaps.log"; }
    fi
  done
  echo "env steps/s of the point mazes alone (tools/bench.py env)"
  "$PYTHON" tools/bench.py env --out "$results/env_speed.jsonl" 2>&1 | tee "$results/logs/env_speed.log" | grep '^|' ||
    { status=1; echo "  FAILED; log: $results/logs/env_speed.log"; }
fi
echo "load average at end (1/5/15 min): $(load)" >>"$results/meta.txt"
echo "wall time: $(elapsed)" >>"$results/meta.txt"

echo
echo "=== summary: $results/summary.md ==="
check=()
[ "$suite" = quick ] && check=(--check)
set +e
"$PYTHON" tools/benchmark_summary.py summarize "$results" "${check[@]+"${check[@]}"}"
summary_status=$?
set -e
[ "$summary_status" -eq 0 ] || status=1
echo "benchmark $suite finished in $(elapsed) with status $status | results: $results"
exit "$status"
