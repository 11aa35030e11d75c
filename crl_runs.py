"""Run plumbing of the three CRL scripts, as services with explicit inputs: the command line and
--resume, the run directory and args.json, a metrics writer (metrics.jsonl and wandb) for any dict,
the ETA, checkpoint files for any pytree, seeds and device meshes. Nothing in here is the algorithm:
no function reads a metric, a field of a training state or an Args field of a script (RunArgs' own
flags aside); what it needs is passed to it, so a fork of a script that renames a metric, drops a
loss or adds a field to its state runs unchanged.

runs/{run_name}/ holds args.json (the run's settings), metrics.jsonl (one line per seed and epoch),
state.msgpack (the whole training state, for --resume), checkpoint.msgpack (the final networks;
checkpoint_seed{s}.msgpack with --num-seeds) and, with --track, wandb_id.txt. state.msgpack and the
checkpoints share one file format, written and read by write_state_file / read_state_file: 16 magic
bytes, the sha256 of the payload, the payload (flax msgpack: numbers, strings and arrays only - no
pickle, so loading runs no code from the file). A pytree is stored as its leaves under their path
names (ts/agent/actor_params/..., ts/env_state/...), so any pytree a backend builds (brax, mjx) can
be saved, and a load checks every leaf's name, shape and dtype against the pytree a fresh run would
build. Every file is written to a .tmp, fsynced and renamed over the old one: a kill at any moment
leaves either the previous complete file or the new one.
"""

import dataclasses
import errno
import hashlib
import json
import os
import random
import sys
import time
from typing import Any, Callable, Literal, NoReturn, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import tyro

STATE_FILE = "state.msgpack"
STATE_MAGIC = b"CRL-DEPTH-STATE\n"  # 16 bytes
NETWORKS_FORMAT = "crl_depth_networks"  # header format of checkpoint.msgpack


@dataclasses.dataclass
class RunArgs:
    """The flags of a run that no algorithm owns; each script's Args inherits them (tyro lists them in
    --help like the script's own)."""

    exp_name: str = "crl"
    """name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment (python, numpy and jax)"""
    track: bool = False
    """log to Weights & Biases (wandb is imported only then)"""
    wandb_project_name: str = "crl-depth"
    """wandb project"""
    wandb_entity: Optional[str] = None
    """wandb entity (team or user); None uses your wandb default"""
    wandb_mode: Literal["online", "offline"] = "online"
    """wandb mode; offline writes to ./wandb for a later `wandb sync`"""
    runs_dir: str = "runs"
    """directory under which runs/{run_name}/ is created"""
    checkpoint_every: int = 10
    """write the full training state to runs/{run_name}/state.msgpack every N epochs (and after the
    last); --resume continues from it"""
    resume: Optional[str] = None
    """continue the run in this run directory from its state.msgpack (its args.json gives the settings)"""
    num_seeds: int = 1
    """independent runs with seeds seed, seed+1, ... trained in one process: the training state is
    vmapped over a seed axis; metrics.jsonl has one line per seed and epoch"""
    num_devices: int = 0
    """local devices to split the work over (data parallel, parameters replicated); 0: all local devices"""
    estimate: bool = False
    """print what the run needs and exit, training nothing and writing nothing: parameter counts, the bytes
    of the state, and XLA's memory and cost analysis of each program compiled for this backend from the
    shapes alone (also with --remat, when it is not set)"""

    def run_flags_error(self, split: tuple[str, ...] = (), one_run: tuple[str, ...] = ()) -> Optional[str]:
        """One line on what is wrong with the flags above, or None. split: the script's flags whose work
        is split across the devices (each a multiple of their number); one_run: its flags that work on one
        run only (not with --num-seeds above 1)."""
        error = not_positive(self, ("checkpoint_every", "num_seeds"))
        if error:
            return error
        num_local = len(jax.local_devices())
        if not 0 <= self.num_devices <= num_local:
            return (f"--num-devices must be in [0, {num_local}] (0: all {num_local} local devices; "
                    f"got {self.num_devices})")
        num_devices = self.num_devices or num_local
        for name in split:
            if getattr(self, name) % num_devices:
                return (f"{flag(name)} ({getattr(self, name)}) must be a multiple of the number of devices "
                        f"({num_devices}{'' if self.num_devices else ', all local ones; set --num-devices'})")
        given = [name for name in one_run if getattr(self, name)]
        if given and self.num_seeds > 1:
            return f"{flag(given[0])} works on one run: not with --num-seeds {self.num_seeds}"
        return None


