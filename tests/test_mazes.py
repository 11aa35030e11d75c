"""Mazes: layouts (parsed against the spec's strings), the walls in the compiled system, starts and
goals, the evaluation layout, walls that stop the ant, a humanoid maze step and the critic heatmap
from tiny checkpoints (tests/test_e2e.py trains on ant_u4_maze and plots its heatmap). Maze physics is slow on CPU (each
compile of a step that sees hundreds of wall contacts takes tens of seconds), so every env is
compiled at most once here and runs a handful of steps."""

import json
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_depth as C
import crl_envs as E
import crl_plots as P
import crl_runs as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the benchmark's maze layouts (JaxGCRL, arXiv 2408.11052), rows top to bottom ('#' wall, 'R' start,
# 'G' goal cell): env id -> (picture constant, training layout, evaluation layout)
SPEC = {
    "ant_u4_maze": (E.ANT_U4_MAZE, "#####/#GGG#/#R#G#/###G#/#G#G#/#GGG#/#####",
                    "#####/#...#/#R#.#/###.#/#G#.#/#GGG#/#####"),
    "ant_u5_maze": (E.ANT_U5_MAZE, "########/#GGGGGG#/#R####G#/######G#/#G####G#/#GGGGGG#/########",
                    "########/#......#/#R####.#/######.#/#G####G#/#GGGGGG#/########"),
    "ant_big_maze": (E.ANT_BIG_MAZE, "########/#RG##GG#/#GG#GGG#/##GGG###/#GG#GGG#/#G#GG#G#/#GGG#GG#/########",
                     "########/#R.##GG#/#..#..G#/##...###/#..#...#/#.#G.#G#/#.GG#GG#/########"),
    "ant_hardest_maze": (E.ANT_HARDEST_MAZE, "############/#RGGG#GGGGG#/#G##G#G#G#G#/#GGGGGG#GGG#/#G####G###G#/"
                         "#GG#G#GGGGG#/##G#G#G#G###/#GG#GGG#GGG#/############", None),
    "humanoid_u_maze": (E.HUMANOID_U_MAZE, "#####/#RGG#/###G#/#GGG#/#####", "#####/#R..#/###.#/#GGG#/#####"),
    "humanoid_big_maze": (E.HUMANOID_BIG_MAZE,
                          "########/#RG##GG#/#GG#GGG#/##GGG###/#GG#GGG#/#G#GG#G#/#GGG#GG#/########",
                          "########/#R.##GG#/#..#.GG#/##...###/#..#...#/#.#G.#G#/#.GG#GG#/########"),
}


# ----------------------------------------------------------------------------- layouts (no physics)
@pytest.mark.parametrize("env_id", list(SPEC))
def test_pictures_are_the_spec_layouts(env_id):
    picture, train, evaluation = SPEC[env_id]
    mazes = E.parse_mazes(picture, 4.0)
    assert ["/".join(m.rows) for m in mazes] == [train] + ([evaluation] if evaluation else [])
    if evaluation:  # same walls and start, only the goal cells differ
        assert mazes[0].cells("#") == mazes[1].cells("#") and mazes[0].start == mazes[1].start
    assert env_id in C.ENVS


def test_u4_layout_cells_and_world_coordinates():
    train, evaluation = E.parse_mazes(E.ANT_U4_MAZE, 4.0)
    assert len(train.rows) == 7 and {len(r) for r in train.rows} == {5}
    assert len(train.cells("#")) == 35 - 11 and len(train.cells("G")) == 10 and train.start == (2, 1)
    assert evaluation.cells("G") == [(4, 1), (5, 1), (5, 2), (5, 3)] and len(evaluation.cells(".")) == 6
    # walls exactly where the picture has '#'
    for i, row in enumerate(train.rows):
        for j, char in enumerate(row):
            assert ((i, j) in train.cells("#")) == (char == "#")
    assert train.cells("#")[:6] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)]
    # cell (i, j) -> world (i s, j s): rows along x, columns along y
    np.testing.assert_allclose(train.xy([train.start]), [[8.0, 4.0]])
    np.testing.assert_allclose(train.xy([(4, 1), (5, 3)]), [[16.0, 4.0], [20.0, 12.0]])
    (u,) = E.parse_mazes(SPEC["humanoid_u_maze"][0], 2.0)[:1]
    np.testing.assert_allclose(u.xy([u.start]), [[2.0, 2.0]])


