"""Goal-conditioned environments for contrastive RL: reacher, ant, humanoid, six mazes, three arms,
and three point mazes in pure jax.numpy (the ant mazes' layouts at CPU scale).

Every env's observation is state (obs_dim) ++ goal; a relabelled goal is
future_state[goal_start:goal_end], and the distance to the goal is
||state[goal_start:goal_end] - goal|| for every env. `ENVS` maps an env id to its constructor, obs
dim and goal slice; `VecGoalEnv` steps num_envs copies with an episode limit and auto reset (a
fresh start and goal every episode, and an episode id per env for the replay buffer). Usable on its
own, like a brax or gymnax env module:

    import jax, crl_envs
    env = crl_envs.VecGoalEnv(crl_envs.make_env("reacher"), num_envs=4, episode_length=100)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    state = jax.jit(env.step)(state, jax.numpy.zeros((4, env.action_size)))
    print(state.obs.shape, state.metrics["success"])   # (4, 13) [0. 0. 0. 0.]

The Panda arm scenes are generated from one MJCF template (not three asset files): the three scenes
differ only in a few parameters (_PANDA_TASKS), so one template shows what they share and exactly
where they differ; tests/test_arms.py compares each generated scene with the benchmark's scene
(tests/data/panda/, with its provenance).
"""

import contextlib
import dataclasses
import io
import warnings
import xml.etree.ElementTree as ET
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np


def _import_quietly() -> None:
    """mujoco's mjx prints "Failed to import warp" on import when the optional warp GPU backend (not
    used here) is absent, and brax warns that it is in maintenance mode; say neither, pass on the rest."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        import mujoco.mjx  # noqa: F401
    for line in out.getvalue().splitlines():
        if not line.startswith(("Failed to import warp:", "Failed to import mujoco_warp:")):
            print(line)
    warnings.filterwarnings("ignore", message="Brax System, piplines and environments are not actively",
                            category=UserWarning)


_import_quietly()
from brax import actuator as brax_actuator  # noqa: E402
from brax import base as brax_base  # noqa: E402
from brax.envs.base import PipelineEnv, State  # noqa: E402
from brax.io import mjcf  # noqa: E402
from etils import epath  # noqa: E402

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
        """The one place where a policy's action in [-1, 1] becomes motor controls (docs/implementation.md
        has the table). Here: the action as it is, clipped to each actuator's control range (brax clips
        it there too), which for reacher, ant and the ant mazes (ranges [-1, 1]) is the identity on the
        policy's actions, as in the paper's code. The humanoids (Humanoid._ctrl) and the arms
        (Arm._ctrl) map [-1, 1] onto their actuators' ranges instead."""
        return jnp.clip(action, self.sys.actuator.ctrl_range[:, 0], self.sys.actuator.ctrl_range[:, 1])

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

    def _ctrl(self, action):
        """As the paper's humanoid envs: [-1, 1] maps linearly onto each actuator's control range
        ([-0.4, 0.4]: actions -1, 0, 1 give controls -0.4, 0, 0.4), so the whole action range moves
        the motors; brax clips anything outside the range."""
        lo, hi = self.sys.actuator.ctrl_range[:, 0], self.sys.actuator.ctrl_range[:, 1]
        return (action + 1.0) * (hi - lo) * 0.5 + lo

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


class _InMaze:
    """What a robot in a maze adds to it: the maze, the start at the R cell (plus the robot's own start
    noise) and the goal at the centre of a uniformly chosen G cell (goal_at(xy): the goal vector)."""

    def __init__(self, maze: Maze, backend: str = "spring"):
        self.maze = maze
        super().__init__(backend)

    def _start_and_goal(self, rng):
        rng_robot, rng_goal = jax.random.split(rng)
        q, qd, _ = super()._start_and_goal(rng_robot)
        goal_xy = self.maze.sample_goal_xy(rng_goal)
        q = q.at[:2].add(self.maze.xy([self.maze.start])[0]).at[-2:].set(goal_xy)
        return q, qd, self.goal_at(goal_xy)

    def still_state(self, xy: jax.Array, goal_xy: jax.Array) -> jax.Array:
        """The state of the robot standing still in its initial pose with its torso at xy (the goal
        marker at goal_xy): the critic heatmap's states."""
        q = self.sys.init_q.at[:2].set(xy).at[-2:].set(goal_xy)
        ps = self.pipeline_init(q, jnp.zeros(self.sys.qd_size()))
        return self._state(ps, jnp.zeros(self.sys.act_size()))


class AntMaze(_InMaze, Ant):
    """Ant in a maze of 4 m cells: starts at the R cell (plus the ant's U(+-0.1) noise), goal the
    centre of a uniformly chosen G cell. Torso, the four hip capsules and the four feet collide with
    the walls; the other leg segments pass through them (as in the paper's env)."""

    scale = 4.0

    def _edit_xml(self, root):
        for name in ("torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom", "left_foot_geom",
                     "right_foot_geom", "third_foot_geom", "fourth_foot_geom"):
            root.find(f".//geom[@name='{name}']").set("conaffinity", "1")
        _add_maze(root, self.maze)

    def goal_at(self, xy: jax.Array) -> jax.Array:
        return xy