def fail(message: str, status: int = 2) -> NoReturn:
    """One error line on stderr, then exit (2: bad input, refused before any work; 1: a run that failed)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def flag(name: str) -> str:
    """The command-line flag of an Args field: num_envs -> --num-envs."""
    return "--" + name.replace("_", "-")


def not_positive(args: Any, names: tuple[str, ...]) -> Optional[str]:
    """One line on the first of the fields `names` of args that is set and not positive, or None."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            return f"{flag(name)} must be positive (got {value})"
    return None


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


# --- the command line and --resume ----------------------------------------------------------------
def parse_args(args_cls: type, argv: Optional[list[str]], validate: Callable[[Any], Optional[str]],
               resumable: tuple[str, ...], settle: Callable[[Any, Any], tuple[Any, Optional[str]]]) -> Any:
    """The command line's args, checked by validate (one line and exit 2 on an error). With
    --resume RUN_DIR the command line is parsed again by tyro with the run's saved args.json as the
    defaults, so a flag that is not given keeps the run's value; a given flag that changes a setting
    outside `resumable` is refused. settle(args, the saved args or None for a new run) returns the
    args to run with (a script's rule, e.g. "--num-epochs alone extends a run") and an error or None."""
    args = tyro.cli(args_cls, args=argv)
    if args.resume is None:
        args, error = settle(args, None)
        error = error or validate(args)
        return args if error is None else fail(error)
    path = os.path.join(args.resume, "args.json")
    if not os.path.isfile(path):
        fail(f"--resume {args.resume}: not a run directory (no args.json in it)")
    script = os.path.basename(sys.modules[args_cls.__module__].__file__ or "this script")
    try:
        with open(path) as f:
            saved = json.load(f)
        saved = {name: tuple(value) if isinstance(value, list) else value for name, value in saved.items()}
        saved_args = args_cls(**{**saved, "resume": args.resume})
    except (OSError, ValueError) as e:
        fail(f"--resume {args.resume}: cannot read args.json ({e})")
    except TypeError as e:
        fail(f"--resume {args.resume}: args.json is not a {script} args file ({e})")
    merged = tyro.cli(args_cls, args=argv, default=saved_args)
    for field in dataclasses.fields(args_cls):
        value, old = getattr(merged, field.name), getattr(saved_args, field.name)
        if field.name not in resumable and value != old:
            flags = ", ".join("--" + n.replace("_", "-") for n in resumable if n != "resume")
            fail(f"--{field.name.replace('_', '-')} {value} conflicts with the run's {old} ({path}); a "
                 f"resumed run keeps its settings (only {flags} may change)")
    merged, error = settle(merged, saved_args)
    error = error or validate(merged)
    return merged if error is None else fail(error)


# --- several seeds in one process -----------------------------------------------------------------
# --num-seeds N trains seeds seed .. seed+N-1 in one process: every leaf of the training state has a
# leading seed axis and every jitted function is mapped over it. Seed i draws exactly the keys of a
# single run with --seed seed+i; metrics.jsonl gets one line per seed and epoch.
def seed_keys(seeds: list[int], num_keys: int) -> jax.Array:
    """[num_seeds, num_keys, 2]: the keys a single run with each seed splits from PRNGKey(seed)."""
    return jnp.stack([jax.random.split(jax.random.PRNGKey(seed), num_keys) for seed in seeds])