@pytest.mark.parametrize("picture,message", [
    ("#####\n#G.G#\n#####", "exactly one R"),
    ("#####\n#RRG#\n#####", "exactly one R"),
    ("#####\n#R..#\n#####", "exactly one R and a G"),
    ("#####\n.RG.#\n#####", "walls all around"),
    ("#####\n#RG#\n#####", "equally long"),
    ("#####\n#RGx#\n#####", "equally long"),
    ("#####  ###\n#RG.#\n#####", "same number of layouts"),
])
def test_bad_pictures_are_refused(picture, message):
    with pytest.raises(ValueError, match=message):
        E.parse_mazes(picture, 4.0)


def test_default_heatmap_goal_is_farthest_along_the_maze():
    _, u4_eval = E.parse_mazes(E.ANT_U4_MAZE, 4.0)
    assert E.farthest_goal_cell(u4_eval) == (4, 1)  # next to the start through the wall: 10 cells round
    _, hu_eval = E.parse_mazes(E.HUMANOID_U_MAZE, 2.0)
    assert E.farthest_goal_cell(hu_eval) == (3, 1)


# ----------------------------------------------------------------------------- compiled systems
@pytest.mark.parametrize("env_id", list(SPEC))
def test_every_maze_builds_with_its_walls(env_id):
    env, eval_env = E.make_env(env_id), E.make_env(env_id, eval=True)
    _, train, evaluation = SPEC[env_id]
    assert "/".join(env.maze.rows) == train
    assert "/".join(eval_env.maze.rows) == (evaluation or train)  # evaluation runs on the eval layout
    m = env.sys.mj_model
    s = env.maze.scale
    names = [m.geom(g).name for g in range(m.ngeom)]
    walls = [n for n in names if n.startswith("wall_")]
    assert len(walls) == len(env.maze.cells("#"))
    assert names[-1] == "target_geom"  # the target body stays last
    for (i, j) in env.maze.cells("#"):
        g = m.geom(f"wall_{i}_{j}")
        np.testing.assert_allclose(g.pos, [i * s, j * s, 0.25 * s])
        np.testing.assert_allclose(g.size, [0.5 * s, 0.5 * s, 0.25 * s])
        assert (int(g.contype[0]), int(g.conaffinity[0])) == (1, 1)
    np.testing.assert_allclose(m.geom("floor").size[:2], [100, 100])
    if env_id.startswith("ant"):
        assert s == 4.0 and abs(env.dt - 0.05) < 1e-9 and env.obs_dim == 29
        for name in ("torso_geom", "aux_1_geom", "aux_4_geom", "left_foot_geom", "fourth_foot_geom"):
            assert int(m.geom(name).conaffinity[0]) == 1, name
        assert int(m.geom("left_leg_geom").conaffinity[0]) == 0  # the legs pass through walls
    else:
        assert s == 2.0 and abs(env.dt - 0.015) < 1e-9 and env.obs_dim == 268
        assert abs(float(env.sys.opt.timestep) - 0.0015) < 1e-9


def test_plain_ant_and_humanoid_are_unchanged_by_the_maze_hooks():
    ant, humanoid = E.Ant(), E.Humanoid()
    assert int(ant.sys.mj_model.geom("torso_geom").conaffinity[0]) == 0
    np.testing.assert_allclose(ant.sys.mj_model.geom("floor").size[:2], [40, 40])
    assert not any(ant.sys.mj_model.geom(g).name.startswith("wall_") for g in range(ant.sys.mj_model.ngeom))
    assert abs(float(humanoid.sys.opt.timestep) - 0.003) < 1e-9 and abs(humanoid.dt - 0.03) < 1e-9


@pytest.fixture(scope="module")
def u4():
    """ant_u4_maze, training and evaluation env, compiled once for the tests below."""
    env, eval_env = E.make_env("ant_u4_maze"), E.make_env("ant_u4_maze", eval=True)
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    states = jax.jit(jax.vmap(env.reset))(keys)
    eval_states = jax.jit(jax.vmap(eval_env.reset))(keys)
    return env, eval_env, states, eval_states


def _cells_of(points, maze):
    """The cell whose centre each point is (fails if a point is not a cell centre)."""
    cells = np.rint(np.asarray(points) / maze.scale).astype(int)
    np.testing.assert_allclose(np.asarray(points), cells * maze.scale, atol=1e-5)
    return [tuple(c) for c in cells]


