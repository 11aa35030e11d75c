"""Figures of the CRL scripts: the maze critic heatmap (--plot-critic) and the collector-learner's
time-at-goal curves (--plot). matplotlib is imported only when a figure is drawn."""

import dataclasses
import json
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from crl_envs import ENVS, GoalEnv, Maze, farthest_goal_cell, make_env
from crl_runs import CheckpointError, RunArgs, fail, flag, read_networks, tree_from_dict

HEATMAP_PANEL_PX, HEATMAP_DPI = (400, 440), 100  # one panel's size in the PNG (width, height)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def critic_heatmap(env: GoalEnv, score: Callable[[jax.Array, jax.Array], jax.Array], goal_cell: tuple[int, int],
                   points_per_cell: int = 5) -> np.ndarray:
    """The critic's score(states [n, obs_dim], goals [n, goal_dim]) -> [n] over the maze: each state is
    the robot standing still in its initial pose with its torso at one of points_per_cell^2 points of
    every free cell, the goal at goal_cell's centre. Returns an array [rows * k, cols * k]
    (k = points_per_cell) in the picture's orientation, NaN on walls."""
    maze, k = env.maze, points_per_cell
    height, width = len(maze.rows), len(maze.rows[0])
    offsets = ((np.arange(k) + 0.5) / k - 0.5) * maze.scale  # sub-cell points, along x and along y
    x = np.repeat(np.arange(height) * maze.scale, k) + np.tile(offsets, height)
    y = np.repeat(np.arange(width) * maze.scale, k) + np.tile(offsets, width)
    xy = np.stack(np.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    goal_xy = jnp.asarray(maze.xy([goal_cell])[0])
    goal = env.goal_at(goal_xy)

    @jax.jit
    def scores(xy):
        states = jax.vmap(env.still_state, in_axes=(0, None))(xy, goal_xy)
        return score(states, jnp.broadcast_to(goal, (states.shape[0], goal.shape[0])))

    values = np.asarray(scores(xy)).reshape(height * k, width * k)
    wall = np.array([[c == "#" for c in row] for row in maze.rows])
    return np.where(np.kron(wall, np.ones((k, k))) > 0, np.nan, values)


def plot_critic_heatmap(path: str, env_id: str, env: GoalEnv, panels: list[tuple[str, Callable]],
                        goal_cell: tuple[int, int]) -> None:
    """Writes a PNG, one panel per (title, score) side by side (score as in critic_heatmap), each
    HEATMAP_PANEL_PX: the critic's score over the free cells, walls grey, start (white circle) and
    goal (red star) marked. Each panel has its own colour scale."""
    plt = _pyplot()
    maze = env.maze
    s, height, width = maze.scale, len(maze.rows), len(maze.rows[0])
    extent = (-0.5 * s, (width - 0.5) * s, (height - 0.5) * s, -0.5 * s)  # y right, x down: the picture
    (w, h), n = HEATMAP_PANEL_PX, len(panels)
    fig, axes = plt.subplots(1, n, figsize=(w * n / HEATMAP_DPI, h / HEATMAP_DPI), dpi=HEATMAP_DPI,
                             squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("0.35")  # walls
    for ax, (title, score) in zip(axes[0], panels):
        values = critic_heatmap(env, score, goal_cell)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, extent=extent, interpolation="nearest")
        (sx, sy), (gx, gy) = maze.xy([maze.start])[0], maze.xy([goal_cell])[0]
        ax.plot(sy, sx, "o", color="white", markeredgecolor="black", markersize=9, label="start")
        ax.plot(gy, gx, "*", color="red", markeredgecolor="black", markersize=16, label="goal")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("y (m)")
        ax.set_ylabel("x (m)")
        fig.colorbar(image, ax=ax, shrink=0.8, label="f(s, pi(s, g), g)")
    fig.suptitle(f"{env_id}: critic score for reaching goal cell {tuple(goal_cell)}", fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=HEATMAP_DPI)
    plt.close(fig)


def read_curves(run_dir: str, names: list[str]) -> tuple[dict, list[int], dict[str, np.ndarray]]:
    """A run's args.json, its evaluated env steps and, for each metric name given, its values
    [epoch, seed] from metrics.jsonl (one line per seed and epoch)."""
    with open(os.path.join(run_dir, "args.json")) as f:
        run_args = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    epochs = sorted({r["epoch"] for r in records})
    per_epoch = [[r for r in records if r["epoch"] == epoch] for epoch in epochs]  # one record per seed
    return (run_args, [rs[0]["env_steps"] for rs in per_epoch],
            {name: np.array([[r[name] for r in rs] for rs in per_epoch]) for name in names})


def plot_curves(path: str, panels: list[tuple[str, str, list[int], list[tuple[str, np.ndarray]]]]) -> None:
    """Writes a PNG, one panel per (title, y label, env steps, curves) side by side; each curve is
    (label, values [epoch, seed]), drawn as the mean over seeds, shaded from the lowest to the highest
    seed when there are several."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for ax, (title, ylabel, steps, curves) in zip(axes[0], panels):
        for (label, values), color in zip(curves, ("tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red")):
            ax.plot(steps, values.mean(axis=1), color=color, label=label)
            if values.shape[1] > 1:
                ax.fill_between(steps, values.min(axis=1), values.max(axis=1), color=color, alpha=0.2, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- --plot-critic: flags and saved checkpoints -----------------------------------------------------
@dataclasses.dataclass
class CriticPlotArgs(RunArgs):
    """The --plot-critic flags (crl_depth.py's Args inherits them, and RunArgs' with them)."""

    plot_critic: bool = False
    """mazes: write a PNG heatmap of the critic's score for reaching --plot-goal from every free cell of
    the evaluation layout, after training or, with --load, from saved checkpoints without training"""
    load: tuple[str, ...] = ()
    """checkpoint.msgpack file(s) for --plot-critic, one panel each side by side (several paths or a
    comma list); each network's shape comes from the args.json beside it, else from --depth, --width..."""
    plot_goal: Optional[tuple[int, int]] = None
    """goal cell (row column) of the heatmap; default: the evaluation layout's G cell farthest from the
    start along the maze"""
    plot_out: Optional[str] = None
    """PNG path of the heatmap; default critic_heatmap.png in the run directory (with --load: beside the
    first checkpoint)"""

    def plot_flags_error(self, env_id: str) -> Optional[str]:
        """One line on what is wrong with the flags above for a run on env_id, or None."""
        if self.load and not self.plot_critic:
            return "--load is only read by --plot-critic (to continue a training run use --resume RUN_DIR)"
        if not self.plot_critic:
            return None
        env = make_env(env_id, eval=True)
        if not isinstance(getattr(env, "maze", None), Maze):
            mazes = [name for name in ENVS if name.endswith("_maze")]
            return f"--plot-critic needs a maze env ({', '.join(mazes)}), not {env_id!r}"
        if self.plot_goal is not None and tuple(self.plot_goal) not in env.maze.cells("RG."):
            return (f"--plot-goal {self.plot_goal[0]} {self.plot_goal[1]} is not a free cell of {env_id}'s "
                    f"evaluation layout (rows: {'/'.join(env.maze.rows)})")
        return None

    def write_heatmap(self, env_id: str, panels: list[tuple[str, Callable]], out_dir: str) -> None:
        """The heatmap of panels (title, score) at --plot-out, else critic_heatmap.png in out_dir, for
        --plot-goal, else the farthest G cell."""
        env = make_env(env_id, eval=True)
        out = self.plot_out or os.path.join(out_dir, "critic_heatmap.png")
        plot_critic_heatmap(out, env_id, env, panels, self.plot_goal or farthest_goal_cell(env.maze))
        print(f"critic heatmap: {out}", flush=True)

    def plot_checkpoints(self, env_id: str, network: dict, same: dict, build: "Build") -> None:
        """--plot-critic --load PATH [PATH ...] (several paths or comma lists): the heatmap of env_id's saved
        critics side by side, no training (beside the first, by default). network, same, build: as in
        load_checkpoint."""
        paths = [p for entry in self.load for p in entry.split(",") if p]
        try:
            panels = [load_checkpoint(p, network, same, build) for p in paths]
        except CheckpointError as e:
            fail(str(e))
        self.write_heatmap(env_id, panels, os.path.dirname(paths[0]))


# build(network) of a network config {flag field: value}: (the saved parameters' shapes, a function from
# parameters to the critic score, the panel's title, the network in words for an error)
Build = Callable[[dict], tuple[Any, Callable, str, str]]


def load_checkpoint(path: str, network: dict, same: dict, build: Build) -> tuple[str, Callable]:
    """A checkpoint.msgpack into (panel title, critic score). network: the command line's network flags
    {field: value}; the args.json beside the checkpoint (the run that wrote it) gives them instead when
    it is there, and must agree with same {field: value} (e.g. the env). A checkpoint that does not fit
    raises CheckpointError naming the first parameter that differs."""
    if not os.path.isfile(path):
        raise CheckpointError(f"--load {path}: no such file")
    run_args_path = os.path.join(os.path.dirname(path), "args.json")
    source, cfg = "the command line", dict(network)
    if os.path.isfile(run_args_path):
        with open(run_args_path) as f:
            run_args = json.load(f)
        for name, value in same.items():
            if run_args.get(name, value) != value:
                raise CheckpointError(f"--load {path}: trained on {run_args[name]!r}, not on {flag(name)} {value!r}")
        source, cfg = run_args_path, {name: run_args.get(name, value) for name, value in cfg.items()}
    template, score_of, title, about = build(cfg)
    try:
        params = tree_from_dict(path, template, read_networks(path)[1])
    except CheckpointError as e:
        if "does not fit this run: " not in str(e):
            raise
        raise CheckpointError(
            f"--load {path} does not fit a network of {about} (from {source}): "
            f"{str(e).split('does not fit this run: ')[1]}; give the run's {'/'.join(map(flag, network))}") from None
    run = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{title}\n{run[:48]}", score_of(params)
