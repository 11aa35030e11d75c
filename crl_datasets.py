"""The datasets of crl_depth_offline.py: reading the two .npz formats (docs/offline.md) into the
replay buffer's layout, and writing the crl_depth.py one. File formats only; the offline algorithm
is in crl_depth_offline.py.

Both formats end up as states [T, C, obs_dim], actions [T, C, A] and an episode id per step,
non-decreasing down each column, so that the buffer_sample of crl_depth.py relabels exactly as
online (never across an episode boundary). A buffer written by `crl_depth.py --save-buffer` keeps
its env columns. An OGBench dataset is one sequence of steps: episode ids come from
terminals/timeouts (and breaks s' != next s), and the sequence is cut into num_columns contiguous
columns. Every check raises DatasetError, whose message is the one line the script prints after
`error: `.
"""

import os
import zipfile
from typing import Any, NamedTuple, Optional

import numpy as np

from crl_envs import ENVS

CRL_KEYS = ("format", "version", "env_id", "state", "action", "episode_id", "obs_dim", "goal_start",
            "goal_end", "episode_length")
OGBENCH_KEYS = ("observations", "actions", "terminals")


class DatasetError(Exception):
    """Bad dataset input; its message is the one line printed after `error: `."""


class OfflineData(NamedTuple):
    kind: str  # "crl" or "ogbench"
    env_id: str  # brax env id (crl) or OGBench dataset name
    state: np.ndarray  # [T, C, obs_dim] float32
    action: np.ndarray  # [T, C, action_size] float32, in [-1, 1]
    episode_id: np.ndarray  # [T, C] int32, non-decreasing down each column
    obs_dim: int
    goal_start: int
    goal_end: int
    window: int  # steps per sampled window
    episode_length: Optional[int]  # the buffer's run's episode length (crl); None for OGBench
    num_dropped: int  # OGBench steps left out by the cut into equal columns
    num_transitions: int  # steps with a later step of the same episode in their column


class DatasetFlags(NamedTuple):
    """What the command line says of the dataset, None where the dataset decides; the errors name
    each by its flag of crl_depth_offline.py (--dataset-format, --env-id, --obs-dim, ...)."""

    dataset_format: str = "auto"  # "auto", "crl" or "ogbench"
    env_id: Optional[str] = None
    obs_dim: Optional[int] = None
    goal_start: Optional[int] = None
    goal_end: Optional[int] = None
    window_length: Optional[int] = None
    num_columns: Optional[int] = None


def _keys(files: dict) -> str:
    return ", ".join(sorted(files)) or "none"