def test_starts_at_R_and_goals_only_from_G_cells(u4):
    env, _, states, _ = u4
    torso = np.asarray(states.pipeline_state.q[:, :2])
    assert np.abs(torso - [8.0, 4.0]).max() <= 0.1 + 1e-6  # R cell (2, 1) plus U(+-0.1) noise
    goals = np.asarray(states.info["goal"])
    assert states.obs.shape == (400, 31)
    np.testing.assert_allclose(np.asarray(states.obs[:, 29:]), goals)
    np.testing.assert_allclose(np.asarray(states.pipeline_state.q[:, -2:]), goals)  # target body on the goal
    cells = _cells_of(goals, env.maze)
    assert set(cells) == set(env.maze.cells("G"))  # only G cells, and every one of them drawn
    counts = np.array([cells.count(c) for c in env.maze.cells("G")])
    assert counts.min() > 15  # uniform: 40 expected each


def test_evaluation_env_draws_goals_from_the_eval_layout(u4):
    _, eval_env, _, eval_states = u4
    cells = _cells_of(eval_states.info["goal"], eval_env.maze)
    assert set(cells) == {(4, 1), (5, 1), (5, 2), (5, 3)}
    torso = np.asarray(eval_states.pipeline_state.q[:, :2])
    assert np.abs(torso - [8.0, 4.0]).max() <= 0.1 + 1e-6


def test_walls_stop_the_ant(u4):
    """Standing on top of a wall cell the ant stays up (feet on the wall), over a free cell it falls;
    thrown at 10 m/s towards a wall the torso stops short of the wall's face and bounces back, thrown
    the other way (free cells) it travels on."""
    env, _, states, _ = u4
    state = jax.tree.map(lambda x: x[0], states)
    init, step = jax.jit(env.pipeline_init), jax.jit(env.step)

    def run(xyz, vx):
        q = env.sys.init_q.at[:3].set(jnp.array(xyz)).at[-2:].set(state.info["goal"])
        qd = jnp.zeros(env.sys.qd_size()).at[0].set(vx)
        st, torso = state.replace(pipeline_state=init(q, qd)), []
        for _ in range(10):
            st = step(st, jnp.zeros(8))
            torso.append(np.asarray(st.pipeline_state.x.pos[0]))
        return np.array(torso)

    # R (2, 1) is at x 8; wall (3, 1) at x 12 spans x 10..14 and z 0..2; (1, 1) at x 4 is free
    on_wall, over_free = run((12.0, 4.0, 2.55), 0.0), run((8.0, 4.0, 2.55), 0.0)
    assert on_wall[:, 2].min() > 2.4, on_wall[:, 2]
    assert over_free[-1, 2] < 1.6, over_free[:, 2]
    towards_wall, towards_free = run((9.0, 4.0, 0.55), 10.0), run((9.0, 4.0, 0.55), -10.0)
    assert towards_wall[:, 0].max() < 10.0 - 0.25 + 0.05, towards_wall[:, 0]  # torso radius 0.25
    assert towards_wall[-1, 0] < towards_wall[:, 0].max() - 0.2  # bounced back
    assert towards_free[-1, 0] < 9.0 - 2.0, towards_free[:, 0]


def test_humanoid_u_maze_steps():
    env = E.make_env("humanoid_u_maze")
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(state.pipeline_state.x.pos[0]), [2.0, 2.0, 1.4], atol=1e-5)
    goal = np.asarray(state.info["goal"])
    assert goal[2] == pytest.approx(1.25) and _cells_of(goal[None, :2], env.maze)[0] in env.maze.cells("G")
    assert state.obs.shape == (271,)
    state = jax.jit(env.step)(state, jnp.zeros(env.sys.act_size()))
    assert np.all(np.isfinite(np.asarray(state.obs))) and float(state.done) == 0.0
    assert abs(float(state.pipeline_state.x.pos[0, 2]) - 1.4) < 0.1  # 0.015 s later, still up