class HumanoidMaze(_InMaze, Humanoid):
    """Humanoid in a maze of 2 m cells (walls 1 m high), 0.0015 x 10 = 0.015 s a step: starts still
    at the R cell, goal (gx, gy, 1.25) at the centre of a uniformly chosen G cell."""

    scale = 2.0
    timestep = 0.0015

    def _edit_xml(self, root):
        _add_maze(root, self.maze)

    def goal_at(self, xy: jax.Array) -> jax.Array:
        return jnp.concatenate([xy, jnp.array([1.25])])


class PointMaze:
    """A point in a maze, pure jax.numpy (no physics engine): the CPU-scale version of the ant mazes,
    with their layouts, cell size (4 m), start (R cell plus U(+-0.1) noise), goals (centre of a
    uniformly chosen G cell), evaluation layouts and success radius (0.5 m).

    State = the position, observed in cells from the maze's centre ((x - cx) / s, (y - cy) / s): O(1)
    numbers, as the robots' joint states are (raw metres, up to 40, leave the network's first
    LayerNorm nearly blind to distance along a ray); goal = the goal's position in the same units =
    state[0:2]'s target; obs = state ++ goal. Distances, the success radius and the pipeline state
    (x, y) stay in metres. An action in [-1, 1]^2 (clipped) moves the point by max_move * action,
    max_move = 1.9 m per axis, just under half a cell: the largest move the wall rule below allows,
    and the setting under which CRL learned the u maze on a CPU (docs/mazes.md has the runs: slower
    points, or points with inertia, stalled a few cells from the start).

    Walls are exact against the grid: the straight move from p to p + d crosses at most one cell
    boundary per axis (|d| < s / 2); the crossings are taken in the order the segment meets them, and
    a crossing into a wall cell stops that axis just short of the wall while the other axis goes on
    (sliding along the wall). So a move never passes through a wall, nor cuts a wall's corner: a
    diagonal move past a corner enters the wall's side cell first and stops there."""

    obs_dim, goal_start, goal_end, success_radius = 2, 0, 2, 0.5
    scale, max_move, action_size = 4.0, 1.9, 2
    backend = "jax"

    def __init__(self, maze: Maze):
        assert maze.scale == self.scale and 0 < self.max_move < 0.5 * self.scale
        self.maze = maze
        self._wall = jnp.asarray([[c == "#" for c in row] for row in maze.rows])
        self._gap = 1e-4 * self.scale  # how far short of a wall a blocked axis stops
        self._centre = 0.5 * self.scale * jnp.array([len(maze.rows) - 1, len(maze.rows[0]) - 1], jnp.float32)

    def goal_at(self, xy: jax.Array) -> jax.Array:
        """The goal vector (and the state) of world position xy: cells from the maze's centre."""
        return (xy - self._centre) / self.scale

    def still_state(self, xy: jax.Array, goal_xy: jax.Array) -> jax.Array:
        """The state of the point at xy (the goal does not enter a point's state)."""
        return self.goal_at(xy)

    def cell(self, xy: jax.Array) -> jax.Array:
        """(row, column) of the cell holding xy, int32 [..., 2]."""
        return jnp.floor(xy / self.scale + 0.5).astype(jnp.int32)

    def _state(self, xy: jax.Array, goal: jax.Array) -> State:
        dist = jnp.linalg.norm(xy - goal)
        metrics = {"dist": dist, "success": (dist < self.success_radius).astype(jnp.float32)}
        obs = jnp.concatenate([self.goal_at(xy), self.goal_at(goal)])
        return State(xy, obs, metrics["success"], jnp.zeros(()), metrics, {"goal": goal})

    def reset(self, rng: jax.Array) -> State:
        rng_xy, rng_goal = jax.random.split(rng)
        noise = jax.random.uniform(rng_xy, (2,), minval=-0.1, maxval=0.1)
        return self._state(jnp.asarray(self.maze.xy([self.maze.start])[0]) + noise, self.maze.sample_goal_xy(rng_goal))

    def slide(self, xy: jax.Array, d: jax.Array) -> jax.Array:
        """Where the point lands moving by d from xy (|d| < s / 2 per axis; walls exact, as the class
        docstring says)."""
        cell, step = self.cell(xy), jnp.where(d >= 0, 1, -1).astype(jnp.int32)
        boundary = (cell + 0.5 * step) * self.scale  # the cell's edge the move heads for, per axis
        crosses = (d != 0) & (jnp.abs(d) >= jnp.abs(boundary - xy))  # landing on the edge counts
        t = jnp.where(crosses, (boundary - xy) / jnp.where(d == 0, 1.0, d), jnp.inf)  # when, in [0, 1]
        wall = self._wall
        # the crossing met first goes into the neighbour along its axis; the second one goes on from the
        # cell the first one left the point in
        blocked_first_x = crosses[0] & wall[cell[0] + step[0], cell[1]]
        row_after_x = jnp.where(crosses[0] & ~blocked_first_x, cell[0] + step[0], cell[0])
        blocked_then_y = crosses[1] & wall[row_after_x, cell[1] + step[1]]
        blocked_first_y = crosses[1] & wall[cell[0], cell[1] + step[1]]
        col_after_y = jnp.where(crosses[1] & ~blocked_first_y, cell[1] + step[1], cell[1])
        blocked_then_x = crosses[0] & wall[cell[0] + step[0], col_after_y]
        blocked = jnp.where(t[0] <= t[1], jnp.stack([blocked_first_x, blocked_then_y]),
                            jnp.stack([blocked_then_x, blocked_first_y]))
        return jnp.where(blocked, boundary - step * self._gap, xy + d)

    def step(self, state: State, action: jax.Array) -> State:
        xy = self.slide(state.pipeline_state, self.max_move * jnp.clip(action, -1.0, 1.0))
        nxt = self._state(xy, state.info["goal"])  # keeps state.info: the wrapper's counters live there
        return state.replace(pipeline_state=xy, obs=nxt.obs, reward=nxt.reward, done=nxt.done, metrics=nxt.metrics)


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
    """The MJCF text of one arm scene (tests compare it with tests/data/panda/panda_{task}.xml)."""
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
    make: Callable[[], "GoalEnv | PointMaze"]  # training env
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
    "point_u_maze": _maze_spec(PointMaze, ANT_U4_MAZE),
    "point_big_maze": _maze_spec(PointMaze, ANT_BIG_MAZE),
    "point_hardest_maze": _maze_spec(PointMaze, ANT_HARDEST_MAZE),
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