def seed_all(seed: int, seeds: list[int], num_keys: int) -> tuple[jax.Array, ...]:
    """Seeds Python's and NumPy's generators with --seed and returns num_keys keys, each [num_seeds, 2]:
    seed i of --num-seeds draws exactly the keys a single run with --seed seed+i draws."""
    random.seed(seed)
    np.random.seed(seed)
    keys = seed_keys(seeds, num_keys)
    return tuple(keys[:, i] for i in range(num_keys))


def seed_map(f: Callable, num_seeds: int, in_axes: Any = 0, out_axes: Any = 0) -> Callable:
    """jax.vmap(f, in_axes, out_axes) over the leading seed axis (0: mapped; None: shared by all seeds).
    With one seed, f itself on the arguments with the seed axis indexed away, the axis put back on
    the outputs: XLA compiles a vmap over one seed into another program (slower on CPU, different in
    the last bits), and a run of one seed stays bit-identical to a run without a seed axis."""
    if num_seeds > 1:
        return jax.vmap(f, in_axes=in_axes, out_axes=out_axes)

    def along(axes: Any, tree: Any, fn: Callable) -> Any:
        return jax.tree.map(lambda axis, x: x if axis is None else jax.tree.map(fn, x), axes, tree,
                            is_leaf=lambda axis: axis is None)

    def one_seed(*args):
        return along(out_axes, f(*along(in_axes, args, lambda x: x[0])), lambda x: x[None])

    return one_seed


def split_seed_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """jax.random.split of every seed's key: (new keys, subkeys), each [num_seeds, 2]."""
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


def across_seeds(values: np.ndarray, fmt: str) -> str:
    """The mean, and with several seeds every seed's value."""
    text = format(float(np.mean(values)), fmt)
    return text if len(values) == 1 else f"{text} (seeds: {' '.join(format(float(v), fmt) for v in values)})"


def device_mesh(num_devices: int, axis: str) -> tuple[list, Optional[jax.sharding.Mesh]]:
    """The first num_devices local devices (0: all) and, with more than one, a 1-d mesh over them."""
    devices = jax.local_devices()[: num_devices or None]
    return devices, (jax.sharding.Mesh(np.array(devices), (axis,)) if len(devices) > 1 else None)


def state_shardings(state: Any, mesh: jax.sharding.Mesh, split: dict[str, int]) -> Any:
    """Where each leaf of a state (a flax struct) lives on a 1-d device mesh: the leaves of each field
    named in split are split across the devices along the axis split gives (a leaf with fewer axes is
    replicated); every other leaf is replicated. split {}: all of the state replicated."""
    NamedSharding, PartitionSpec = jax.sharding.NamedSharding, jax.sharding.PartitionSpec

    def along(axis: int) -> Callable:
        return lambda x: NamedSharding(mesh, PartitionSpec(*[None] * axis, mesh.axis_names[0]) if x.ndim > axis
                                       else PartitionSpec())

    replicated = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), state)
    return replicated.replace(**{name: jax.tree.map(along(axis), getattr(state, name)) for name, axis in split.items()})


def compile_all(parts: dict[str, Callable[[], Any]]) -> tuple[dict, float]:
    """Runs each part (a function that lowers and compiles) in order, saying which it compiles before it
    starts and how long it took, and returns ({name: what it returned}, total seconds)."""
    out, times, t0 = {}, {}, time.perf_counter()
    for name, part in parts.items():
        print(f"compiling the {name} with XLA ...", end=" ", flush=True)
        t = time.perf_counter()
        out[name] = part()
        times[name] = time.perf_counter() - t
        print(f"{times[name]:.1f}s", flush=True)
    total = time.perf_counter() - t0
    print(f"compiled in {total:.1f}s ({', '.join(f'{name} {s:.1f}s' for name, s in times.items())})", flush=True)
    return out, total


def metrics_line(m: dict, fields: tuple[tuple[str, str, str, bool], ...]) -> str:
    """An epoch's metrics for the console: " | "-joined "label value" of each field (label, metric
    name, format, every seed) whose metric m holds; a metric m lacks is left out. The value is the
    mean over seeds, and with every seed True and several seeds, each seed's value too."""
    return " | ".join(f"{label} " + (across_seeds(m[name], fmt) if every_seed else format(float(np.mean(m[name])), fmt))
                      for label, name, fmt, every_seed in fields if name in m)