# ----------------------------------------------------------------------------- critic heatmap
def _write_checkpoint(run_dir, depth, width, with_args=True, seed=0):
    env_spec = C.ENVS["ant_u4_maze"]
    nets = C.make_networks(depth, depth, width, 64, 8)
    opts = C.Optimizers(C.adam(1e-3), C.adam(1e-3), C.adam(1e-3))
    agent = C.agent_init(jax.random.PRNGKey(seed), nets, opts, env_spec.obs_dim, 2, 8)
    run_dir.mkdir(parents=True)
    path = run_dir / "checkpoint.msgpack"
    R.write_state_file(str(path), {"format": R.NETWORKS_FORMAT}, 1, R.tree_to_dict(
        {"actor": agent.actor_params, "critic": agent.critic_params, "log_alpha": agent.log_alpha}))
    if with_args:
        args = C.Args(env_id="ant_u4_maze", depth=depth, width=width)
        (run_dir / "args.json").write_text(json.dumps(vars(args)))
    return str(path)


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _cli(*flags, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "crl_depth.py"), "--env-id", "ant_u4_maze", *flags],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_heatmap_values_cover_free_cells_only():
    env = E.make_env("ant_u4_maze", eval=True)
    nets = C.make_networks(4, 4, 16, 8, 8)
    key = jax.random.PRNGKey(0)
    actor = nets.actor.init(key, jnp.zeros((1, 31)))
    critic = {"phi": nets.phi.init(key, jnp.zeros((1, 37))), "psi": nets.psi.init(key, jnp.zeros((1, 2)))}
    values = P.critic_heatmap(env, C.critic_score(nets, actor, critic), (4, 1), points_per_cell=3)
    assert values.shape == (7 * 3, 5 * 3)
    wall = np.kron(np.array([[c == "#" for c in row] for row in env.maze.rows]), np.ones((3, 3))) > 0
    assert np.all(np.isnan(values[wall])) and np.all(np.isfinite(values[~wall])) and np.all(values[~wall] <= 0)
    assert np.ptp(values[~wall]) > 0  # the score depends on where the ant is


def test_plot_critic_from_two_checkpoints_side_by_side(tmp_path):
    shallow = _write_checkpoint(tmp_path / "shallow", depth=4, width=16)
    deep = _write_checkpoint(tmp_path / "deep", depth=8, width=16, seed=1)
    out = tmp_path / "cmp.png"
    proc = _cli("--plot-critic", "--load", f"{shallow},{deep}", "--plot-out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    w, h = P.HEATMAP_PANEL_PX
    assert _png_size(out) == (2 * w, h)
    assert f"critic heatmap: {out}" in proc.stdout
    assert not (tmp_path / "runs").exists()  # no training, no run directory
    import matplotlib.image

    pixels = matplotlib.image.imread(str(out))
    assert pixels.shape[:2] == (h, 2 * w) and len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50


def test_plot_critic_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    path = _write_checkpoint(tmp_path / "run", depth=4, width=16, with_args=False)
    proc = _cli("--plot-critic", "--load", path, "--depth", "8", "--width", "16", cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not fit a network of actor depth 8" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override,message", [
    (dict(load=("x.msgpack",)), "--load is only read by --plot-critic"),
    (dict(plot_critic=True, env_id="ant"), "--plot-critic needs a maze env"),
    (dict(plot_critic=True, plot_goal=(0, 0)), "--plot-goal 0 0 is not a free cell"),
])
def test_plot_flags_validated(override, message):
    args = C.Args(**{"env_id": "ant_u4_maze", **override})
    error = C.validate_args(args)
    assert error is not None and message in error and "\n" not in error


def test_load_checkpoint_refuses_garbage_and_other_envs(tmp_path):
    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(b"not a checkpoint\x00\x01")
    build = C.critic_of(C.Args(env_id="ant_u4_maze"), 8)
    network = {name: getattr(C.Args(env_id="ant_u4_maze"), name) for name in C.NETWORK_FIELDS}
    with pytest.raises(R.CheckpointError, match="wrong magic bytes"):
        P.load_checkpoint(str(path), network, {"env_id": "ant_u4_maze"}, build)
    with pytest.raises(R.CheckpointError, match="no such file"):
        P.load_checkpoint(str(tmp_path / "missing.msgpack"), network, {"env_id": "ant_u4_maze"}, build)
    ok = _write_checkpoint(tmp_path / "run", depth=4, width=16)
    with pytest.raises(R.CheckpointError, match="trained on 'ant_u4_maze', not on --env-id 'ant_big_maze'"):
        P.load_checkpoint(ok, network, {"env_id": "ant_big_maze"}, C.critic_of(C.Args(env_id="ant_big_maze"), 8))
    title, score = P.load_checkpoint(ok, network, {"env_id": "ant_u4_maze"}, build)  # shape from args.json
    values = np.asarray(score(jnp.zeros((3, E.ENVS["ant_u4_maze"].obs_dim)), jnp.ones((3, 2))))
    assert title.startswith("critic depth 4, width 16") and values.shape == (3,) and np.all(values <= 0)
