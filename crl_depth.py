"""Online contrastive RL (CRL) with residual networks that scale from 4 to 1024 layers.

Reproduces "1000 Layer Networks for Self-Supervised RL: Scaling Depth Can Enable New Goal-Reaching
Capabilities" (Wang et al., NeurIPS 2025; arXiv 2503.14858): self-supervised goal-conditioned RL
with no rewards and no demonstrations. A critic of two encoders, phi(s, a) and psi(g), is trained
with InfoNCE on hindsight-relabelled goals; a SAC-style actor maximises the critic's score. Section 4
(main table, depth sweep) and the ablations of section 5 run from this file. Read it top to bottom:
Args, environments, network, replay buffer, losses, seeds, checkpoints, training loop, evaluation,
main. The blocks marked SHARED BLOCK are copied verbatim into crl_depth_offline.py and
crl_collector_learner.py (seeds: into crl_depth_offline.py only; tests/test_shared_blocks.py checks
it; tools/sync_shared_blocks.py copies a fix across).
"""

import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any, Callable, Literal, NamedTuple, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from brax import actuator as brax_actuator
from brax import base as brax_base
from brax.envs.base import PipelineEnv, State
from brax.io import mjcf
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec


# ==================================================================================================
# Args
# ==================================================================================================
@dataclasses.dataclass
class Args:
    # --- experiment ---
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
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
    render: bool = False
    """after training, write an HTML rollout of the deterministic policy (brax html viewer)"""
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
    save_buffer: bool = False
    """after training, write the replay buffer to runs/{run_name}/buffer.npz, the dataset of
    crl_depth_offline.py (its keys: docs/offline.md)"""
    checkpoint_every: int = 10
    """write the full training state to runs/{run_name}/state.msgpack every N epochs (and after the
    last); --resume continues from it"""
    checkpoint_buffer: bool = True
    """include the replay buffer in state.msgpack (--no-checkpoint-buffer for very large buffers:
    a resumed run then refills it with random actions)"""
    resume: Optional[str] = None
    """continue the run in this run directory from its state.msgpack (its args.json gives the settings)"""

    # --- environment ---
    env_id: str = "humanoid"
    """environment id, one of the keys of ENVS below (humanoid, ant, reacher)"""
    num_envs: int = 512
    """number of parallel training environments"""
    episode_length: int = 1000
    """steps per episode (training and evaluation); also the length of a sampled window"""
    num_eval_envs: int = 128
    """number of evaluation environments (one episode each per evaluation)"""

    # --- algorithm ---
    total_env_steps: int = 100_000_000
    """total environment steps, prefill included"""
    num_epochs: int = 100
    """number of epochs; an evaluation runs after each"""
    unroll_length: int = 62
    """environment steps collected per env per training step"""
    num_sgd_steps: int = 800
    """SGD steps per training step (800 per 512 x 62 env steps is the paper's 1:40 ratio)"""
    batch_size: int = 512
    """batch size of each SGD step (also the number of InfoNCE negatives + 1)"""
    max_replay_size: int = 10_000
    """replay buffer capacity in steps per env"""
    min_replay_size: int = 1_000
    """steps per env collected with uniform random actions before training starts"""
    gamma: float = 0.99
    """discount: a relabelled goal k steps ahead is drawn with weight gamma^k"""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor"""
    critic_lr: float = 3e-4
    """Adam learning rate of both critic encoders"""
    alpha_lr: float = 3e-4
    """Adam learning rate of log(alpha), the entropy coefficient"""
    logsumexp_penalty: float = 0.1
    """coefficient of the logsumexp^2 regulariser of the InfoNCE loss"""
    target_entropy_scale: float = 0.5
    """target entropy is -target_entropy_scale * action_dim"""

    # --- network ---
    depth: int = 4
    """Dense layers inside the residual blocks of actor and critic (a positive multiple of 4)"""
    actor_depth: Optional[int] = None
    """actor depth; overrides --depth for the actor"""
    critic_depth: Optional[int] = None
    """critic depth (phi and psi); overrides --depth for the critic"""
    width: int = 256
    """width of every hidden layer"""
    repr_dim: int = 64
    """output dimension of phi(s, a) and psi(g)"""
    layer_norm: bool = True
    """LayerNorm after every hidden Dense (--no-layer-norm for the ablation)"""
    activation: Literal["swish", "relu"] = "swish"
    """hidden activation (relu for the ablation)"""
    residual: bool = True
    """skip connection around every block of 4 layers (--no-residual for the ablation)"""
    remat: bool = False
    """rematerialise each residual block in the backward pass: less memory, ~1/3 more compute"""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the matmuls; parameters, LayerNorm, activations and losses stay float32 (bfloat16:
    faster on GPUs with bf16 tensor cores; float32 is the paper's)"""

    # --- hardware ---
    num_seeds: int = 1
    """independent runs with seeds seed, seed+1, ... trained in one process: the whole training state
    (networks, optimisers, buffer, envs) is vmapped over a seed axis; metrics.jsonl has one line per
    seed and epoch"""
    num_devices: int = 0
    """local devices to shard the training envs, replay buffer and SGD batch over (data parallel,
    parameters replicated); 0: all local devices"""


# ==================================================================================================
# SHARED BLOCK: environments (keep identical in all three scripts)
# ==================================================================================================
# Goal-conditioned brax envs built from brax's bundled XML, edited at construction. Every env's
# observation is state (obs_dim) ++ goal; a relabelled goal is future_state[goal_start:goal_end],
# and distance to the goal is ||state[goal_start:goal_end] - goal|| for every env.
BRAX_ASSETS = epath.resource_path("brax") / "envs/assets"


def _target_body(size: float, z: float, joint_range: float, mass: float) -> ET.Element:
    """A non-colliding sphere on x/y slide joints that shows the goal in renders (appended LAST)."""
    body = ET.Element("body", name="target", pos=f"0 0 {z}")
    for name, axis in (("target_x", "1 0 0"), ("target_y", "0 1 0")):
        ET.SubElement(body, "joint", name=name, type="slide", axis=axis, limited="true",
                      range=f"{-joint_range} {joint_range}", armature="0", damping="0", stiffness="0")
    ET.SubElement(body, "geom", name="target_geom", type="sphere", size=str(size), contype="0",
                  conaffinity="0", mass=str(mass), rgba="1 0.2 0.2 0.6")
    return body