# --- checkpoint files -----------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run it is loaded into."""


class CheckpointWriteError(OSError):
    """A checkpoint or run file could not be written (disk full, unwritable directory)."""


def atomic_write(path: str, chunks: list[bytes]) -> None:
    """Writes path.tmp, flushes and fsyncs it, then renames it over path: path is always either the
    previous complete file or the new complete one. On failure the .tmp is removed."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise CheckpointWriteError(f"cannot write {path}: {e.strerror or e}") from None


def write_state_file(path: str, header: dict, epoch: int, state: dict) -> int:
    """Writes {header, epoch, state} (state: nested dicts of numpy arrays) atomically; returns the
    file size in bytes."""
    payload = flax.serialization.msgpack_serialize({"header": header, "epoch": epoch, "state": state})
    atomic_write(path, [STATE_MAGIC, hashlib.sha256(payload).digest(), payload])
    return len(payload) + 48


def read_state_file(path: str, want: dict, describe: Callable[[dict], str]) -> tuple[dict, int, dict]:
    """Reads a file written by write_state_file; returns (header, epoch, state dict). A truncated or
    corrupt file, another file type, or a header that differs from `want` in any key (another env,
    depth, width...; describe(header) names the run) raises CheckpointError."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if blob[: len(STATE_MAGIC)] != STATE_MAGIC:
        raise CheckpointError(f"{path} is not a crl_depth state checkpoint (wrong magic bytes)")
    digest, payload = blob[16:48], blob[48:]
    if len(digest) != 32 or hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path} is truncated or corrupt (checksum mismatch, {len(blob):,} bytes)")
    try:
        restored = flax.serialization.msgpack_restore(payload)
        header, epoch, state = restored["header"], int(restored["epoch"]), restored["state"]
    except Exception as e:  # msgpack / structure errors: the file is not what it claims
        raise CheckpointError(f"{path} is not a readable state checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict) or header.get("format") != want["format"]:
        found = header.get("format") if isinstance(header, dict) else header
        raise CheckpointError(f"{path} is a {found!r} checkpoint, not a {want['format']!r} one")
    diffs = [k for k in want if header.get(k) != want[k]]
    if diffs:
        raise CheckpointError(f"{path} is for {describe(header)}, this run is {describe(want)} "
                              f"(differs in: {', '.join(diffs)})")
    return header, epoch, state


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def tree_to_dict(tree: Any) -> Any:
    """The leaves of any pytree as numpy arrays in nested dicts keyed by their path names (a single
    array: that array)."""
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    if len(flat) == 1 and not flat[0][0]:
        return np.asarray(flat[0][1])
    return flax.traverse_util.unflatten_dict({_path_name(p): np.asarray(x) for p, x in flat}, sep="/")


def tree_from_dict(path: str, template: Any, saved: Any, name: str = "") -> Any:
    """The inverse of tree_to_dict: the template's pytree (arrays or jax.ShapeDtypeStruct) filled with
    the saved leaves. Raises CheckpointError unless saved has exactly the template's leaves, shapes
    and dtypes (name: what a single array is called in the message)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    if len(flat) == 1 and not flat[0][0]:
        got = {"": saved} if saved is not None and not isinstance(saved, dict) else {}
    else:
        got = flax.traverse_util.flatten_dict(saved, sep="/") if isinstance(saved, dict) else {}
    want = {_path_name(p): x for p, x in flat}
    describe = lambda x: "missing" if x is None else f"{np.asarray(x).dtype}{list(np.shape(x))}"
    for leaf in sorted(set(want) | set(got)):
        w, g = want.get(leaf), got.get(leaf)
        if w is None or g is None or tuple(np.shape(g)) != tuple(w.shape) or np.asarray(g).dtype != w.dtype:
            expected = "absent" if w is None else f"{np.dtype(w.dtype)}{list(w.shape)}"
            raise CheckpointError(f"{path} does not fit this run: {leaf or name} is {describe(g)} in the checkpoint, "
                                  f"{expected} expected")
    return jax.tree_util.tree_unflatten(treedef, [got[_path_name(p)] for p, _ in flat])


def save_state(path: str, header: dict, epoch: int, state: dict[str, Any]) -> int:
    """Writes a run's state, {name: any pytree}, under header atomically; returns the file size in bytes."""
    return write_state_file(path, header, epoch, {name: tree_to_dict(tree) for name, tree in state.items()})


def load_state(path: str, want: dict, describe: Callable[[dict], str],
               template: Callable[[dict], dict[str, Any]]) -> tuple[dict, int, dict[str, Any]]:
    """Reads a file written by save_state for a run whose header is `want`; template(the file's header)
    is what it must hold, {name: the pytree a fresh run would build (arrays or jax.ShapeDtypeStruct)}.
    Returns (header, epoch, {name: that pytree with the file's numpy leaves}). Anything else - a
    truncated or corrupt file, another file type, another env or network, a leaf of another name,
    shape or dtype - raises CheckpointError."""
    header, epoch, saved = read_state_file(path, want, describe)
    return header, epoch, {name: tree_from_dict(path, tree, saved.get(name), name)
                           for name, tree in template(header).items()}


def read_networks(path: str) -> tuple[dict, dict]:
    """(header, networks) of a checkpoint.msgpack written by Run.save_networks."""
    header, _, state = read_state_file(path, {"format": NETWORKS_FORMAT}, lambda h: "")
    return header, state


def describe(header: dict, keys: tuple[str, ...]) -> str:
    """A run in an error message, from the keys of its checkpoint header, each in words without an
    "_id" suffix: ("env_id", "actor_depth") -> "env reacher actor depth 4"."""
    return " ".join(f"{k.removesuffix('_id').replace('_', ' ')} {header.get(k)}" for k in keys)


# --- the run directory ----------------------------------------------------------------------------
class Run:
    """One run: its directory runs/{run_name}/ (or the --resume directory), the seeds it trains, and
    every file written in it. env_id: the first part of the run name; header: what state.msgpack must
    match to be resumed by this run; describe(header) names a run in error messages; counter: the
    progress count logged with every metrics line (env_steps, gradient_steps)."""

    def __init__(self, args: Any, env_id: str, header: dict, describe: Callable[[dict], str], counter: str):
        self.args, self.header, self.describe, self.counter = args, header, describe, counter
        self.seeds = [args.seed + i for i in range(args.num_seeds)]
        if args.resume:
            self.dir = args.resume.rstrip("/")
        else:  # open() adds -2, -3 ... if a run of the same name started in the same second
            seed_name = str(args.seed) if args.num_seeds == 1 else f"{args.seed}-{self.seeds[-1]}"
            self.dir = os.path.join(args.runs_dir, f"{env_id}__{args.exp_name}__{seed_name}__{int(time.time())}")
        self.last_good, self.wandb, self.epoch_times, self.resume_epoch = None, None, [], None

    @property
    def name(self) -> str:
        return os.path.basename(self.dir)

    @property
    def state_path(self) -> str:
        return os.path.join(self.dir, STATE_FILE)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.dir, "metrics.jsonl")

    def load(self, template: Callable[[dict], dict[str, Any]]) -> tuple[dict, int, dict[str, Any]]:
        """--resume: the checkpoint (load_state: its header, epoch and state), checked before anything is
        compiled or written; one line and exit 2 if there is none or it does not fit."""
        if not os.path.isfile(self.state_path):
            fail(f"--resume {self.dir}: no {STATE_FILE} in it (stopped before its first checkpoint; "
                 f"start the run again)")
        try:
            header, epoch, state = load_state(self.state_path, self.header, self.describe, template)
        except CheckpointError as e:
            fail(str(e))
        self.last_good, self.resume_epoch = self.state_path, epoch
        return header, epoch, state

    def open(self) -> None:
        """A fresh run creates its directory, under a name no other run holds; a resumed run keeps the
        metrics.jsonl lines up to the checkpoint's epoch (the later epochs run again) and removes the
        state .tmp a kill cut off. Both then write args.json and, with --track, start or continue the
        wandb run. An unwritable directory: one line, exit 2."""
        args = self.args
        try:
            if self.resume_epoch is None:
                self._make_dir()
            else:
                self._keep_metrics_through(self.resume_epoch)
                if os.path.exists(self.state_path + ".tmp"):
                    os.remove(self.state_path + ".tmp")
            config = dataclasses.asdict(dataclasses.replace(args, resume=None))
            atomic_write(os.path.join(self.dir, "args.json"), [json.dumps(config, indent=2).encode()])
        except OSError as e:
            fail(f"cannot write the run directory {self.dir}: {e.strerror or e}")
        if args.track:  # wandb is imported here only, so that it is needed only with --track
            import wandb

            id_path = os.path.join(self.dir, "wandb_id.txt")
            if os.path.isfile(id_path):
                with open(id_path) as f:
                    wandb_id = f.read().strip()
            else:
                wandb_id = os.urandom(4).hex()
                atomic_write(id_path, [wandb_id.encode()])
            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, mode=args.wandb_mode,
                       name=self.name, config=dataclasses.asdict(args), id=wandb_id, resume="allow")
            self.wandb = wandb

    def announce(self, what: str, num_devices: int, split: str, counts: Any, compute_dtype: str = "float32") -> None:
        """The run's header line: its directory, what it trains, the backend, seeds, devices (with
        `split` split across them) and the matmul dtype (unless float32); a resumed run says from where."""
        print(f"run {self.dir} | {what} | backend {jax.default_backend()}"
              + (f" | seeds {', '.join(map(str, self.seeds))} in one process" if len(self.seeds) > 1 else "")
              + (f" | {num_devices} devices, {split} split" if num_devices > 1 else "")
              + (f" | {compute_dtype} matmuls" if compute_dtype != "float32" else ""), flush=True)
        if self.resume_epoch is not None:
            print(f"resuming from {self.state_path} at epoch {self.resume_epoch} ({int(counts[0]):,} "
                  f"{self.counter.replace('_', ' ')})", flush=True)

    def _make_dir(self) -> None:
        """Creates the run directory; if another run holds the name, the next free one of name-2, name-3 ..."""
        base = self.dir
        for n in range(2, 1000):
            try:
                return os.makedirs(self.dir, exist_ok=False)
            except FileExistsError:
                self.dir = f"{base}-{n}"
        raise FileExistsError(errno.EEXIST, f"{base} and {base}-2 .. -999 all exist")

    def _keep_metrics_through(self, epoch: int) -> None:
        """Rewrites metrics.jsonl with the records of epochs <= epoch only; a line cut off by a kill is
        dropped."""
        kept = []
        if os.path.isfile(self.metrics_path):
            with open(self.metrics_path) as f:
                for line in f:
                    try:
                        if json.loads(line)["epoch"] <= epoch:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except (ValueError, KeyError, TypeError):
                        pass
        atomic_write(self.metrics_path, ["".join(kept).encode()])

    def log(self, epoch: int, counts: Any, per_seed: dict, shared: dict) -> list[dict]:
        """Appends one metrics.jsonl line per seed (per_seed values and counts have a leading seed
        axis) and, with --track, logs one wandb step: each seed's values under seed{s}/ (with several
        seeds) and their mean under the plain names."""
        records = [{"epoch": epoch, "seed": seed, self.counter: int(counts[i]),
                    **{k: float(v[i]) for k, v in per_seed.items()}, **shared} for i, seed in enumerate(self.seeds)]
        with open(self.metrics_path, "a") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
        if self.wandb is not None:
            logged = {k: float(np.mean(v)) for k, v in per_seed.items()} | shared
            if len(self.seeds) > 1:
                logged |= {f"seed{seed}/{k}": float(v[i]) for k, v in per_seed.items()
                           for i, seed in enumerate(self.seeds)}
            self.wandb.log(logged, step=records[0][self.counter])
        return records

    def eta(self, epoch_s: float, epochs_left: int) -> str:
        """The time left at the mean epoch time so far."""
        self.epoch_times.append(epoch_s)
        return format_duration(epochs_left * sum(self.epoch_times) / len(self.epoch_times))

    def check_finite(self, epoch: int, metrics: dict[str, Any]) -> None:
        """The divergence guard: one line and exit 1, before the bad state can overwrite the last good
        checkpoint, if any value of metrics (per seed: {name: [num_seeds] numbers}) is not finite. The
        line names each such metric (and seed)."""
        of_seed = (lambda i: f" of seed {self.seeds[i]}") if len(self.seeds) > 1 else (lambda i: "")
        bad = [f"{name} ({float(v[i])}){of_seed(i)}" for i in range(len(self.seeds)) for name, v in metrics.items()
               if not np.isfinite(np.asarray(v, np.float64)[i])]
        if bad:
            fail(f"non-finite {', '.join(bad)} at epoch {epoch}; last good checkpoint: "
                 f"{self.last_good or 'none (none written yet)'}", 1)

    def checkpoint(self, epoch: int, last_epoch: int, state: dict[str, Any], **header: Any) -> None:
        """Writes state ({name: any pytree}, save_state) to state.msgpack every --checkpoint-every epochs and
        after the last one; header: what the file says of it beyond the run's header (load hands it back)."""
        if epoch % self.args.checkpoint_every and epoch != last_epoch:
            return
        t_save = time.perf_counter()
        try:
            size = save_state(self.state_path, {**self.header, **header}, epoch, state)
        except CheckpointWriteError as e:
            fail(f"{e}; last good checkpoint: {self.last_good or 'none'}", 1)
        self.last_good = self.state_path
        print(f"checkpoint: epoch {epoch} -> {self.state_path} ({size / 1e6:,.1f} MB, "
              f"{time.perf_counter() - t_save:.1f}s)", flush=True)

    def save_networks(self, networks: Any, header: dict, epoch: int) -> None:
        """The final networks (leaves with a leading seed axis), one checkpoint file per seed; header
        describes them (depths, width...)."""
        for i, seed in enumerate(self.seeds):
            name = "checkpoint.msgpack" if len(self.seeds) == 1 else f"checkpoint_seed{seed}.msgpack"
            try:
                write_state_file(os.path.join(self.dir, name), {**header, "format": NETWORKS_FORMAT},
                                 epoch, tree_to_dict(jax.tree.map(lambda x: x[i], networks)))
            except CheckpointWriteError as e:
                fail(f"{e}; last good checkpoint: {self.last_good or 'none'}", 1)

    def score(self, metrics: dict[str, str], out_of: int, last: int = 5) -> None:
        """Prints the run's score as the paper defines it: of each metric in metrics ({label: metric name},
        e.g. the time at goal), the mean of the last `last` evaluations after training (epochs >= 1, read
        back from metrics.jsonl, so epochs before a --resume count), out of `out_of`; per seed, and with
        several seeds their mean and standard error. A metric the run did not log is left out."""
        with open(self.metrics_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for label, name in metrics.items():
            per_seed = {seed: [r[name] for r in records if r["seed"] == seed and r["epoch"] >= 1 and name in r][-last:]
                        for seed in self.seeds}
            if not all(per_seed.values()):
                continue
            scores = np.array([np.mean(v) for v in per_seed.values()])
            n = min(len(v) for v in per_seed.values())
            text = f"score ({label}, mean of the last {n} evaluations, out of {out_of}): {scores.mean():.1f}"
            if len(scores) > 1:
                text += (f" ± {scores.std(ddof=1) / np.sqrt(len(scores)):.1f} (standard error over {len(scores)} "
                         f"seeds; {', '.join(f'seed {s} {v:.1f}' for s, v in zip(self.seeds, scores))})")
            print(text, flush=True)

    def finish(self) -> None:
        print(f"done: {self.dir}", flush=True)
        if self.wandb is not None:
            self.wandb.finish()