def read_npz(path: str) -> dict:
    if not os.path.isfile(path):
        raise DatasetError(f"--dataset {path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith(b"PK") and magic != b"\x93NUMPY":  # an .npz is a zip archive, an .npy starts so
        raise DatasetError(f"--dataset {path}: not an .npz file (an .npz is a zip archive of .npy arrays)")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DatasetError(f"--dataset {path}: a single .npy array, not an .npz archive")
        with f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        raise DatasetError(f"--dataset {path}: not a readable .npz without pickled objects ({first_line})") from e


def save_crl_buffer(path: str, env_id: str, spec: Any, episode_length: int, state: np.ndarray, action: np.ndarray,
                    episode_id: np.ndarray) -> None:
    """Writes a replay buffer's steps, oldest first (state [T, C, obs_dim], action [T, C, A], episode_id
    [T, C]), as a crl_depth.py buffer (`crl_depth.py --save-buffer`); spec: the env's crl_envs.ENVS entry."""
    np.savez(path, format="crl_depth_buffer", version=1, env_id=env_id, state=state, action=action,
             episode_id=episode_id, obs_dim=spec.obs_dim, goal_start=spec.goal_start, goal_end=spec.goal_end,
             episode_length=episode_length)


def episode_ids_from_ends(ends: np.ndarray) -> np.ndarray:
    """Episode id of every step, given `ends` (True on the last step of each episode)."""
    return np.concatenate([[0], np.cumsum(ends[:-1].astype(np.int64))]).astype(np.int32)


def _check_slice(obs_dim: int, goal_start: int, goal_end: int) -> None:
    if not 0 <= goal_start < goal_end <= obs_dim:
        raise DatasetError(f"the goal slice [{goal_start}:{goal_end}] must lie inside the state's {obs_dim} features")


def _load_crl(flags: DatasetFlags, path: str, files: dict) -> tuple:
    missing = [k for k in CRL_KEYS if k not in files]
    if missing:
        raise DatasetError(f"--dataset {path}: missing key(s) {', '.join(missing)} of a crl_depth.py buffer "
                           f"(found: {_keys(files)})")
    env_id = str(files["env_id"])
    if env_id not in ENVS:
        raise DatasetError(f"--dataset {path}: env {env_id!r} is not one of this script's envs ({', '.join(ENVS)})")
    if flags.env_id is not None and flags.env_id != env_id:
        raise DatasetError(f"--env-id {flags.env_id} does not match the buffer's env {env_id}")
    state, action, episode_id = files["state"], files["action"], files["episode_id"]
    if flags.num_columns is not None and (state.ndim != 3 or flags.num_columns != state.shape[1]):
        # (a resumed run's flags.json records the buffer's own column count, which is accepted)
        raise DatasetError("--num-columns applies to OGBench datasets only; a crl_depth.py buffer keeps its env "
                           "columns")
    if state.ndim != 3 or action.ndim != 3 or episode_id.ndim != 2:
        raise DatasetError(f"shape mismatch: state {state.shape}, action {action.shape}, episode_id "
                           f"{episode_id.shape} are not [T, C, obs_dim], [T, C, A], [T, C]")
    if not (state.shape[:2] == action.shape[:2] == episode_id.shape):
        raise DatasetError(f"shape mismatch: state {state.shape}, action {action.shape} and episode_id "
                           f"{episode_id.shape} differ in [T, C]")
    spec = ENVS[env_id]
    stored = tuple(int(files[k]) for k in ("obs_dim", "goal_start", "goal_end"))
    if (state.shape[2], *stored) != (spec.obs_dim, spec.obs_dim, spec.goal_start, spec.goal_end):
        raise DatasetError(f"shape mismatch between dataset and env: the buffer has {state.shape[2]} state features, "
                           f"obs_dim {stored[0]} and goal slice [{stored[1]}:{stored[2]}], env {env_id} has "
                           f"obs_dim {spec.obs_dim} and goal slice [{spec.goal_start}:{spec.goal_end}]")
    for name, value in (("obs_dim", spec.obs_dim), ("goal_start", spec.goal_start), ("goal_end", spec.goal_end)):
        given = getattr(flags, name)
        if given is not None and given != value:
            raise DatasetError(f"--{name.replace('_', '-')} {given} does not match env {env_id}'s {value}")
    if not np.issubdtype(episode_id.dtype, np.integer):
        raise DatasetError(f"episode_id must be integers (got {episode_id.dtype})")
    episode_length = int(files["episode_length"])
    return (env_id, state, action, episode_id.astype(np.int32), spec.obs_dim, spec.goal_start, spec.goal_end,
            flags.window_length or episode_length, episode_length, 0)


def _load_ogbench(flags: DatasetFlags, path: str, files: dict) -> tuple:
    missing = [k for k in OGBENCH_KEYS if k not in files]
    if missing:
        raise DatasetError(f"--dataset {path}: missing key(s) {', '.join(missing)} of an OGBench dataset "
                           f"(found: {_keys(files)})")
    obs, action, terminals = files["observations"], files["actions"], files["terminals"]
    timeouts, next_obs = files.get("timeouts"), files.get("next_observations")
    if obs.ndim != 2 or action.ndim != 2:
        raise DatasetError(f"shape mismatch: observations {obs.shape} and actions {action.shape} must be [N, D] "
                           "and [N, A]")
    n = obs.shape[0]
    for name, x in (("actions", action), ("terminals", terminals), ("timeouts", timeouts)):
        if x is not None and (x.shape[0] != n or x.ndim != (2 if name == "actions" else 1)):
            raise DatasetError(f"shape mismatch: {name} {x.shape} does not match observations {obs.shape}")
    if next_obs is not None and next_obs.shape != obs.shape:
        raise DatasetError(f"shape mismatch: next_observations {next_obs.shape} differ from observations {obs.shape}")
    if flags.obs_dim is None or flags.goal_start is None or flags.goal_end is None:
        raise DatasetError(f"an OGBench dataset needs --obs-dim, --goal-start and --goal-end (its observations "
                           f"have {obs.shape[1]} features)")
    if flags.obs_dim != obs.shape[1]:
        raise DatasetError(f"shape mismatch: --obs-dim {flags.obs_dim} but the dataset's observations have "
                           f"{obs.shape[1]} features")
    _check_slice(flags.obs_dim, flags.goal_start, flags.goal_end)
    if n == 0:
        raise DatasetError(f"--dataset {path}: no steps")
    # episode ends: terminals or timeouts; with next_observations also a break in the chain s' != next s
    ends = terminals > 0
    if timeouts is not None:
        ends = ends | (timeouts > 0)
    if next_obs is not None:
        ends[:-1] |= np.any(next_obs[:-1] != obs[1:], axis=1)
    ends[-1] = True
    episode_id = episode_ids_from_ends(ends)
    obs, action = obs.astype(np.float32), action.astype(np.float32)
    if next_obs is not None:  # each episode's final next observation is a goal for its earlier steps
        at = np.flatnonzero(ends) + 1
        obs = np.insert(obs, at, next_obs[at - 1].astype(np.float32), axis=0)
        action = np.insert(action, at, 0.0, axis=0)  # never trained on: the last step has no future
        episode_id = np.insert(episode_id, at, episode_id[at - 1])
    steps = obs.shape[0]
    window = flags.window_length or max(2, int(np.bincount(episode_id).max()))
    window = min(window, steps) if flags.window_length is None else window
    num_columns = flags.num_columns or max(1, min(256, steps // window))
    column_length = steps // num_columns
    if column_length < window:
        raise DatasetError(f"{steps} steps in {num_columns} column(s) give columns of {column_length} steps, "
                           f"shorter than a window of {window} (lower --num-columns or --window-length)")
    cut = num_columns * column_length
    layout = lambda x: np.swapaxes(x[:cut].reshape((num_columns, column_length) + x.shape[1:]), 0, 1)
    env_id = flags.env_id or os.path.basename(path).removesuffix(".npz").removesuffix("-val")
    return (env_id, layout(obs), layout(action), layout(episode_id), flags.obs_dim, flags.goal_start, flags.goal_end,
            window, None, steps - cut)


def load_dataset(path: str, flags: DatasetFlags) -> OfflineData:
    """Reads the .npz at path (--dataset) into the buffer layout; raises DatasetError (one line) on bad input."""
    files = read_npz(path)
    kind = flags.dataset_format
    if kind == "auto":
        if "format" in files and str(files["format"]) == "crl_depth_buffer":
            kind = "crl"
        elif "observations" in files:
            kind = "ogbench"
        else:
            raise DatasetError(f"--dataset {path}: neither a crl_depth.py buffer (format, env_id, state, action, "
                               f"episode_id, ...) nor an OGBench dataset (observations, actions, terminals); found "
                               f"keys: {_keys(files)}")
    loaded = (_load_crl if kind == "crl" else _load_ogbench)(flags, path, files)
    env_id, state, action, episode_id, obs_dim, goal_start, goal_end, window, episode_length, dropped = loaded
    if action.shape[-1] == 0 or state.shape[0] == 0:
        raise DatasetError(f"--dataset {path}: empty states or actions ({state.shape}, {action.shape})")
    if not (np.all(np.isfinite(state)) and np.all(np.isfinite(action))):
        raise DatasetError(f"--dataset {path}: non-finite values in the states or actions")
    if np.max(np.abs(action)) > 1.0 + 1e-6:
        raise DatasetError(f"--dataset {path}: actions outside [-1, 1] (max |a| = {np.max(np.abs(action)):.3g}), "
                           "which the tanh actor cannot produce")
    if np.any(np.diff(episode_id, axis=0) < 0):
        raise DatasetError(f"--dataset {path}: episode ids decrease down a column")
    if window < 2 or window > state.shape[0]:
        raise DatasetError(f"the window of {window} steps must be at least 2 and at most the {state.shape[0]} "
                           "steps of a column")
    num_transitions = int(np.sum(episode_id[1:] == episode_id[:-1]))
    return OfflineData(kind, env_id, state.astype(np.float32), action.astype(np.float32),
                       episode_id.astype(np.int32), obs_dim, goal_start, goal_end, window, episode_length, dropped,
                       num_transitions)


def check_env_shapes(data: OfflineData, obs_size: int, action_size: int) -> None:
    """Raises DatasetError if the evaluation env's observation (state ++ goal for brax, the raw
    observation for OGBench) or action size differs from the dataset's."""
    expected = data.obs_dim + (data.goal_end - data.goal_start) if data.kind == "crl" else data.obs_dim
    if (obs_size, action_size) != (expected, data.action.shape[-1]):
        raise DatasetError(f"shape mismatch between dataset and env {data.env_id}: the env has observations of "
                           f"{obs_size} and actions of {action_size}, the dataset {expected} and "
                           f"{data.action.shape[-1]}")