def make_vec_envs(env_id: str, num_envs: int, num_eval_envs: int,
                  episode_length: int) -> tuple[EnvSpec, VecGoalEnv, VecGoalEnv]:
    """An online run's envs: (the env's spec, num_envs training envs, num_eval_envs evaluation envs on
    the evaluation layout), episodes of episode_length steps."""
    return (ENVS[env_id], VecGoalEnv(make_env(env_id), num_envs, episode_length),
            VecGoalEnv(make_env(env_id, eval=True), num_eval_envs, episode_length))


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


def render_rollout(path: str, env: GoalEnv, policy: Callable[[jax.Array], jax.Array], key: jax.Array,
                   steps: int) -> None:
    """Writes an HTML rollout of one episode of policy(obs) -> action: brax's viewer (the red sphere is
    the goal), or for a point maze a picture of the maze with the point's path (red star: the goal)."""
    reset, step, act = jax.jit(env.reset), jax.jit(env.step), jax.jit(policy)
    state, rollout = reset(key), []
    for _ in range(steps):
        rollout.append(state.pipeline_state)
        state = step(state, act(state.obs))
        if state.done:
            break
    rollout.append(state.pipeline_state)
    if isinstance(env, PointMaze):
        with open(path, "w") as f:
            f.write(_point_maze_svg(env.maze, np.asarray(rollout), np.asarray(state.info["goal"])))
        return
    from brax.io import html

    html.save(path, env.sys, rollout)


def _point_maze_svg(maze: Maze, path_xy: np.ndarray, goal_xy: np.ndarray) -> str:
    """An HTML page with an SVG of the maze (rows down, columns right, as the picture), the point's path
    (blue, white circle at its start) and the goal (red star)."""
    s, px = maze.scale, 40 / maze.scale  # 40 pixels a cell

    def at(xy):  # world (x, y) -> svg (column, row) pixels
        return (xy[1] / s + 0.5) * s * px, (xy[0] / s + 0.5) * s * px

    walls = "".join(f'<rect x="{j * s * px}" y="{i * s * px}" width="{s * px}" height="{s * px}" fill="#b28050"/>'
                    for i, j in maze.cells("#"))
    points = " ".join("{:.1f},{:.1f}".format(*at(p)) for p in path_xy)
    (sx, sy), (gx, gy) = at(path_xy[0]), at(goal_xy)
    height, width = len(maze.rows) * s * px, len(maze.rows[0]) * s * px
    return (f'<!DOCTYPE html><html><body><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<rect width="{width}" height="{height}" fill="white"/>{walls}'
            f'<polyline points="{points}" fill="none" stroke="#1f5fbf" stroke-width="2"/>'
            f'<circle cx="{sx:.1f}" cy="{sy:.1f}" r="5" fill="white" stroke="black"/>'
            f'<text x="{gx:.1f}" y="{gy:.1f}" font-size="22" text-anchor="middle" dominant-baseline="central" '
            f'fill="red">&#9733;</text></svg></body></html>\n')