class GoalEnv(PipelineEnv):
    """Common reset/step of the goal-conditioned envs. Subclasses define the XML edits,
    `_start_and_goal`, `_state` and `_terminated` (and `_ctrl` and `action_size` where the policy's
    action is not one [-1, 1] value per actuator); the per-step metrics are `dist` and `success`."""

    obs_dim: int
    goal_start: int
    goal_end: int
    success_radius: float

    def _start_and_goal(self, rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        raise NotImplementedError  # returns q, qd, goal

    def _state(self, ps: brax_base.State, action: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _terminated(self, ps: brax_base.State) -> jax.Array:
        return jnp.zeros(())

    def _edit_xml(self, root: ET.Element) -> None:
        """Hook for variants (the mazes): last edit of the robot's XML before it is loaded."""

    def _goal_metrics(self, state_vec: jax.Array, goal: jax.Array) -> dict:
        dist = jnp.linalg.norm(state_vec[self.goal_start : self.goal_end] - goal)
        return {"dist": dist, "success": (dist < self.success_radius).astype(jnp.float32)}

    def reset(self, rng: jax.Array) -> State:
        q, qd, goal = self._start_and_goal(rng)
        ps = self.pipeline_init(q, qd)
        state_vec = self._state(ps, jnp.zeros(self.sys.act_size()))
        metrics = self._goal_metrics(state_vec, goal)
        obs = jnp.concatenate([state_vec, goal])
        zero = jnp.zeros(())
        return State(ps, obs, metrics["success"], zero, metrics, {"goal": goal})

    def _ctrl(self, action: jax.Array) -> jax.Array:
        lo, hi = self.sys.actuator.ctrl_range[:, 0], self.sys.actuator.ctrl_range[:, 1]
        return lo + (action + 1.0) * 0.5 * (hi - lo)  # [-1, 1] -> actuator range

    def step(self, state: State, action: jax.Array) -> State:
        ctrl = self._ctrl(action)
        ps = self.pipeline_step(state.pipeline_state, ctrl)
        goal = state.info["goal"]
        state_vec = self._state(ps, ctrl)
        metrics = self._goal_metrics(state_vec, goal)
        obs = jnp.concatenate([state_vec, goal])
        done = self._terminated(ps).astype(jnp.float32)
        return state.replace(pipeline_state=ps, obs=obs, reward=metrics["success"], done=done,
                             metrics=metrics)


class Reacher(GoalEnv):
    """2-link planar arm; the fingertip must reach a target within radius 0.2 of the base.
    Backend: brax's default `generalized` at 0.01 x 4 = 0.04 s (the paper's step). On `spring`
    at that step the arm's state goes NaN within a random rollout (as the original code's reacher
    did); tests/test_envs.py checks that a long random rollout stays finite."""

    obs_dim, goal_start, goal_end, success_radius = 10, 4, 7, 0.05

    def __init__(self, backend: str = "generalized"):
        xml = (BRAX_ASSETS / "reacher.xml").read_text()  # already carries its `target` body last
        sys_ = mjcf.loads(xml).tree_replace({"opt.timestep": 0.01})
        super().__init__(sys=sys_, backend=backend, n_frames=4)

    def _start_and_goal(self, rng):
        rng_q, rng_qd, rng_r, rng_a = jax.random.split(rng, 4)
        q = self.sys.init_q + jax.random.uniform(rng_q, (self.sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = jax.random.uniform(rng_qd, (self.sys.qd_size(),), minval=-0.005, maxval=0.005)
        radius = 0.2 * jax.random.uniform(rng_r)
        angle = 2 * jnp.pi * jax.random.uniform(rng_a)
        target_xy = radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        q, qd = q.at[2:].set(target_xy), qd.at[2:].set(0.0)
        return q, qd, jnp.concatenate([target_xy, jnp.array([0.01])])  # target body sits at z 0.01

    def _state(self, ps, action):
        theta = ps.q[:2]
        tip_offset = brax_base.Transform.create(pos=jnp.array([0.11, 0.0, 0.0]))
        tip_pos = ps.x.take(1).do(tip_offset).pos
        tip_vel = tip_offset.do(ps.xd.take(1)).vel
        return jnp.concatenate([jnp.cos(theta), jnp.sin(theta), tip_pos, tip_vel])


class Ant(GoalEnv):
    """Quadruped; the torso must reach a goal on a circle of radius 10 (spring, 0.05 s a step)."""

    obs_dim, goal_start, goal_end, success_radius = 29, 0, 2, 0.5

    def __init__(self, backend: str = "spring"):
        root = ET.fromstring((BRAX_ASSETS / "ant.xml").read_text())
        init_qpos = root.find("custom/numeric[@name='init_qpos']")
        init_qpos.set("data", init_qpos.get("data") + " 0 0")  # the target's slide joints
        root.find("worldbody").append(_target_body(size=0.25, z=0.5, joint_range=100.0, mass=1.0))
        self._edit_xml(root)
        sys_ = mjcf.loads(ET.tostring(root, encoding="unicode"))
        sys_ = sys_.tree_replace({"opt.timestep": 0.005})
        super().__init__(sys=sys_, backend=backend, n_frames=10)

    def _start_and_goal(self, rng):
        rng_q, rng_qd, rng_a = jax.random.split(rng, 3)
        q = self.sys.init_q + jax.random.uniform(rng_q, (self.sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = 0.1 * jax.random.normal(rng_qd, (self.sys.qd_size(),))
        angle = 2 * jnp.pi * jax.random.uniform(rng_a)
        goal = 10.0 * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        return q.at[-2:].set(goal), qd.at[-2:].set(0.0), goal

    def _state(self, ps, action):
        return jnp.concatenate([ps.q[:-2], ps.qd[:-2]])  # without the target's slide joints

    def _terminated(self, ps):
        z = ps.x.pos[0, 2]
        return (z < 0.2) | (z > 1.0)


class Humanoid(GoalEnv):
    """Humanoid; the torso must reach (gx, gy, 1.25), goal 1-5 m away (spring, 0.03 s a step).

    Fidelity quirks of the paper's env, kept: the state includes the target's slide joints, and the
    1 kg target link enters the centre-of-mass terms. Env step 0.003 x 10 = 0.03 s (the original
    meant 0.0015 x 10, but its timestep change had no effect on the brax it ran on)."""

    obs_dim, goal_start, goal_end, success_radius = 268, 0, 3, 0.5
    timestep = 0.003  # physics step; 10 per env step

    def __init__(self, backend: str = "spring"):
        root = ET.fromstring((BRAX_ASSETS / "humanoid.xml").read_text())
        root.find("default/geom").set("contype", "1")  # body geoms hit floor (and walls), not each other
        root.find("worldbody/geom[@name='floor']").set("size", "40 40 0.125")
        for i, motor in enumerate(root.find("actuator").findall("motor")):
            motor.set("gear", "350" if i < 11 else "100")  # 11 torso/leg, 6 arm actuators
        root.find("worldbody").append(_target_body(size=0.5, z=1.25, joint_range=100.0, mass=1.0))
        self._edit_xml(root)
        sys_ = mjcf.loads(ET.tostring(root, encoding="unicode"))
        sys_ = sys_.tree_replace({"opt.timestep": self.timestep})
        super().__init__(sys=sys_, backend=backend, n_frames=10)

    def _start_and_goal(self, rng):
        rng_r, rng_a = jax.random.split(rng)
        radius = jax.random.uniform(rng_r, minval=1.0, maxval=5.0)
        angle = 2 * jnp.pi * jax.random.uniform(rng_a)
        goal_xy = radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        q = self.sys.init_q.at[-2:].set(goal_xy)
        return q, jnp.zeros(self.sys.qd_size()), jnp.concatenate([goal_xy, jnp.array([1.25])])

    def _state(self, ps, action):
        inertia = self.sys.link.inertia
        if self.backend in ("spring", "positional"):  # as brax's humanoid: scaled, diagonal inertia
            inertia = inertia.replace(
                i=jax.vmap(jnp.diag)(jax.vmap(jnp.diagonal)(inertia.i) ** (1 - self.sys.spring_inertia_scale)),
                mass=inertia.mass ** (1 - self.sys.spring_mass_scale))
        mass_sum = jnp.sum(inertia.mass)
        x_i = ps.x.vmap().do(inertia.transform)
        com = jnp.sum(jax.vmap(jnp.multiply)(inertia.mass, x_i.pos), axis=0) / mass_sum
        cinr = x_i.replace(pos=x_i.pos - com).vmap().do(inertia)
        com_inertia = jnp.hstack([cinr.i.reshape((cinr.i.shape[0], -1)), inertia.mass[:, None]])
        xd_i = brax_base.Transform.create(pos=x_i.pos - ps.x.pos).vmap().do(ps.xd)
        com_velocity = jnp.hstack([inertia.mass[:, None] * xd_i.vel / mass_sum, xd_i.ang])
        qfrc_actuator = brax_actuator.to_tau(self.sys, action, ps.q, ps.qd)
        return jnp.concatenate([ps.q, ps.qd, com_inertia.ravel(), com_velocity.ravel(), qfrc_actuator])

    def _terminated(self, ps):
        z = ps.x.pos[0, 2]
        return (z < 1.0) | (z > 2.0)


# --- Mazes ----------------------------------------------------------------------------------------
# Each maze is one picture: its training layout on the left, its evaluation layout on the right (a
# maze with one layout evaluates on its training grid). Rows top to bottom; '#' wall, 'R' start,
# 'G' goal cell, '.' free. Cell (i, j), row i and column j, is centred at world (x, y) = (i s, j s),
# so the picture's rows run along +x and its columns along +y; s is the robot's cell size.
ANT_U4_MAZE = """
#####   #####
#GGG#   #...#
#R#G#   #R#.#
###G#   ###.#
#G#G#   #G#.#
#GGG#   #GGG#
#####   #####
"""
ANT_U5_MAZE = """
########   ########
#GGGGGG#   #......#
#R####G#   #R####.#
######G#   ######.#
#G####G#   #G####G#
#GGGGGG#   #GGGGGG#
########   ########
"""
ANT_BIG_MAZE = """
########   ########
#RG##GG#   #R.##GG#
#GG#GGG#   #..#..G#
##GGG###   ##...###
#GG#GGG#   #..#...#
#G#GG#G#   #.#G.#G#
#GGG#GG#   #.GG#GG#
########   ########
"""
ANT_HARDEST_MAZE = """
############
#RGGG#GGGGG#
#G##G#G#G#G#
#GGGGGG#GGG#
#G####G###G#
#GG#G#GGGGG#
##G#G#G#G###
#GG#GGG#GGG#
############
"""
HUMANOID_U_MAZE = """
#####   #####
#RGG#   #R..#
###G#   ###.#
#GGG#   #GGG#
#####   #####
"""
HUMANOID_BIG_MAZE = """
########   ########
#RG##GG#   #R.##GG#
#GG#GGG#   #..#.GG#
##GGG###   ##...###
#GG#GGG#   #..#...#
#G#GG#G#   #.#G.#G#
#GGG#GG#   #.GG#GG#
########   ########
"""


@dataclasses.dataclass(frozen=True)
class Maze:
    """One layout: rows of '#', 'R', 'G', '.' on square cells of `scale` metres."""

    rows: tuple[str, ...]
    scale: float

    def cells(self, kinds: str) -> list[tuple[int, int]]:
        """(row, column) of every cell whose character is in `kinds`, in reading order."""
        return [(i, j) for i, row in enumerate(self.rows) for j, c in enumerate(row) if c in kinds]

    def xy(self, cells: list[tuple[int, int]]) -> np.ndarray:
        """World (x, y) of cell centres, [n, 2]."""
        return self.scale * np.asarray(cells, dtype=np.float32).reshape(-1, 2)

    @property
    def start(self) -> tuple[int, int]:
        return self.cells("R")[0]

    def sample_goal_xy(self, rng: jax.Array) -> jax.Array:
        """Centre of a uniformly chosen G cell."""
        goals = jnp.asarray(self.xy(self.cells("G")))
        return goals[jax.random.randint(rng, (), 0, goals.shape[0])]


def parse_mazes(picture: str, scale: float) -> list[Maze]:
    """The layouts of a picture, left to right. Each must be a rectangle closed by walls, with one R
    and at least one G."""
    lines = [line.split() for line in picture.strip().splitlines()]
    if len({len(parts) for parts in lines}) != 1:
        raise ValueError("maze picture: every line needs the same number of layouts")
    mazes = [Maze(tuple(rows), scale) for rows in zip(*lines)]
    for maze in mazes:
        rows = maze.rows
        if len({len(row) for row in rows}) != 1 or set("".join(rows)) - set("#RG."):
            raise ValueError(f"maze {rows}: rows must be equally long, of '#', 'R', 'G', '.'")
        border = rows[0] + rows[-1] + "".join(row[0] + row[-1] for row in rows)
        if set(border) != {"#"} or len(maze.cells("R")) != 1 or not maze.cells("G"):
            raise ValueError(f"maze {rows}: needs walls all around, exactly one R and a G")
    return mazes


def _add_maze(root: ET.Element, maze: Maze) -> None:
    """Floor 100 x 100 and one box per wall cell, (0.5 s, 0.5 s, 0.25 s) half-size on the floor,
    colliding (contype = conaffinity = 1); inserted before the target body, which stays last."""
    worldbody = root.find("worldbody")
    worldbody.find("geom[@name='floor']").set("size", "100 100 0.125")
    at = list(worldbody).index(worldbody.find("body[@name='target']"))
    s = maze.scale
    for n, ((i, j), (x, y)) in enumerate(zip(maze.cells("#"), maze.xy(maze.cells("#")))):
        worldbody.insert(at + n, ET.Element(
            "geom", name=f"wall_{i}_{j}", type="box", pos=f"{x} {y} {0.25 * s}",
            size=f"{0.5 * s} {0.5 * s} {0.25 * s}", contype="1", conaffinity="1", rgba="0.7 0.5 0.3 1"))


class AntMaze(Ant):
    """Ant in a maze of 4 m cells: starts at the R cell (plus the ant's U(+-0.1) noise), goal the
    centre of a uniformly chosen G cell. Torso, the four hip capsules and the four feet collide with
    the walls; the other leg segments pass through them (as in the paper's env)."""

    scale = 4.0

    def __init__(self, maze: Maze, backend: str = "spring"):
        self.maze = maze
        super().__init__(backend)

    def _edit_xml(self, root):
        for name in ("torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom", "left_foot_geom",
                     "right_foot_geom", "third_foot_geom", "fourth_foot_geom"):
            root.find(f".//geom[@name='{name}']").set("conaffinity", "1")
        _add_maze(root, self.maze)

    def goal_at(self, xy: jax.Array) -> jax.Array:
        return xy

    def _start_and_goal(self, rng):
        rng_ant, rng_goal = jax.random.split(rng)
        q, qd, _ = super()._start_and_goal(rng_ant)
        goal_xy = self.maze.sample_goal_xy(rng_goal)
        q = q.at[:2].add(self.maze.xy([self.maze.start])[0]).at[-2:].set(goal_xy)
        return q, qd, self.goal_at(goal_xy)


class HumanoidMaze(Humanoid):
    """Humanoid in a maze of 2 m cells (walls 1 m high), 0.0015 x 10 = 0.015 s a step: starts still
    at the R cell, goal (gx, gy, 1.25) at the centre of a uniformly chosen G cell."""

    scale = 2.0
    timestep = 0.0015

    def __init__(self, maze: Maze, backend: str = "spring"):
        self.maze = maze
        super().__init__(backend)

    def _edit_xml(self, root):
        _add_maze(root, self.maze)

    def goal_at(self, xy: jax.Array) -> jax.Array:
        return jnp.concatenate([xy, jnp.array([1.25])])

    def _start_and_goal(self, rng):
        rng_humanoid, rng_goal = jax.random.split(rng)
        q, qd, _ = super()._start_and_goal(rng_humanoid)
        goal_xy = self.maze.sample_goal_xy(rng_goal)
        q = q.at[:2].add(self.maze.xy([self.maze.start])[0]).at[-2:].set(goal_xy)
        return q, qd, self.goal_at(goal_xy)


# Franka Panda manipulation (arm_push_easy, arm_push_hard, arm_binpick_hard) on brax's mjx backend.
# The scenes of the goal-conditioned benchmark the paper uses (JaxGCRL, Apache-2.0) around the Franka
# Emika Panda of MuJoCo Menagerie (Apache-2.0), without the visual-only meshes: every colliding geom
# is a primitive and every link has an explicit inertial, so the dynamics are the originals'. The
# three scenes share everything but the two regions (push: flat floors; binpick: walled bins), the
# cube's and goal marker's initial positions, and binpick's impratio and wall contacts.
_PANDA_XML = """<mujoco model="panda">
  <compiler angle="radian" autolimits="true"/>
  <option integrator="implicitfast"{impratio}/>
  <default>
    <default class="panda">
      <joint armature="0.1" damping="5" axis="0 0 1" range="-2.8973 2.8973"/>
      <general dyntype="none" biastype="affine" ctrlrange="-2.8973 2.8973" forcerange="-87 87"/>
      <default class="finger">
        <joint axis="0 1 0" type="slide" range="0 0.08"/>
      </default>
      <default class="visual">
        <geom contype="0" conaffinity="0" group="2"/>
      </default>
      <default class="collision">
        <geom group="3"/>
        <default class="finger_collision">
          <geom type="box" size="0.015 0.005 0.04" pos="0 0.0055 0.035" friction="10 0.005 0.0001"/>
        </default>
      </default>
    </default>
  </default>
  <worldbody>
    <light name="top" pos="0 0 2" mode="trackcom"/>
    <body name="link0" childclass="panda">
      <body name="link1" pos="0 0 0.333">
        <inertial mass="4.970684" pos="0.003875 0.002081 -0.04762" fullinertia="0.70337 0.70661 0.0091170 -0.00013900 0.0067720 0.019169"/>
        <joint name="joint1"/>
        <body name="link2" quat="1 -1 0 0">
          <inertial mass="0.646926" pos="-0.003141 -0.02872 0.003495" fullinertia="0.0079620 2.8110e-2 2.5995e-2 -3.925e-3 1.0254e-2 7.04e-4"/>
          <joint name="joint2" range="-1.7628 1.7628"/>
          <body name="link3" pos="0 -0.316 0" quat="1 1 0 0">
            <joint name="joint3"/>
            <inertial mass="3.228604" pos="2.7518e-2 3.9252e-2 -6.6502e-2" fullinertia="3.7242e-2 3.6155e-2 1.083e-2 -4.761e-3 -1.1396e-2 -1.2805e-2"/>
            <body name="link4" pos="0.0825 0 0" quat="1 1 0 0">
              <inertial mass="3.587895" pos="-5.317e-2 1.04419e-1 2.7454e-2" fullinertia="2.5853e-2 1.9552e-2 2.8323e-2 7.796e-3 -1.332e-3 8.641e-3"/>
              <joint name="joint4" range="-3.0718 -0.0698"/>
              <body name="link5" pos="-0.0825 0.384 0" quat="1 -1 0 0">
                <inertial mass="1.225946" pos="-1.1953e-2 4.1065e-2 -3.8437e-2" fullinertia="3.5549e-2 2.9474e-2 8.627e-3 -2.117e-3 -4.037e-3 2.29e-4"/>
                <joint name="joint5"/>
                <body name="link6" quat="1 1 0 0">
                  <inertial mass="1.666555" pos="6.0149e-2 -1.4117e-2 -1.0517e-2" fullinertia="1.964e-3 4.354e-3 5.433e-3 1.09e-4 -1.158e-3 3.41e-4"/>
                  <joint name="joint6" range="-0.0175 3.7525"/>
                  <body name="link7" pos="0.088 0 0" quat="1 1 0 0">
                    <inertial mass="7.35522e-01" pos="1.0517e-2 -4.252e-3 6.1597e-2" fullinertia="1.2516e-2 1.0027e-2 4.815e-3 -4.28e-4 -1.196e-3 -7.41e-4"/>
                    <joint name="joint7"/>
                    <body name="hand" pos="0 0 0.107" quat="0.9238795 0 0 -0.3826834">
                      <geom name="hand_geom" rgba="1 1 1 1" type="capsule" size="0.04 0.06" pos="0 0 0.035" quat="1 1 0 0" contype="0" conaffinity="0"/>
                      <body name="left_finger" pos="0 0 0.0584">
                        <inertial mass="0.015" pos="0 0 0" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>
                        <joint name="finger_joint1" class="finger"/>
                        <geom name="left_finger_geom" rgba="0.25 0.25 0.25 1" class="finger_collision" contype="0" conaffinity="0"/>
                      </body>
                      <body name="right_finger" pos="0 0 0.0584" quat="0 0 0 1">
                        <inertial mass="0.015" pos="0 0 0" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>
                        <joint name="finger_joint2" class="finger"/>
                        <geom name="right_finger_geom" rgba="0.25 0.25 0.25 1" class="finger_collision" contype="0" conaffinity="0"/>
                      </body>
                    </body>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
{regions}
    <body name="cube" pos="{cube} 0.07">
      <freejoint/>
      <geom name="cube_geom" size="0.03 0.03 0.03" type="box" rgba="0 0.4 0 1" contype="0" conaffinity="0"/>
    </body>
    <body name="goal_marker" pos="{marker} 0.07" gravcomp="1">
      <freejoint/>
      <geom name="goal_marker_geom" size="0.03 0.03 0.03" type="box" rgba="0.3 1 0.3 1" contype="0" conaffinity="0"/>
    </body>
    <body name="tablelink" pos="0 .2 0">
      <geom name="table_geom" group="4" pos="0.0 0.0 0.0" size="2.8 2.4 0.1" type="plane" mass="10" friction="0.2 0.005 0.0001" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <equality>
    <joint joint1="finger_joint1" joint2="finger_joint2" solimp="0.95 0.99 0.001" solref="0.005 1"/>
  </equality>
  <contact>
{pairs}
  </contact>
  <actuator>
    <general class="panda" name="actuator1" joint="joint1" gainprm="4500" biasprm="0 -4500 -450"/>
    <general class="panda" name="actuator2" joint="joint2" gainprm="4500" biasprm="0 -4500 -450" ctrlrange="-1.7628 1.7628"/>
    <general class="panda" name="actuator3" joint="joint3" gainprm="2000" biasprm="0 -3500 -350"/>
    <general class="panda" name="actuator4" joint="joint4" gainprm="2000" biasprm="0 -3500 -350" ctrlrange="-3.0718 -0.0698"/>
    <general class="panda" name="actuator5" joint="joint5" gainprm="1000" biasprm="0 -2000 -200" forcerange="-12 12"/>
    <general class="panda" name="actuator6" joint="joint6" gainprm="1000" biasprm="0 -2000 -200" forcerange="-12 12" ctrlrange="-0.0175 3.7525"/>
    <general class="panda" name="actuator7" joint="joint7" gainprm="1000" biasprm="0 -2000 -200" forcerange="-12 12"/>
    <general class="panda" name="actuator8" joint="finger_joint1" forcerange="-500 500" ctrlrange="0 255" gainprm="0.15686 0 0" biasprm="0 -500 -50"/>
    <general class="panda" name="actuator9" joint="finger_joint2" forcerange="-500 500" ctrlrange="0 255" gainprm="0.15686 0 0" biasprm="0 -500 -50"/>
  </actuator>
</mujoco>
"""

# task: cube region centre (blue, A), goal region centre (red, B), sampling half-range s (cube and
# goal xy = centre + s U(-1, 1)), goal marker's initial xy, walled bins or not
_PANDA_TASKS = {
    "push_easy": dict(cube=(-0.1, 0.6), goal=(0.1, 0.6), spread=0.1, marker=(-0.3, 0.6), bins=False),
    "push_hard": dict(cube=(-0.25, 0.65), goal=(0.25, 0.65), spread=0.25, marker=(-0.25, 0.65), bins=False),
    "binpick_hard": dict(cube=(-0.3, 0.6), goal=(0.3, 0.6), spread=0.15, marker=(-0.3, 0.6), bins=True),
}


def panda_xml(task: str) -> str:
    """The MJCF text of one arm scene (tests compare it with ../shared/data/panda/panda_{task}.xml)."""
    t = _PANDA_TASKS[task]
    xy = lambda p: f"{p[0]:g} {p[1]:g}"
    regions, pairs = [], [f'    <pair geom1="cube_geom" geom2="{g}"/>'
                          for g in ("table_geom", "hand_geom", "left_finger_geom", "right_finger_geom")]
    walls = []
    for name, centre, rgba in (("binA", t["cube"], "0 0.2 0.8 1"), ("binB", t["goal"], "0.8 0 0 1")):
        if t["bins"]:  # four walls 0.066 high around a 0.38 x 0.38 inside, no floor
            sides = [("0 -0.19", "0.195 0.005"), ("0 0.19", "0.195 0.005"),
                     ("0.19 0", "0.005 0.185"), ("-0.19 0", "0.005 0.185")]
            geoms = [(f"{name}{i + 1}", f"{pos} 0.033", f"{size} 0.033")
                     for i, (pos, size) in enumerate(sides)]
            walls += [g[0] for g in geoms]
        else:  # a flat coloured floor the size of the sampling region
            geoms = [(f"{name}_floor", "0 0 0.0005", f"{t['spread']:g} {t['spread']:g} 0.0005")]
        regions.append(f'    <body name="{name}" pos="{xy(centre)} 0">')
        regions += [f'      <geom name="{g}" pos="{p}" size="{s}" type="box" rgba="{rgba}" contype="0" '
                    f'conaffinity="0"/>' for g, p, s in geoms]
        regions.append("    </body>")
    pairs += [f'    <pair geom1="cube_geom" geom2="{w}"/>' for w in walls]
    pairs += [f'    <pair geom1="table_geom" geom2="{g}"/>'
              for g in ("hand_geom", "left_finger_geom", "right_finger_geom")]
    pairs += [f'    <pair geom1="{g}" geom2="{w}"/>'
              for g in ("left_finger_geom", "right_finger_geom", "hand_geom") for w in walls]
    pairs.append('    <pair geom1="left_finger_geom" geom2="right_finger_geom"/>')
    return _PANDA_XML.format(impratio=' impratio="10"' if t["bins"] else "", regions="\n".join(regions),
                             cube=xy(t["cube"]), marker=xy(t["marker"]), pairs="\n".join(pairs))


class Arm(GoalEnv):
    """Franka Panda arm moving a cube to a goal (mjx backend, 0.002 x 25 = 0.05 s a step).

    Action (5): absolute targets for joints 1, 2, 4, 6 mapped from [-1, 1] onto _ARM_LO.._ARM_HI
    (joints 3 and 5 held at 0, joint 7 at 1.4487), and a binary gripper: action[4] > 0 closes (ctrl 0),
    else opens (ctrl 255). As in the benchmark's scenes, actuators 3-7 have position bias != gain
    (joint 6 settles at ctrl / 2), and most targets exceed the force limits (87 / 12 N m) at first.
    State (17): cube xyz, the 7 arm joints, end-effector (link 7 frame) position and velocity, finger
    gap; the last three come from brax's x, xd, which are one 0.002 s substep behind q (as in the
    original). Goal = cube xyz. Success: cube within 0.1 of the goal; success_easy (0.3) and
    success_hard (0.03) are extra per-step metrics. No termination. brax fuses the jointless bodies
    (link0, hand, bins, table) into their parents, which puts the free bodies first in qpos: cube
    0:7, goal marker 7:14, arm joints 14:21, fingers 21:23; the marker (no collision, gravity
    compensated) is placed at the goal to show it in renders."""

    obs_dim, goal_start, goal_end, success_radius = 17, 0, 3, 0.1
    _ARM_Q = (1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449, 0.04, 0.04)  # start: 7 joints, 2 fingers
    _ARM_LO = (0.3491, 0.0, -3.0718, 2.3562)  # joints 1, 2, 4, 6 at action -1
    _ARM_HI = (2.7925, 1.48353, -0.0698, 3.7525)  # ... and at action +1

    def __init__(self, task: str, backend: str = "mjx"):
        t = _PANDA_TASKS[task]
        self.cube_centre, self.goal_centre = jnp.array(t["cube"]), jnp.array(t["goal"])
        self.spread = t["spread"]
        sys_ = mjcf.loads(panda_xml(task))
        sys_ = sys_.tree_replace({"opt.timestep": 0.002, "opt.iterations": 6, "opt.ls_iterations": 12})
        super().__init__(sys=sys_, backend=backend, n_frames=25)
        links = list(self.sys.link_names)
        assert links[:3] == ["cube", "goal_marker", "link1"]  # the qpos layout above
        assert list(self.sys.jnt_qposadr) == [0, 7, *range(14, 23)]
        self._eef = links.index("link7")
        self._fingers = (links.index("left_finger"), links.index("right_finger"))

    @property
    def action_size(self) -> int:
        return 5

    def _ctrl(self, action):
        lo, hi = jnp.array(self._ARM_LO), jnp.array(self._ARM_HI)
        j1, j2, j4, j6 = lo + (action[:4] + 1.0) * 0.5 * (hi - lo)
        grip = jnp.where(action[4] > 0, 0.0, 255.0)
        return jnp.stack([j1, j2, jnp.zeros(()), j4, jnp.zeros(()), j6, jnp.full((), 1.4487), grip, grip])

    def _start_and_goal(self, rng):
        rng_cube, rng_goal = jax.random.split(rng)
        noise = lambda key: self.spread * jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)
        cube_xy, goal_xy = self.cube_centre + noise(rng_cube), self.goal_centre + noise(rng_goal)
        goal = jnp.concatenate([goal_xy, jnp.array([0.03])])
        q = (self.sys.init_q.at[0:3].set(jnp.concatenate([cube_xy, jnp.array([0.07])]))
             .at[7:10].set(goal).at[14:23].set(jnp.array(self._ARM_Q)))
        return q, jnp.zeros(self.sys.qd_size()), goal

    def _state(self, ps, action):
        gap = jnp.linalg.norm(ps.x.pos[self._fingers[0]] - ps.x.pos[self._fingers[1]])
        eef_pos, eef_vel = ps.x.pos[self._eef], ps.xd.vel[self._eef]
        return jnp.concatenate([ps.q[0:3], ps.q[14:21], eef_pos, eef_vel, gap[None]])

    def _goal_metrics(self, state_vec, goal):
        metrics = super()._goal_metrics(state_vec, goal)
        metrics["success_easy"] = (metrics["dist"] < 0.3).astype(jnp.float32)
        metrics["success_hard"] = (metrics["dist"] < 0.03).astype(jnp.float32)
        return metrics


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    make: Callable[[], GoalEnv]  # training env
    obs_dim: int  # state dimension; the goal follows it in the observation
    goal_start: int  # goal slice of the state: state[goal_start:goal_end]
    goal_end: int
    make_eval: Optional[Callable[[], GoalEnv]] = None  # evaluation env if it differs (maze layouts)


def _spec(cls, **kw) -> EnvSpec:
    return EnvSpec(make=lambda: cls(**kw), obs_dim=cls.obs_dim, goal_start=cls.goal_start,
                   goal_end=cls.goal_end)


def _maze_spec(cls, picture: str) -> EnvSpec:
    train, *evaluation = parse_mazes(picture, cls.scale)
    return dataclasses.replace(_spec(cls, maze=train),
                               make_eval=(lambda: cls(evaluation[0])) if evaluation else None)


# The registry: adding an env is one entry here plus its class above.
ENVS: dict[str, EnvSpec] = {
    "reacher": _spec(Reacher),
    "ant": _spec(Ant),
    "humanoid": _spec(Humanoid),
    "ant_u4_maze": _maze_spec(AntMaze, ANT_U4_MAZE),
    "ant_u5_maze": _maze_spec(AntMaze, ANT_U5_MAZE),
    "ant_big_maze": _maze_spec(AntMaze, ANT_BIG_MAZE),
    "ant_hardest_maze": _maze_spec(AntMaze, ANT_HARDEST_MAZE),
    "humanoid_u_maze": _maze_spec(HumanoidMaze, HUMANOID_U_MAZE),
    "humanoid_big_maze": _maze_spec(HumanoidMaze, HUMANOID_BIG_MAZE),
    "arm_push_easy": _spec(Arm, task="push_easy"),
    "arm_push_hard": _spec(Arm, task="push_hard"),
    "arm_binpick_hard": _spec(Arm, task="binpick_hard"),
}


def make_env(env_id: str, eval: bool = False) -> GoalEnv:
    if env_id not in ENVS:
        raise ValueError(f"unknown env id {env_id!r}; valid ids: {', '.join(ENVS)}")
    spec = ENVS[env_id]
    return (spec.make_eval or spec.make)() if eval else spec.make()


class VecGoalEnv:
    """num_envs copies of a GoalEnv with an episode limit and auto reset. Every episode gets a
    fresh start and goal (the original code restored the first reset's state instead, so each
    env kept one start and goal for the whole run). info['episode_id'] counts episodes per env
    so that the replay buffer never relabels across an episode boundary."""

    def __init__(self, env: GoalEnv, num_envs: int, episode_length: int):
        self.env, self.num_envs, self.episode_length = env, num_envs, episode_length
        self.action_size = env.action_size  # sys.act_size() unless the env maps actions itself
        self.obs_size = env.obs_dim + (env.goal_end - env.goal_start)

    def reset(self, key: jax.Array) -> State:
        key, key_reset = jax.random.split(key)
        state = jax.vmap(self.env.reset)(jax.random.split(key_reset, self.num_envs))
        n = self.num_envs
        state.info.update(steps=jnp.zeros(n, jnp.int32), episode_id=jnp.zeros(n, jnp.int32),
                          truncated=jnp.zeros(n), key=jax.random.split(key, n))
        return state

    def step(self, state: State, action: jax.Array) -> State:
        info = state.info
        nxt = jax.vmap(self.env.step)(state, action)
        steps = info["steps"] + 1
        truncated = (steps >= self.episode_length).astype(jnp.float32)
        done = jnp.maximum(nxt.done, truncated)  # this step ended the episode
        keys = jax.vmap(jax.random.split)(info["key"])
        fresh = jax.vmap(self.env.reset)(keys[:, 1])

        def pick(a, b):  # fresh reset where done, else the stepped state
            return jnp.where(done.reshape(done.shape + (1,) * (a.ndim - 1)) > 0, a, b)

        ps = jax.tree.map(pick, fresh.pipeline_state, nxt.pipeline_state)
        new_info = dict(nxt.info, goal=pick(fresh.info["goal"], nxt.info["goal"]),
                        steps=jnp.where(done > 0, 0, steps), truncated=truncated,
                        episode_id=info["episode_id"] + done.astype(jnp.int32), key=keys[:, 0])
        # metrics, reward and done describe the step just taken; obs is the next episode's if done
        return nxt.replace(pipeline_state=ps, obs=pick(fresh.obs, nxt.obs), done=done, info=new_info)


# END SHARED BLOCK: environments


# ==================================================================================================
# SHARED BLOCK: network (keep identical in all three scripts)
# ==================================================================================================
# depth = number of Dense layers inside the residual blocks: input Dense+LN+act, then depth/4
# identical blocks of 4 x (Dense, LayerNorm, act) with the skip added after the block's last
# activation, then the output head(s). The blocks are stacked with nn.scan, so the compiled graph
# holds ONE block whatever the depth; --remat recomputes each block's activations in the backward
# pass instead of storing them. compute_dtype "bfloat16" runs the matmuls in bfloat16; parameters,
# LayerNorm, activations, the residual stream and every output stay float32.
def lecun_uniform_third() -> Callable:
    return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def dense(features: int, compute_dtype: str, name: Optional[str] = None) -> Callable:
    """Dense layer with float32 params whose matmul runs in compute_dtype; returns float32."""
    layer = nn.Dense(features, kernel_init=lecun_uniform_third(), bias_init=nn.initializers.zeros,
                     dtype=jnp.dtype(compute_dtype), param_dtype=jnp.float32, name=name)
    return lambda x: layer(x).astype(jnp.float32)


class ResidualBlock(nn.Module):
    width: int
    layer_norm: bool
    activation: str
    residual: bool
    compute_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
        act = nn.swish if self.activation == "swish" else nn.relu
        h = x
        for _layer in range(4):  # fixed 4 layers per block, independent of depth
            h = dense(self.width, self.compute_dtype)(h)
            if self.layer_norm:
                h = nn.LayerNorm()(h)
            h = act(h)
        return (h + x if self.residual else h), None


class ResidualTrunk(nn.Module):
    depth: int
    width: int
    layer_norm: bool = True
    activation: str = "swish"
    residual: bool = True
    remat: bool = False
    compute_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = nn.swish if self.activation == "swish" else nn.relu
        x = dense(self.width, self.compute_dtype)(x)
        if self.layer_norm:
            x = nn.LayerNorm()(x)
        x = act(x)
        block = nn.remat(ResidualBlock, prevent_cse=False) if self.remat else ResidualBlock
        blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                         length=self.depth // 4)
        x, _ = blocks(self.width, self.layer_norm, self.activation, self.residual, self.compute_dtype,
                      name="blocks")(x, None)
        return x


class Encoder(nn.Module):
    """phi(s, a) or psi(g): trunk + Dense(repr_dim)."""

    trunk: ResidualTrunk
    repr_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return dense(self.repr_dim, self.trunk.compute_dtype)(self.trunk(x))


class Actor(nn.Module):
    """pi(a | s, g): trunk + mean head + log-std head (tanh-squashed into [-5, 2])."""

    trunk: ResidualTrunk
    action_size: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.trunk(obs)
        mean = dense(self.action_size, self.trunk.compute_dtype, name="mean")(x)
        log_std = jnp.tanh(dense(self.action_size, self.trunk.compute_dtype, name="log_std")(x))
        log_std = -5.0 + 0.5 * (2.0 - (-5.0)) * (log_std + 1.0)
        return mean, log_std


class Networks(NamedTuple):
    actor: Actor
    phi: Encoder
    psi: Encoder


def make_networks(actor_depth: int, critic_depth: int, width: int, repr_dim: int, action_size: int,
                  layer_norm: bool = True, activation: str = "swish", residual: bool = True,
                  remat: bool = False, compute_dtype: str = "float32") -> Networks:
    def trunk(depth):
        return ResidualTrunk(depth, width, layer_norm, activation, residual, remat, compute_dtype)

    return Networks(Actor(trunk(actor_depth), action_size), Encoder(trunk(critic_depth), repr_dim),
                    Encoder(trunk(critic_depth), repr_dim))


# END SHARED BLOCK: network


# ==================================================================================================
# SHARED BLOCK: replay buffer (keep identical in all three scripts)
# ==================================================================================================
# A circular buffer of trajectories, one column per env: states [max_size, num_envs, obs_dim],
# actions [max_size, num_envs, action_size] and the episode id of each step. Sampling takes one
# window of `window` consecutive steps per env and relabels each step t with the goal of a STRICTLY
# future state t+k of the SAME episode inside the window, P(k) proportional to gamma^k.
@flax.struct.dataclass
class Buffer:
    state: jax.Array
    action: jax.Array
    episode_id: jax.Array
    ptr: jax.Array  # next row to write
    size: jax.Array  # rows holding data (<= max_size)


def buffer_init(max_size: int, num_envs: int, obs_dim: int, action_size: int) -> Buffer:
    return Buffer(state=jnp.zeros((max_size, num_envs, obs_dim)),
                  action=jnp.zeros((max_size, num_envs, action_size)),
                  episode_id=jnp.zeros((max_size, num_envs), jnp.int32),
                  ptr=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def buffer_insert(buf: Buffer, state: jax.Array, action: jax.Array, episode_id: jax.Array) -> Buffer:
    """Appends T steps of every env ([T, num_envs, ...]), overwriting the oldest when full."""
    max_size, steps = buf.state.shape[0], state.shape[0]
    rows = (buf.ptr + jnp.arange(steps)) % max_size
    return buf.replace(state=buf.state.at[rows].set(state), action=buf.action.at[rows].set(action),
                       episode_id=buf.episode_id.at[rows].set(episode_id),
                       ptr=(buf.ptr + steps) % max_size, size=jnp.minimum(buf.size + steps, max_size))


def sample_future_offsets(key: jax.Array, episode_id: jax.Array, gamma: float) -> tuple[jax.Array, jax.Array]:
    """For a window of episode ids [W] (non-decreasing), draws k_t >= 1 with P(k) ~ gamma^k over the
    K_t steps left in t's episode inside the window (inverse CDF of a truncated geometric law).
    Returns (k [W], valid [W]); valid is False where no future step of the same episode exists."""
    window = episode_id.shape[0]
    t = jnp.arange(window)
    last = jnp.searchsorted(episode_id, episode_id, side="right") - 1  # last index of t's episode
    horizon = last - t  # K_t
    u = jax.random.uniform(key, (window,))
    # CDF(k) = (1 - gamma^k) / (1 - gamma^K)  =>  k = ceil(log(1 - u (1 - gamma^K)) / log(gamma))
    k = jnp.ceil(jnp.log1p(-u * (1.0 - gamma ** horizon.astype(jnp.float32))) / math.log(gamma))
    k = jnp.clip(k.astype(jnp.int32), 1, jnp.maximum(horizon, 1))
    return k, horizon >= 1


def buffer_sample(buf: Buffer, key: jax.Array, window: int, gamma: float, goal_start: int,
                  goal_end: int) -> dict:
    """One window per env, relabelled; returns flat arrays over num_envs * window steps: state,
    action, goal (from the future state), valid, and offset k (for tests and diagnostics)."""
    max_size, num_envs = buf.state.shape[:2]
    key_start, key_k = jax.random.split(key)
    oldest = (buf.ptr - buf.size) % max_size
    start = jax.random.randint(key_start, (num_envs,), 0, buf.size - window + 1)
    rows = (oldest + start[:, None] + jnp.arange(window)[None, :]) % max_size  # [num_envs, W]
    cols = jnp.arange(num_envs)[:, None]
    state, action, episode_id = buf.state[rows, cols], buf.action[rows, cols], buf.episode_id[rows, cols]
    k, valid = jax.vmap(sample_future_offsets, in_axes=(0, 0, None))(
        jax.random.split(key_k, num_envs), episode_id, gamma)
    future = jnp.take_along_axis(state, (jnp.arange(window)[None, :] + k)[..., None] % window, axis=1)
    flat = lambda x: x.reshape((num_envs * window,) + x.shape[2:])
    return {"state": flat(state), "action": flat(action), "goal": flat(future[..., goal_start:goal_end]),
            "valid": flat(valid), "k": flat(k)}


def shuffle_into_batches(key: jax.Array, data: dict, num_batches: int, batch_size: int) -> dict:
    """Random order with every valid (relabelled) transition before any invalid one; takes
    num_batches * batch_size of them, reusing valid ones if there are too few, so no transition
    without a same-episode future goal is ever trained on."""
    n = data["valid"].shape[0]
    u = jax.random.uniform(key, (n,))
    order = jnp.argsort(jnp.where(data["valid"], u, u + 2.0))
    num_valid = jnp.maximum(jnp.sum(data["valid"]), 1)
    idx = order[jnp.arange(num_batches * batch_size) % num_valid]
    return {name: x[idx].reshape((num_batches, batch_size) + x.shape[1:])
            for name, x in data.items() if name in ("state", "action", "goal")}


# END SHARED BLOCK: replay buffer


# ==================================================================================================
# SHARED BLOCK: losses (keep identical in all three scripts)
# ==================================================================================================
def l2_energy_matrix(sa_repr: jax.Array, g_repr: jax.Array) -> jax.Array:
    """logits[i, j] = f(s_i, a_i, g_j) = -||phi_i - psi_j||_2 (not squared). A 1e-12 inside the
    square root keeps the gradient finite when two representations coincide."""
    diff = sa_repr[:, None, :] - g_repr[None, :, :]
    return -jnp.sqrt(jnp.sum(diff**2, axis=-1) + 1e-12)


def l2_energy_pairs(sa_repr: jax.Array, g_repr: jax.Array) -> jax.Array:
    """f(s_i, a_i, g_i) for matching rows."""
    return -jnp.sqrt(jnp.sum((sa_repr - g_repr) ** 2, axis=-1) + 1e-12)


def infonce_loss(logits: jax.Array, logsumexp_penalty: float) -> tuple[jax.Array, dict]:
    """Row-wise InfoNCE with positives on the diagonal, plus penalty * mean_i(logsumexp_i^2)."""
    lse = jax.nn.logsumexp(logits, axis=1)
    diag = jnp.diag(logits)
    loss = jnp.mean(lse - diag) + logsumexp_penalty * jnp.mean(lse**2)
    n = logits.shape[0]
    off_diag = (jnp.sum(logits) - jnp.sum(diag)) / (n * (n - 1))
    metrics = {"losses/critic": loss, "critic/logsumexp": jnp.mean(lse),
               "critic/categorical_accuracy": jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(n)),
               "critic/logits_pos": jnp.mean(diag), "critic/logits_neg": off_diag}
    return loss, metrics


def sample_tanh_gaussian(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a = tanh(u), u ~ N(mean, std); returns (a, log pi(a)) with the tanh change of variables."""
    std = jnp.exp(log_std)
    u = mean + std * jax.random.normal(key, mean.shape)
    log_prob_u = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))  # log(1 - tanh(u)^2), stable
    return jnp.tanh(u), jnp.sum(log_prob_u - log_det, axis=-1)


@flax.struct.dataclass
class Agent:
    """Everything one CRL learner owns: actor, critic (phi and psi), log(alpha), optimiser states."""

    actor_params: Any
    critic_params: Any  # {"phi": ..., "psi": ...}
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any


class Optimizers(NamedTuple):
    actor: optax.GradientTransformation
    critic: optax.GradientTransformation
    alpha: optax.GradientTransformation


def agent_init(key: jax.Array, nets: Networks, opts: Optimizers, obs_dim: int, goal_dim: int,
               action_size: int) -> Agent:
    key_actor, key_phi, key_psi = jax.random.split(key, 3)
    actor_params = nets.actor.init(key_actor, jnp.zeros((1, obs_dim + goal_dim)))
    critic_params = {"phi": nets.phi.init(key_phi, jnp.zeros((1, obs_dim + action_size))),
                     "psi": nets.psi.init(key_psi, jnp.zeros((1, goal_dim)))}
    log_alpha = jnp.zeros(())
    return Agent(actor_params, critic_params, log_alpha, opts.actor.init(actor_params),
                 opts.critic.init(critic_params), opts.alpha.init(log_alpha))


def critic_loss_fn(critic_params, nets: Networks, batch: dict, logsumexp_penalty: float):
    sa_repr = nets.phi.apply(critic_params["phi"], jnp.concatenate([batch["state"], batch["action"]], -1))
    g_repr = nets.psi.apply(critic_params["psi"], batch["goal"])
    return infonce_loss(l2_energy_matrix(sa_repr, g_repr), logsumexp_penalty)


def actor_loss_fn(actor_params, critic_params, log_alpha, nets: Networks, batch: dict, key: jax.Array,
                  bc_coef: float = 0.0):
    """mean(alpha * log pi(a|s,g) - f(s, a, g)), a ~ pi, on the batch's relabelled goals; plus
    bc_coef * mean ||a - a_data||^2 (behaviour cloning, used offline; 0 online)."""
    mean, log_std = nets.actor.apply(actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
    action, log_prob = sample_tanh_gaussian(key, mean, log_std)
    sa_repr = nets.phi.apply(critic_params["phi"], jnp.concatenate([batch["state"], action], -1))
    g_repr = nets.psi.apply(critic_params["psi"], batch["goal"])
    q = l2_energy_pairs(sa_repr, g_repr)
    bc = jnp.mean(jnp.sum((action - batch["action"]) ** 2, axis=-1))
    loss = jnp.mean(jnp.exp(log_alpha) * log_prob - q) + bc_coef * bc
    return loss, {"losses/actor": loss, "actor/entropy": -jnp.mean(log_prob), "actor/q": jnp.mean(q),
                  "actor/bc_mse": bc, "_log_prob": log_prob}


def alpha_loss_fn(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    return jnp.mean(jnp.exp(log_alpha) * jax.lax.stop_gradient(-log_prob - target_entropy))


def make_sgd_update(nets: Networks, opts: Optimizers, target_entropy: float, logsumexp_penalty: float,
                    bc_coef: float = 0.0) -> Callable:
    """One SGD step on one batch: actor and alpha first, then the critic. No target networks."""

    def update(agent: Agent, batch: dict, key: jax.Array) -> tuple[Agent, dict]:
        (_, actor_m), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
            agent.actor_params, agent.critic_params, agent.log_alpha, nets, batch, key, bc_coef)
        log_prob = actor_m.pop("_log_prob")
        alpha_loss, alpha_grad = jax.value_and_grad(alpha_loss_fn)(agent.log_alpha, log_prob, target_entropy)
        (_, critic_m), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            agent.critic_params, nets, batch, logsumexp_penalty)

        def apply(opt, grads, opt_state, params):
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        actor_params, actor_opt = apply(opts.actor, actor_grads, agent.actor_opt, agent.actor_params)
        log_alpha, alpha_opt = apply(opts.alpha, alpha_grad, agent.alpha_opt, agent.log_alpha)
        critic_params, critic_opt = apply(opts.critic, critic_grads, agent.critic_opt, agent.critic_params)
        metrics = {**actor_m, **critic_m, "losses/alpha": alpha_loss, "actor/alpha": jnp.exp(agent.log_alpha)}
        return Agent(actor_params, critic_params, log_alpha, actor_opt, critic_opt, alpha_opt), metrics

    return update


# END SHARED BLOCK: losses


# ==================================================================================================
# SHARED BLOCK: seeds (keep identical in all three scripts)
# ==================================================================================================
# --num-seeds N trains seeds seed .. seed+N-1 in one process: every leaf of the training state has a
# leading seed axis and every jitted function is mapped over it. Seed i draws exactly the keys of a
# single run with --seed seed+i; metrics.jsonl gets one line per seed and epoch.
def seed_keys(seeds: list[int], num_keys: int) -> jax.Array:
    """[num_seeds, num_keys, 2]: the keys a single run with each seed splits from PRNGKey(seed)."""
    return jnp.stack([jax.random.split(jax.random.PRNGKey(seed), num_keys) for seed in seeds])


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


def log_seeds(metrics_path: str, wandb: Any, epoch: int, seeds: list[int], counter: tuple[str, Any],
              per_seed: dict, shared: dict) -> list[dict]:
    """Appends one metrics.jsonl line per seed (per_seed values have a leading seed axis; counter is
    (name, per-seed values), e.g. env steps) and, given the wandb module, logs one wandb step: each
    seed's values under seed{s}/ (with several seeds) and their mean under the plain names."""
    name, counts = counter
    records = [{"epoch": epoch, "seed": seed, name: int(counts[i]), **{k: float(v[i]) for k, v in per_seed.items()},
                **shared} for i, seed in enumerate(seeds)]
    with open(metrics_path, "a") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)
    if wandb is not None:
        logged = {k: float(np.mean(v)) for k, v in per_seed.items()} | shared
        if len(seeds) > 1:
            logged |= {f"seed{seed}/{k}": float(v[i]) for k, v in per_seed.items() for i, seed in enumerate(seeds)}
        wandb.log(logged, step=records[0][name])
    return records


def across_seeds(values: np.ndarray, fmt: str) -> str:
    """The mean, and with several seeds every seed's value."""
    text = format(float(np.mean(values)), fmt)
    return text if len(values) == 1 else f"{text} (seeds: {' '.join(format(float(v), fmt) for v in values)})"


# END SHARED BLOCK: seeds


# ==================================================================================================
# SHARED BLOCK: checkpoints (keep identical in all three scripts)
# ==================================================================================================
# runs/{run_name}/state.msgpack holds a run's whole training state. Layout: STATE_MAGIC, the sha256
# of the payload, the payload (flax msgpack: numbers, strings and arrays only - no pickle, so loading
# runs no code from the file). Written to state.msgpack.tmp, fsynced, then renamed over the previous
# one: a kill at any moment leaves either the previous complete file or the new one.
STATE_FILE = "state.msgpack"
STATE_MAGIC = b"CRL-DEPTH-STATE\n"  # 16 bytes
SCRIPT = os.path.basename(__file__)
TEST_STALL_ENV = "CRL_DEPTH_TEST_STALL_AT_EPOCH"  # tests: hang after writing this epoch's .tmp, before the rename
TEST_NAN_ENV = "CRL_DEPTH_TEST_NAN_AT_EPOCH"  # tests: log(alpha) = NaN before this epoch (the divergence guard)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run it is loaded into."""


class CheckpointWriteError(OSError):
    """A checkpoint or run file could not be written (disk full, unwritable directory)."""


def atomic_write(path: str, chunks: list[bytes], stall: bool = False) -> None:
    """Writes path.tmp, flushes and fsyncs it, then renames it over path: path is always either the
    previous complete file or the new complete one. On failure the .tmp is removed."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if stall:
            print(f"test hook: stalled before renaming {tmp}", flush=True)
            time.sleep(3600)
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
    """Writes {header, epoch, state} (state: a flax state dict of numpy arrays) atomically; returns the
    file size in bytes."""
    payload = flax.serialization.msgpack_serialize({"header": header, "epoch": epoch, "state": state})
    atomic_write(path, [STATE_MAGIC, hashlib.sha256(payload).digest(), payload],
                 stall=os.environ.get(TEST_STALL_ENV) == str(epoch))
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
        raise CheckpointError(f"{path} is not a {SCRIPT} state checkpoint (wrong magic bytes)")
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


def check_state_leaves(path: str, template: dict, state: dict) -> None:
    """Raises CheckpointError unless the state dict has exactly the template's leaves, shapes and dtypes."""
    flat = lambda d: flax.traverse_util.flatten_dict(d, sep="/") if isinstance(d, dict) else {}
    dtype = lambda x: x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    describe = lambda x: "missing" if x is None else f"{dtype(x)}{list(np.shape(x))}"
    want_leaves, got_leaves = flat(template), flat(state)
    for name in sorted(set(want_leaves) | set(got_leaves)):
        w, g = want_leaves.get(name), got_leaves.get(name)
        if w is None and g is None and name in want_leaves and name in got_leaves:
            continue  # an empty field (brax's contact)
        if w is None or g is None or tuple(np.shape(g)) != tuple(w.shape) or dtype(g) != dtype(w):
            raise CheckpointError(f"{path} does not fit this run: {name} is {describe(g)} in the checkpoint, "
                                  f"{describe(w)} expected")


def save_state(path: str, header: dict, epoch: int, key_eval: jax.Array, ts: Any, with_buffer: bool) -> int:
    """Writes a run's training state ts (a flax struct with a `buffer` field, left out unless
    with_buffer) and its evaluation keys atomically; returns the file size in bytes."""
    state = flax.serialization.to_state_dict(jax.device_get(ts if with_buffer else ts.replace(buffer=None)))
    if not with_buffer:
        state.pop("buffer")
    return write_state_file(path, {**header, "has_buffer": with_buffer}, epoch,
                            {"ts": state, "key_eval": np.asarray(jax.device_get(key_eval))})


def load_state(path: str, want: dict, describe: Callable[[dict], str],
               template: Any) -> tuple[int, np.ndarray, Any, bool]:
    """Reads a file written by save_state for a run whose header is `want`; template is the state of a
    fresh run (arrays or jax.ShapeDtypeStruct). Returns (epoch, eval keys, state with numpy leaves,
    has_buffer; without a buffer the template's stands in). Anything else - a truncated or corrupt
    file, another file type, another env or network - raises CheckpointError."""
    header, epoch, saved = read_state_file(path, want, describe)
    try:
        state, key_eval = saved["ts"], np.asarray(saved["key_eval"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable state checkpoint (no {e})") from None
    has_buffer = bool(header.get("has_buffer"))
    template_state = flax.serialization.to_state_dict(template)
    if not has_buffer:
        state = {**state, "buffer": template_state["buffer"]}
    check_state_leaves(path, template_state, state)
    return epoch, key_eval, flax.serialization.from_state_dict(template, state), has_buffer


def keep_metrics_through(metrics_path: str, epoch: int) -> None:
    """Rewrites metrics.jsonl with the records of epochs <= epoch only (a resumed run logs the later
    epochs again); a line cut off by a kill is dropped."""
    kept = []
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            for line in f:
                try:
                    if json.loads(line)["epoch"] <= epoch:
                        kept.append(line if line.endswith("\n") else line + "\n")
                except (ValueError, KeyError, TypeError):
                    pass
    atomic_write(metrics_path, ["".join(kept).encode()])


def prepare_run_dir(run_dir: str, config: dict, resume_epoch: Optional[int]) -> None:
    """A fresh run (resume_epoch None) creates run_dir, which must not exist yet; a resumed run keeps
    the metrics.jsonl lines up to resume_epoch (the later epochs run again) and removes the state .tmp
    a kill cut off. Both then write args.json (config). An unwritable directory: one line, exit 2."""
    try:
        if resume_epoch is None:
            os.makedirs(run_dir, exist_ok=False)
        else:
            keep_metrics_through(os.path.join(run_dir, "metrics.jsonl"), resume_epoch)
            if os.path.exists(os.path.join(run_dir, STATE_FILE + ".tmp")):
                os.remove(os.path.join(run_dir, STATE_FILE + ".tmp"))
        atomic_write(os.path.join(run_dir, "args.json"), [json.dumps(config, indent=2).encode()])
    except OSError as e:
        print(f"error: cannot write the run directory {run_dir}: {e.strerror or e}", file=sys.stderr)
        sys.exit(2)


def init_wandb(run_dir: str, run_name: str, config: dict, project: str, entity: Optional[str], mode: str):
    """Starts the wandb run of run_dir, or continues it: its id is kept in run_dir/wandb_id.txt.
    wandb is imported here only, so that it is needed only with --track. Returns the wandb module."""
    import wandb

    id_path = os.path.join(run_dir, "wandb_id.txt")
    if os.path.isfile(id_path):
        with open(id_path) as f:
            wandb_id = f.read().strip()
    else:
        wandb_id = os.urandom(4).hex()
        atomic_write(id_path, [wandb_id.encode()])
    wandb.init(project=project, entity=entity, mode=mode, name=run_name, config=config, id=wandb_id, resume="allow")
    return wandb


def read_run_args(cli: Args, given: Optional[set[str]], resumable: tuple[str, ...],
                  required: str) -> tuple[Args, Optional[dict], Optional[str]]:
    """For --resume: the run's settings (cli.resume/args.json) with the flags a resumed run may change
    taken from the command line. Returns (args, the saved dict, None) or (cli, None, an error line).
    `given`: the fields set on the command line (None: those that differ from their default); a given
    flag that differs from the run's is refused unless it is in `resumable`. `required`: a field every
    args.json of this script has."""
    path = os.path.join(cli.resume, "args.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        return cli, None, f"--resume {cli.resume}: cannot read args.json ({e})"
    names = [field.name for field in dataclasses.fields(Args)]
    if not isinstance(saved, dict) or not set(saved) <= set(names) or not saved.get(required):
        return cli, None, f"--resume {cli.resume}: args.json is not a {SCRIPT} args file"
    saved = {name: tuple(value) if isinstance(value, list) else value for name, value in saved.items()}
    defaults, merged = Args(), dict(saved)
    if given is None:
        given = {name for name in names if getattr(cli, name) != getattr(defaults, name)}
    for name in names:
        if name not in given:
            continue
        value, old = getattr(cli, name), saved.get(name)
        if name not in resumable and value != old:
            flags = ", ".join("--" + n.replace("_", "-") for n in resumable if n != "resume")
            return cli, None, (f"--{name.replace('_', '-')} {value} conflicts with the run's {old} ({path}); a "
                               f"resumed run keeps its settings (only {flags} may change)")
        merged[name] = value
    try:
        return Args(**{**merged, "resume": cli.resume}), saved, None
    except TypeError as e:
        return cli, None, f"--resume {cli.resume}: args.json is not a {SCRIPT} args file ({e})"


def given_fields(argv: list[str]) -> set[str]:
    """Names of the Args fields set on a command line (--depth 8, --depth=8, --no-layer-norm)."""
    names = {field.name for field in dataclasses.fields(Args)}
    given = set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=")[0].replace("-", "_")
            given.add(name if name in names else name.removeprefix("no_"))
    return given & names


def resume_dir_error(run_dir: str) -> Optional[str]:
    """The one check of --resume before its args.json is read: every other flag is checked once
    merged with the run's settings (resume_args), so a resumed run may pass e.g. a --total-env-steps
    that only fits the run's own --num-envs."""
    if not os.path.isfile(os.path.join(run_dir, "args.json")):
        return f"--resume {run_dir}: not a run directory (no args.json in it)"
    return None


# END SHARED BLOCK: checkpoints


# ==================================================================================================
# Training loop
# ==================================================================================================
@flax.struct.dataclass
class TrainState:
    agent: Agent
    env_state: State
    buffer: Buffer
    key: jax.Array
    env_steps: jax.Array


def validate_args(args: Args) -> Optional[str]:
    """Returns one line describing what is wrong with args, or None."""
    if args.env_id not in ENVS:
        return f"unknown --env-id {args.env_id!r}; valid ids: {', '.join(ENVS)}"
    plot_error = validate_plot_args(args)
    if plot_error:
        return plot_error
    for name in ("depth", "actor_depth", "critic_depth"):
        value = getattr(args, name)
        if value is not None and (value <= 0 or value % 4 != 0):
            return f"--{name.replace('_', '-')} must be a positive multiple of 4 (got {value})"
    for name in ("num_envs", "episode_length", "num_eval_envs", "total_env_steps", "num_epochs",
                 "unroll_length", "num_sgd_steps", "batch_size", "max_replay_size", "min_replay_size",
                 "width", "repr_dim", "checkpoint_every", "num_seeds"):
        if getattr(args, name) <= 0:
            return f"--{name.replace('_', '-')} must be positive (got {getattr(args, name)})"
    for name in ("actor_lr", "critic_lr", "alpha_lr"):
        if not getattr(args, name) > 0:
            return f"--{name.replace('_', '-')} must be positive (got {getattr(args, name)})"
    if not 0.0 < args.gamma < 1.0:
        return f"--gamma must be in (0, 1) (got {args.gamma})"
    if args.num_seeds > 1:
        for name in ("render", "save_buffer", "plot_critic"):
            if getattr(args, name):
                return f"--{name.replace('_', '-')} works on one run: not with --num-seeds {args.num_seeds}"
    num_local = len(jax.local_devices())
    if not 0 <= args.num_devices <= num_local:
        return f"--num-devices must be in [0, {num_local}] (0: all {num_local} local devices; got {args.num_devices})"
    num_devices = args.num_devices or num_local
    for name in ("num_envs", "batch_size"):
        if getattr(args, name) % num_devices:
            return (f"--{name.replace('_', '-')} ({getattr(args, name)}) must be a multiple of the number of devices "
                    f"({num_devices}{'' if args.num_devices else ', all local ones; set --num-devices'})")
    if args.logsumexp_penalty < 0:
        return f"--logsumexp-penalty must be >= 0 (got {args.logsumexp_penalty})"
    if args.episode_length < 2:
        return f"--episode-length must be at least 2 (got {args.episode_length})"
    if args.min_replay_size > args.max_replay_size:
        return (f"--min-replay-size ({args.min_replay_size}) must not exceed --max-replay-size "
                f"({args.max_replay_size})")
    if args.min_replay_size < args.episode_length:
        return (f"--min-replay-size ({args.min_replay_size}) must be at least --episode-length "
                f"({args.episode_length}): sampling takes windows of one episode length per env")
    if args.unroll_length > args.max_replay_size:
        return f"--unroll-length ({args.unroll_length}) must not exceed --max-replay-size ({args.max_replay_size})"
    per_step = args.num_envs * (args.episode_length - 1)  # relabelled transitions per training step
    if args.num_sgd_steps * args.batch_size > per_step:
        return (f"--num-sgd-steps x --batch-size ({args.num_sgd_steps} x {args.batch_size}) is larger than "
                f"what a training step yields: num_envs x (episode_length - 1) = {per_step} transitions")
    _, _, steps_per_epoch = schedule(args)
    if steps_per_epoch < 1:
        prefill, per_train_step, _ = schedule(args)
        need = prefill + args.num_epochs * per_train_step
        return (f"--total-env-steps {args.total_env_steps} is too small: {args.num_epochs} epochs of one "
                f"training step each after the prefill need {need}")
    return None


def schedule(args: Args) -> tuple[int, int, int]:
    """(prefill env steps, env steps per training step, training steps per epoch)."""
    prefill_unrolls = -(-args.min_replay_size // args.unroll_length)
    prefill = prefill_unrolls * args.unroll_length * args.num_envs
    per_train_step = args.num_envs * args.unroll_length
    return prefill, per_train_step, (args.total_env_steps - prefill) // (args.num_epochs * per_train_step)


def make_train_fns(args: Args, env: VecGoalEnv, nets: Networks, opts: Optimizers, goal_slice: tuple[int, int],
                   batch_sharding: Optional[NamedSharding] = None) -> tuple[Callable, Callable]:
    """The prefill and epoch functions of ONE seed (main vmaps them over the seed axis and jits them).
    batch_sharding: where each SGD batch lives when the batch is split across devices."""
    obs_dim = env.env.obs_dim
    target_entropy = -args.target_entropy_scale * env.action_size
    sgd_update = make_sgd_update(nets, opts, target_entropy, args.logsumexp_penalty)
    _, _, steps_per_epoch = schedule(args)

    def collect(ts: TrainState, policy: Callable) -> TrainState:
        """num_envs x unroll_length env steps; inserts (state, action, episode id) into the buffer."""

        def env_step(carry, _):
            env_state, key = carry
            key, key_act = jax.random.split(key)
            action = policy(env_state.obs, key_act)
            next_state = env.step(env_state, action)
            return (next_state, key), (env_state.obs[:, :obs_dim], action, env_state.info["episode_id"])

        key, key_unroll = jax.random.split(ts.key)
        (env_state, _), (states, actions, episode_ids) = jax.lax.scan(
            env_step, (ts.env_state, key_unroll), None, length=args.unroll_length)
        buffer = buffer_insert(ts.buffer, states, actions, episode_ids)
        return ts.replace(env_state=env_state, buffer=buffer, key=key,
                          env_steps=ts.env_steps + args.unroll_length * args.num_envs)

    def random_policy(obs, key):
        return jax.random.uniform(key, (obs.shape[0], env.action_size), minval=-1.0, maxval=1.0)

    def prefill(ts: TrainState) -> TrainState:
        num_unrolls = -(-args.min_replay_size // args.unroll_length)
        return jax.lax.fori_loop(0, num_unrolls, lambda _, ts: collect(ts, random_policy), ts)

    def training_step(ts: TrainState, _) -> tuple[TrainState, dict]:
        def actor_policy(obs, key):
            mean, log_std = nets.actor.apply(ts.agent.actor_params, obs)
            return sample_tanh_gaussian(key, mean, log_std)[0]

        episodes_before = jnp.sum(ts.env_state.info["episode_id"])
        ts = collect(ts, actor_policy)
        key, key_sample, key_shuffle, key_sgd = jax.random.split(ts.key, 4)
        data = buffer_sample(ts.buffer, key_sample, args.episode_length, args.gamma, *goal_slice)
        batches = shuffle_into_batches(key_shuffle, data, args.num_sgd_steps, args.batch_size)
        if batch_sharding is not None:  # data parallel: each device takes its slice of every batch
            batches = jax.lax.with_sharding_constraint(batches, batch_sharding)

        def sgd_step(agent, xs):
            batch, key = xs
            return sgd_update(agent, batch, key)

        agent, metrics = jax.lax.scan(
            sgd_step, ts.agent, (batches, jax.random.split(key_sgd, args.num_sgd_steps)))
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["buffer/valid_fraction"] = jnp.mean(data["valid"])
        metrics["buffer/mean_goal_offset"] = jnp.sum(data["k"] * data["valid"]) / jnp.maximum(
            jnp.sum(data["valid"]), 1)
        metrics["train/episodes_finished"] = jnp.sum(ts.env_state.info["episode_id"]) - episodes_before
        return ts.replace(agent=agent, key=key), metrics

    def train_epoch(ts: TrainState) -> tuple[TrainState, dict]:
        ts, metrics = jax.lax.scan(training_step, ts, None, length=steps_per_epoch)
        metrics = jax.tree.map(jnp.mean, metrics)
        # divergence guard: 1 when every parameter, optimiser moment and log(alpha) is finite
        metrics["train/params_finite"] = jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(ts.agent)])).astype(jnp.float32)
        return ts, metrics

    return prefill, train_epoch


def state_shardings(ts: TrainState, mesh: Mesh) -> TrainState:
    """Where each leaf of the (seed-batched) training state lives on the device mesh: env-state and
    replay-buffer leaves split along their env axis (axis 1 and 2, after the seed axis), everything
    else (networks, optimisers, keys, counters) replicated."""
    def split(env_axis: int) -> Callable:
        return lambda x: NamedSharding(mesh, PartitionSpec(*[None] * env_axis, "envs") if x.ndim > env_axis
                                       else PartitionSpec())

    replicated = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), ts)
    return replicated.replace(env_state=jax.tree.map(split(1), ts.env_state), buffer=jax.tree.map(split(2), ts.buffer))


# --- Checkpoints and resume -----------------------------------------------------------------------
# state.msgpack (the checkpoints block above) holds the whole TrainState: every network's params and
# optimiser state, log(alpha), the env state with its RNG keys, the replay buffer unless
# --no-checkpoint-buffer, the training key, env steps, each with a leading seed axis; plus the epoch
# and the evaluation keys.
STATE_FORMAT, STATE_VERSION = "crl_depth_state", 2  # 2: a seed axis on every leaf
# flags a resumed run may change; every other flag comes from the run's args.json
RESUMABLE_FIELDS = ("num_epochs", "total_env_steps", "checkpoint_every", "checkpoint_buffer", "track",
                    "wandb_project_name", "wandb_entity", "wandb_mode", "render", "save_buffer", "plot_critic",
                    "plot_goal", "plot_out", "runs_dir", "resume", "num_devices")


def state_header(args: Args) -> dict:
    """What a state checkpoint must match to be loaded into a run of these args."""
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "env_id": args.env_id,
            "actor_depth": args.actor_depth or args.depth, "critic_depth": args.critic_depth or args.depth,
            "width": args.width, "repr_dim": args.repr_dim, "layer_norm": args.layer_norm,
            "activation": args.activation, "residual": args.residual, "num_envs": args.num_envs,
            "episode_length": args.episode_length, "max_replay_size": args.max_replay_size,
            "num_seeds": args.num_seeds}


def describe_run(header: dict) -> str:
    return (f"env {header.get('env_id')} actor depth {header.get('actor_depth')} critic depth "
            f"{header.get('critic_depth')} width {header.get('width')}")


def resume_args(cli: Args, given: Optional[set[str]] = None) -> tuple[Args, Optional[str]]:
    """The args of the run in cli.resume with the flags given on the command line (read_run_args), or
    an error line: they must be valid, and an epoch must keep its number of training steps."""
    args, saved, error = read_run_args(cli, given, RESUMABLE_FIELDS, "env_id")
    if error:
        return args, error
    error = validate_args(args)
    if error:
        return args, error
    old_args = dataclasses.replace(args, **saved)
    if schedule(args)[::2] != schedule(old_args)[::2]:
        return args, (f"--num-epochs {args.num_epochs} --total-env-steps {args.total_env_steps} change the run's epoch "
                      f"({schedule(old_args)[2]} training steps); change both together to keep it")
    return args, None


# ==================================================================================================
# Evaluation
# ==================================================================================================
def make_evaluate(args: Args, eval_env: VecGoalEnv, nets: Networks) -> Callable:
    """The evaluation of one seed: one episode of episode_length steps on every eval env, fresh starts and goals, the
    deterministic actor tanh(mean). Per-step metrics count while the episode is alive (up to and
    including the step that terminates it)."""

    def evaluate(actor_params, key: jax.Array) -> dict:
        def step(carry, _):
            env_state, alive = carry
            mean, _ = nets.actor.apply(actor_params, env_state.obs)
            next_state = eval_env.step(env_state, jnp.tanh(mean))
            out = (alive * next_state.metrics["success"], alive * next_state.metrics["dist"], alive)
            return (next_state, alive * (1.0 - next_state.done)), out

        env_state = eval_env.reset(key)
        alive0 = jnp.ones(eval_env.num_envs)
        _, (success, dist, alive) = jax.lax.scan(step, (env_state, alive0), None, length=args.episode_length)
        steps_alive = jnp.sum(alive, axis=0)
        return {"eval/time_at_goal": jnp.mean(jnp.sum(success, axis=0)),
                "eval/success_any": jnp.mean(jnp.max(success, axis=0)),
                "eval/dist": jnp.mean(jnp.sum(dist, axis=0) / steps_alive),
                "eval/episode_length": jnp.mean(steps_alive)}

    return evaluate


def render_rollout(path: str, env: GoalEnv, nets: Networks, actor_params, key: jax.Array, steps: int):
    """Writes an HTML rollout of one episode of the deterministic policy (brax's viewer; the red
    sphere is the goal)."""
    from brax.io import html

    reset, step = jax.jit(env.reset), jax.jit(env.step)
    act = jax.jit(lambda obs: jnp.tanh(nets.actor.apply(actor_params, obs)[0]))
    state, rollout = reset(key), []
    for _ in range(steps):
        rollout.append(state.pipeline_state)
        state = step(state, act(state.obs))
        if state.done:
            break
    rollout.append(state.pipeline_state)
    html.save(path, env.sys, rollout)


def farthest_goal_cell(maze: Maze) -> tuple[int, int]:
    """The G cell farthest from the start along the maze (breadth-first over free cells); the
    first in reading order on a tie."""
    free, dist, frontier = set(maze.cells("RG.")), {maze.start: 0}, [maze.start]
    while frontier:
        nxt = []
        for i, j in frontier:
            for cell in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                if cell in free and cell not in dist:
                    dist[cell] = dist[(i, j)] + 1
                    nxt.append(cell)
        frontier = nxt
    return max(maze.cells("G"), key=lambda cell: dist.get(cell, -1))


def critic_heatmap(env: GoalEnv, nets: Networks, actor_params, critic_params, goal_cell: tuple[int, int],
                   points_per_cell: int = 5) -> np.ndarray:
    """f(s, a, g) = -||phi(s, a) - psi(g)|| over the maze: s is the robot standing still in its
    initial pose with its torso at each of points_per_cell^2 points of every free cell, g the goal
    at goal_cell's centre, a the deterministic actor's action tanh(mean(s, g)). Returns an array
    [rows * k, cols * k] (k = points_per_cell) in the picture's orientation, NaN on walls."""
    maze, k = env.maze, points_per_cell
    height, width = len(maze.rows), len(maze.rows[0])
    offsets = ((np.arange(k) + 0.5) / k - 0.5) * maze.scale  # sub-cell points, along x and along y
    x = np.repeat(np.arange(height) * maze.scale, k) + np.tile(offsets, height)
    y = np.repeat(np.arange(width) * maze.scale, k) + np.tile(offsets, width)
    xy = np.stack(np.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    goal_xy = jnp.asarray(maze.xy([goal_cell])[0])
    goal = env.goal_at(goal_xy)

    @jax.jit
    def score(actor_params, critic_params, xy):
        def state_at(p):
            q = env.sys.init_q.at[:2].set(p).at[-2:].set(goal_xy)
            ps = env.pipeline_init(q, jnp.zeros(env.sys.qd_size()))
            return env._state(ps, jnp.zeros(env.sys.act_size()))

        states = jax.vmap(state_at)(xy)
        goals = jnp.broadcast_to(goal, (states.shape[0], goal.shape[0]))
        action = jnp.tanh(nets.actor.apply(actor_params, jnp.concatenate([states, goals], -1))[0])
        sa_repr = nets.phi.apply(critic_params["phi"], jnp.concatenate([states, action], -1))
        g_repr = nets.psi.apply(critic_params["psi"], goals)
        return l2_energy_pairs(sa_repr, g_repr)

    values = np.asarray(score(actor_params, critic_params, xy)).reshape(height * k, width * k)
    wall = np.array([[c == "#" for c in row] for row in maze.rows])
    return np.where(np.kron(wall, np.ones((k, k))) > 0, np.nan, values)


HEATMAP_PANEL_PX, HEATMAP_DPI = (400, 440), 100  # one panel's size in the PNG (width, height)


def plot_critic_heatmap(path: str, env_id: str, env: GoalEnv, panels: list[tuple[str, Networks, Any, Any]],
                        goal_cell: tuple[int, int]) -> None:
    """Writes a PNG, one panel per (title, nets, actor_params, critic_params) side by side, each
    HEATMAP_PANEL_PX: the critic's score over the free cells, walls grey, start (white circle) and
    goal (red star) marked. Each panel has its own colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maze = env.maze
    s, height, width = maze.scale, len(maze.rows), len(maze.rows[0])
    extent = (-0.5 * s, (width - 0.5) * s, (height - 0.5) * s, -0.5 * s)  # y right, x down: the picture
    (w, h), n = HEATMAP_PANEL_PX, len(panels)
    fig, axes = plt.subplots(1, n, figsize=(w * n / HEATMAP_DPI, h / HEATMAP_DPI), dpi=HEATMAP_DPI,
                             squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("0.35")  # walls
    for ax, (title, nets, actor_params, critic_params) in zip(axes[0], panels):
        values = critic_heatmap(env, nets, actor_params, critic_params, goal_cell)
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


NETWORK_FIELDS = ("depth", "actor_depth", "critic_depth", "width", "repr_dim", "layer_norm", "activation",
                  "residual")


def load_checkpoint(path: str, args: Args, action_size: int) -> tuple[str, Networks, Any, Any]:
    """Reads a checkpoint.msgpack into (title, nets, actor_params, critic_params). The network's
    shape comes from the args.json beside the checkpoint (the run that wrote it), else from the
    command line's --depth, --width, ... flags; a checkpoint that does not fit raises
    CheckpointError naming the first parameter that differs."""
    if not os.path.isfile(path):
        raise CheckpointError(f"--load {path}: no such file")
    run_args_path = os.path.join(os.path.dirname(path), "args.json")
    source, cfg = "the command line", {name: getattr(args, name) for name in NETWORK_FIELDS}
    if os.path.isfile(run_args_path):
        with open(run_args_path) as f:
            run_args = json.load(f)
        if run_args.get("env_id", args.env_id) != args.env_id:
            raise CheckpointError(f"--load {path}: trained on {run_args['env_id']!r}, not on --env-id {args.env_id!r}")
        source, cfg = run_args_path, {name: run_args.get(name, value) for name, value in cfg.items()}
    actor_depth, critic_depth = cfg["actor_depth"] or cfg["depth"], cfg["critic_depth"] or cfg["depth"]
    spec = ENVS[args.env_id]
    goal_dim = spec.goal_end - spec.goal_start
    nets = make_networks(actor_depth, critic_depth, cfg["width"], cfg["repr_dim"], action_size,
                         cfg["layer_norm"], cfg["activation"], cfg["residual"])
    key = jax.random.PRNGKey(0)
    expected = jax.eval_shape(lambda: {
        "actor": nets.actor.init(key, jnp.zeros((1, spec.obs_dim + goal_dim))),
        "critic": {"phi": nets.phi.init(key, jnp.zeros((1, spec.obs_dim + action_size))),
                   "psi": nets.psi.init(key, jnp.zeros((1, goal_dim)))},
        "log_alpha": jnp.zeros(())})
    try:
        with open(path, "rb") as f:
            restored = flax.serialization.msgpack_restore(f.read())
    except ValueError as e:
        raise CheckpointError(f"--load {path}: not a flax msgpack checkpoint ({e})") from None
    want = {"/".join(k): v.shape for k, v in flax.traverse_util.flatten_dict(expected).items()}
    got = ({"/".join(k): np.shape(v) for k, v in flax.traverse_util.flatten_dict(restored).items()}
           if isinstance(restored, dict) else {})
    if want != got:
        name = next(k for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k))
        raise CheckpointError(
            f"--load {path} does not fit a network of actor depth {actor_depth}, critic depth {critic_depth}, "
            f"width {cfg['width']}, repr dim {cfg['repr_dim']}, layer norm {cfg['layer_norm']} (from {source}): "
            f"{name} is {got.get(name, 'missing')} in the checkpoint, {want.get(name, 'absent')} expected; "
            f"give the run's --depth/--actor-depth/--critic-depth/--width/--repr-dim/--no-layer-norm")
    run = os.path.basename(os.path.dirname(os.path.abspath(path)))
    title = f"critic depth {critic_depth}, width {cfg['width']}\n{run[:48]}"
    return title, nets, restored["actor"], restored["critic"]


def plot_checkpoints(args: Args) -> None:
    """--plot-critic --load PATH [PATH ...]: the heatmap of saved critics, no training."""
    paths = [p for entry in args.load for p in entry.split(",") if p]
    env = make_env(args.env_id, eval=True)
    panels = [load_checkpoint(p, args, env.sys.act_size()) for p in paths]
    out = args.plot_out or os.path.join(os.path.dirname(paths[0]), "critic_heatmap.png")
    plot_critic_heatmap(out, args.env_id, env, panels, args.plot_goal or farthest_goal_cell(env.maze))
    print(f"critic heatmap: {out}", flush=True)


def validate_plot_args(args: Args) -> Optional[str]:
    """What is wrong with the --plot-critic / --load flags, or None."""
    if args.load and not args.plot_critic:
        return "--load is only read by --plot-critic (to continue a training run use --resume RUN_DIR)"
    if not args.plot_critic:
        return None
    env = make_env(args.env_id, eval=True)
    if not isinstance(getattr(env, "maze", None), Maze):
        mazes = [env_id for env_id in ENVS if env_id.endswith("_maze")]
        return f"--plot-critic needs a maze env ({', '.join(mazes)}), not {args.env_id!r}"
    if args.plot_goal is not None and tuple(args.plot_goal) not in env.maze.cells("RG."):
        return (f"--plot-goal {args.plot_goal[0]} {args.plot_goal[1]} is not a free cell of {args.env_id}'s "
                f"evaluation layout (rows: {'/'.join(env.maze.rows)})")
    return None


# ==================================================================================================
# Main
# ==================================================================================================
def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def main(args: Args, argv: Optional[list[str]] = None) -> None:
    """argv: the command line's flags (for --resume: which flags were given)."""
    # a resumed run's flags are checked once merged with the run's args.json, by resume_args
    error = validate_args(args) if args.resume is None else resume_dir_error(args.resume)
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if args.load:  # --plot-critic from saved checkpoints, no training
        try:
            plot_checkpoints(args)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        return
    if args.resume:  # the run's own settings, checked before any work
        args, error = resume_args(args, None if argv is None else given_fields(argv))
        if error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    actor_depth = args.actor_depth or args.depth
    critic_depth = args.critic_depth or args.depth
    if args.resume:
        run_dir = args.resume.rstrip("/")
        run_name = os.path.basename(run_dir)
    else:
        seed_name = str(args.seed) if args.num_seeds == 1 else f"{args.seed}-{args.seed + args.num_seeds - 1}"
        run_name = f"{args.env_id}__{args.exp_name}__{seed_name}__{int(time.time())}"
        run_dir = os.path.join(args.runs_dir, run_name)
    state_path = os.path.join(run_dir, STATE_FILE)

    # seeding: seed i of --num-seeds draws exactly the keys a single run with --seed seed+i draws
    random.seed(args.seed)
    np.random.seed(args.seed)
    seeds = [args.seed + i for i in range(args.num_seeds)]
    keys = seed_keys(seeds, 5)
    key, key_agent, key_env, key_eval, key_render = (keys[:, i] for i in range(5))

    # devices: with more than one, training envs, replay buffer and SGD batches are split across them
    devices = jax.local_devices()[: args.num_devices or None]
    mesh = Mesh(np.array(devices), ("envs",)) if len(devices) > 1 else None

    spec = ENVS[args.env_id]
    env = VecGoalEnv(make_env(args.env_id), args.num_envs, args.episode_length)
    eval_env = VecGoalEnv(make_env(args.env_id, eval=True), args.num_eval_envs, args.episode_length)
    goal_dim = spec.goal_end - spec.goal_start
    nets = make_networks(actor_depth, critic_depth, args.width, args.repr_dim, env.action_size,
                         args.layer_norm, args.activation, args.residual, args.remat, args.compute_dtype)
    opts = Optimizers(optax.adam(args.actor_lr), optax.adam(args.critic_lr), optax.adam(args.alpha_lr))

    def fresh_state(key_agent: jax.Array, key_env: jax.Array, key: jax.Array) -> TrainState:  # one seed
        agent = agent_init(key_agent, nets, opts, spec.obs_dim, goal_dim, env.action_size)
        return TrainState(agent=agent, env_state=env.reset(key_env),
                          buffer=buffer_init(args.max_replay_size, args.num_envs, spec.obs_dim, env.action_size),
                          key=key, env_steps=jnp.zeros((), jnp.int32))

    def empty_buffers() -> Buffer:
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (args.num_seeds,) + x.shape),
                            buffer_init(args.max_replay_size, args.num_envs, spec.obs_dim, env.action_size))

    start_epoch, refill = 1, True
    if args.resume:  # load and check the checkpoint before compiling or writing anything
        if not os.path.isfile(state_path):
            print(f"error: --resume {run_dir}: no {STATE_FILE} in it (stopped before its first checkpoint; "
                  f"start the run again)", file=sys.stderr)
            sys.exit(2)
        try:
            ckpt_epoch, key_eval, ts, has_buffer = load_state(
                state_path, state_header(args), describe_run,
                jax.eval_shape(seed_map(fresh_state, args.num_seeds), key_agent, key_env, key))
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if not has_buffer:
            ts = ts.replace(buffer=empty_buffers())
        ts = jax.tree.map(jnp.asarray, ts)
        key_eval = jnp.asarray(key_eval)
        start_epoch, refill = ckpt_epoch + 1, not has_buffer
    else:
        ts = jax.jit(seed_map(fresh_state, args.num_seeds))(key_agent, key_env, key)
    ts = jax.tree.map(jnp.copy, ts)  # every leaf its own buffer, so the state can be donated
    num_params = sum(x[0].size for x in jax.tree.leaves((ts.agent.actor_params, ts.agent.critic_params)))

    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    prepare_run_dir(run_dir, dataclasses.asdict(dataclasses.replace(args, resume=None)),
                    ckpt_epoch if args.resume else None)
    if args.track:
        wandb = init_wandb(run_dir, run_name, dataclasses.asdict(args), args.wandb_project_name, args.wandb_entity,
                           args.wandb_mode)

    prefill_steps, per_train_step, steps_per_epoch = schedule(args)
    print(f"run {run_dir} | env {args.env_id} | actor depth {actor_depth} critic depth {critic_depth} "
          f"width {args.width} | {num_params:,} params | {steps_per_epoch} training steps/epoch of "
          f"{per_train_step:,} env steps | backend {jax.default_backend()}"
          + (f" | seeds {', '.join(map(str, seeds))} in one process" if args.num_seeds > 1 else "")
          + (f" | {len(devices)} devices, envs and batches split" if mesh else "")
          + (f" | {args.compute_dtype} matmuls" if args.compute_dtype != "float32" else ""), flush=True)
    if args.resume:
        print(f"resuming from {state_path} at epoch {start_epoch - 1} ({int(ts.env_steps[0]):,} env steps)",
              flush=True)

    # every function runs on all seeds at once (seed_map: vmap over the leading seed axis); with several
    # devices, jit places each leaf as state_shardings says and XLA inserts the communication
    prefill_fn, epoch_fn = (seed_map(fn, args.num_seeds) for fn in make_train_fns(
        args, env, nets, opts, (spec.goal_start, spec.goal_end),
        NamedSharding(mesh, PartitionSpec(None, "envs")) if mesh else None))
    evaluate = seed_map(make_evaluate(args, eval_env, nets), args.num_seeds)
    if mesh:
        shardings, replicated = state_shardings(ts, mesh), NamedSharding(mesh, PartitionSpec())
        ts, key_eval = jax.device_put(ts, shardings), jax.device_put(key_eval, replicated)
        prefill_fn = jax.jit(prefill_fn, in_shardings=(shardings,), out_shardings=shardings, donate_argnums=0)
        epoch_fn = jax.jit(epoch_fn, in_shardings=(shardings,), out_shardings=(shardings, replicated),
                           donate_argnums=0)
        evaluate = jax.jit(evaluate, out_shardings=replicated)
    else:
        prefill_fn = jax.jit(prefill_fn, donate_argnums=0)
        epoch_fn = jax.jit(epoch_fn, donate_argnums=0)
        evaluate = jax.jit(evaluate)
    t0 = time.perf_counter()
    prefill_c = prefill_fn.lower(ts).compile() if refill else None
    t1 = time.perf_counter()
    epoch_c = epoch_fn.lower(ts).compile()
    t2 = time.perf_counter()
    eval_c = evaluate.lower(ts.agent.actor_params, key_eval).compile()
    compile_s = time.perf_counter() - t0
    print(f"compiled in {compile_s:.1f}s (prefill {t1 - t0:.1f}s, epoch {t2 - t1:.1f}s, "
          f"evaluation {compile_s - (t2 - t0):.1f}s)", flush=True)
    if refill:
        if args.resume:
            print(f"the checkpoint holds no replay buffer (--no-checkpoint-buffer): refilling it with "
                  f"{prefill_steps:,} env steps of random actions", flush=True)
        else:
            print(f"prefilling {prefill_steps:,} env steps with random actions", flush=True)
        ts = prefill_c(ts)

    def log(epoch: int, per_seed: dict, shared: dict) -> list[dict]:
        return log_seeds(metrics_path, wandb if args.track else None, epoch, seeds, ("env_steps", ts.env_steps),
                         per_seed, shared)

    if not args.resume:  # epoch 0: the untrained policy, the baseline that learning must rise above
        key_eval, key_e = split_seed_keys(key_eval)
        eval_metrics = jax.device_get(eval_c(ts.agent.actor_params, key_e))
        log(0, eval_metrics, {"time/compile_s": compile_s})
        print(f"epoch 0 (untrained) | time at goal {across_seeds(eval_metrics['eval/time_at_goal'], '.1f')}/"
              f"{args.episode_length} | success {across_seeds(eval_metrics['eval/success_any'], '.2f')} | "
              f"dist {across_seeds(eval_metrics['eval/dist'], '.2f')}", flush=True)
    last_good = state_path if args.resume else None
    epoch_times = []
    for epoch in range(start_epoch, args.num_epochs + 1):
        t_epoch = time.perf_counter()
        if os.environ.get(TEST_NAN_ENV) == str(epoch):
            ts = ts.replace(agent=ts.agent.replace(log_alpha=ts.agent.log_alpha + jnp.nan))
        ts, train_metrics = epoch_c(ts)
        train_metrics = jax.device_get(train_metrics)
        train_s = time.perf_counter() - t_epoch
        key_eval, key_e = split_seed_keys(key_eval)
        eval_metrics = jax.device_get(eval_c(ts.agent.actor_params, key_e))
        epoch_s = time.perf_counter() - t_epoch
        epoch_times.append(epoch_s)
        sps = args.num_seeds * steps_per_epoch * per_train_step / train_s  # env steps of all seeds
        records = log(epoch, eval_metrics | train_metrics,
                      {"charts/sps": sps, "time/epoch_s": epoch_s, "time/compile_s": compile_s})
        m = eval_metrics | train_metrics
        eta = (args.num_epochs - epoch) * sum(epoch_times) / len(epoch_times)
        print(f"epoch {epoch}/{args.num_epochs} | env steps {records[0]['env_steps']:,} | SPS {sps:,.0f} | "
              f"time at goal {across_seeds(m['eval/time_at_goal'], '.1f')}/{args.episode_length} | "
              f"success {across_seeds(m['eval/success_any'], '.2f')} | dist {across_seeds(m['eval/dist'], '.2f')} | "
              f"critic {np.mean(m['losses/critic']):.3f} acc {np.mean(m['critic/categorical_accuracy']):.2f} | "
              f"actor {np.mean(m['losses/actor']):.3f} | alpha {np.mean(m['actor/alpha']):.3g} | "
              f"entropy {np.mean(m['actor/entropy']):.2f} | ETA {format_duration(eta)}", flush=True)
        bad = [f"{name} ({record[name]})" + (f" of seed {record['seed']}" if args.num_seeds > 1 else "")
               for record in records for name in ("losses/critic", "losses/actor", "losses/alpha")
               if not math.isfinite(record[name])]
        bad += ["parameters" + (f" of seed {record['seed']}" if args.num_seeds > 1 else "")
                for record in records if record["train/params_finite"] < 1.0]
        if bad:  # divergence guard: stop before the bad state can overwrite the last good checkpoint
            print(f"error: non-finite {', '.join(bad)} at epoch {epoch}; last good checkpoint: "
                  f"{last_good or 'none (none written yet)'}", file=sys.stderr)
            sys.exit(1)
        if epoch % args.checkpoint_every == 0 or epoch == args.num_epochs:
            t_save = time.perf_counter()
            try:
                size = save_state(state_path, state_header(args), epoch, key_eval, ts, args.checkpoint_buffer)
            except CheckpointWriteError as e:
                print(f"error: {e}; last good checkpoint: {last_good or 'none'}", file=sys.stderr)
                sys.exit(1)
            last_good = state_path
            print(f"checkpoint: epoch {epoch} -> {state_path} ({size / 1e6:,.1f} MB, "
                  f"{time.perf_counter() - t_save:.1f}s)", flush=True)

    for i, seed in enumerate(seeds):  # the final networks, one file per seed (--load reads them)
        checkpoint = jax.tree.map(lambda x: x[i], {"actor": ts.agent.actor_params, "critic": ts.agent.critic_params,
                                                   "log_alpha": ts.agent.log_alpha})
        name = "checkpoint.msgpack" if args.num_seeds == 1 else f"checkpoint_seed{seed}.msgpack"
        atomic_write(os.path.join(run_dir, name), [flax.serialization.to_bytes(jax.device_get(checkpoint))])
    # below: a single run (validate_args refuses these with --num-seeds > 1); seed axis dropped
    ts = jax.tree.map(lambda x: x[0], ts)
    key_render = key_render[0]
    if args.save_buffer:  # the dataset of crl_depth_offline.py; keys in docs/offline.md
        buf = jax.device_get(ts.buffer)
        rows = (int(buf.ptr) - int(buf.size) + np.arange(int(buf.size))) % buf.state.shape[0]  # oldest first
        np.savez(os.path.join(run_dir, "buffer.npz"), format="crl_depth_buffer", version=1, env_id=args.env_id,
                 state=buf.state[rows], action=buf.action[rows], episode_id=buf.episode_id[rows],
                 obs_dim=spec.obs_dim, goal_start=spec.goal_start, goal_end=spec.goal_end,
                 episode_length=args.episode_length)
    if args.render:
        render_rollout(os.path.join(run_dir, "rollout.html"), make_env(args.env_id, eval=True), nets,
                       ts.agent.actor_params, key_render, args.episode_length)
    if args.plot_critic:
        eval_maze_env = make_env(args.env_id, eval=True)
        heatmap_path = args.plot_out or os.path.join(run_dir, "critic_heatmap.png")
        plot_critic_heatmap(heatmap_path, args.env_id, eval_maze_env,
                            [(f"critic depth {critic_depth}, width {args.width}\n{run_name[:48]}", nets,
                              ts.agent.actor_params, ts.agent.critic_params)],
                            args.plot_goal or farthest_goal_cell(eval_maze_env.maze))
        print(f"critic heatmap: {heatmap_path}", flush=True)
    print(f"done: {run_dir}", flush=True)
    if args.track:
        wandb.finish()


if __name__ == "__main__":
    main(tyro.cli(Args), sys.argv[1:])
