"""Point mazes (crl_envs.PointMaze): the ant mazes' layouts in pure jax.numpy. Walls against a float64
reference of the rule and against the segments the point travels, goals and starts, the evaluation
layout, the observation layout, auto reset, the critic heatmap and the rollout picture."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_envs as E

POINT_MAZES = {"point_u_maze": E.ANT_U4_MAZE, "point_big_maze": E.ANT_BIG_MAZE,
               "point_hardest_maze": E.ANT_HARDEST_MAZE}


def reference_slide(maze, xy, d, gap):
    """The wall rule in plain Python floats (float64): take the straight move's cell-boundary crossings
    in the order the segment meets them (x first on a tie); a crossing into a wall cell stops that axis
    `gap` short of the boundary, and the other axis goes on."""
    s = maze.scale
    cell = [math.floor(p / s + 0.5) for p in xy]
    step = [1 if di >= 0 else -1 for di in d]
    boundary = [(c + 0.5 * st) * s for c, st in zip(cell, step)]
    times = [(boundary[k] - xy[k]) / d[k] if d[k] != 0 and abs(d[k]) >= abs(boundary[k] - xy[k])
             else math.inf for k in (0, 1)]
    order = (0, 1) if times[0] <= times[1] else (1, 0)
    at, out = list(cell), [xy[0] + d[0], xy[1] + d[1]]
    for k in order:
        if times[k] == math.inf:
            continue
        nxt = list(at)
        nxt[k] += step[k]
        if maze.rows[nxt[0]][nxt[1]] == "#":
            out[k] = boundary[k] - step[k] * gap
        else:
            at = nxt
    return out


def in_wall(maze, xy):
    i, j = (math.floor(p / maze.scale + 0.5) for p in xy)
    return maze.rows[i][j] == "#"


@pytest.fixture(scope="module")
def u_maze():
    return E.make_env("point_u_maze")


def slide(env, xy, d):
    return jax.jit(env.slide)(jnp.asarray(xy, jnp.float32), jnp.asarray(d, jnp.float32))


def test_registry_layouts_and_observation_layout():
    for env_id, picture in POINT_MAZES.items():
        train, *evaluation = E.parse_mazes(picture, 4.0)
        env, eval_env = E.make_env(env_id), E.make_env(env_id, eval=True)
        assert env.maze == train and eval_env.maze == (evaluation[0] if evaluation else train)
        spec = E.ENVS[env_id]
        assert (spec.obs_dim, spec.goal_start, spec.goal_end) == (2, 0, 2)
        state = jax.jit(env.reset)(jax.random.PRNGKey(3))
        # obs = state ++ goal: the position and the goal's, each in cells from the maze's centre
        rows, cols = len(env.maze.rows), len(env.maze.rows[0])
        centre = 4.0 * np.array([(rows - 1) / 2, (cols - 1) / 2])
        want = np.concatenate([np.asarray(state.pipeline_state) - centre, np.asarray(state.info["goal"]) - centre]) / 4.0
        np.testing.assert_allclose(np.asarray(state.obs), want, rtol=1e-6)
        assert state.obs.shape == (4,) and env.action_size == 2
        # the metric distance is in metres: 4 x the observed one
        assert float(state.metrics["dist"]) == pytest.approx(4 * float(jnp.linalg.norm(state.obs[:2] - state.obs[2:])),
                                                             rel=1e-5)


def test_a_move_into_a_wall_stops_at_the_wall(u_maze):
    gap = u_maze._gap
    # start cell (2, 1) spans x in [6, 10], y in [2, 6]; (3, 1) below it and (2, 2) right of it are walls
    xy = jnp.array([8.0, 4.0])
    for _ in range(5):
        xy = slide(u_maze, xy, [1.0, 0.0])
    assert float(xy[0]) == pytest.approx(10.0 - gap, abs=1e-5) and float(xy[1]) == 4.0
    xy = slide(u_maze, xy, [-1.0, 0.0])  # and it can leave the wall again
    assert float(xy[0]) == pytest.approx(9.0 - gap, abs=1e-5)
    # sliding: pushed into the wall at +x while moving along y, the y part goes on
    np.testing.assert_allclose(np.asarray(slide(u_maze, [9.5, 4.0], [1.0, -0.5])), [10.0 - gap, 3.5], atol=1e-5)


def test_a_diagonal_move_past_a_corner_does_not_cut_it(u_maze):
    # from (6.9, 5.5) in the start cell towards (5.9, 6.5) in the free cell (1, 2): the straight line
    # meets y = 6 (into the wall cell (2, 2)) at t = 0.5, before x = 6 at t = 0.9, so it would pass
    # through the wall's corner; the y part stops at the wall and the x part goes on into (1, 1)
    xy = slide(u_maze, [6.9, 5.5], [-1.0, 1.0])
    np.testing.assert_allclose(np.asarray(xy), [5.9, 6.0 - u_maze._gap], atol=1e-5)
    # the endpoint alone would have been a free cell: that is the corner a naive check cuts
    assert not in_wall(u_maze.maze, (5.9, 6.5))
    # the same corner approached the other way round (x crossing first) passes: (1, 1) -> (1, 2) is free
    xy = slide(u_maze, [6.1, 5.1], [-1.0, 1.0])
    np.testing.assert_allclose(np.asarray(xy), [5.1, 6.1], atol=1e-5)


@pytest.mark.parametrize("env_id", list(POINT_MAZES))
def test_random_walks_never_enter_or_cross_a_wall(env_id):
    """10,000 env steps of 16 random walks (actions uniform in [-1.2, 1.2]^2, so clipping is exercised
    too), from cells all over the maze: every position outside the walls, every step equal to the
    float64 reference rule, and every straight segment between consecutive positions clear of walls."""
    env = E.make_env(env_id)
    maze, n, steps = env.maze, 16, 10_000
    free = maze.xy(maze.cells("RG."))
    start = jnp.asarray(free[np.random.default_rng(0).integers(0, len(free), n)])
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), n)).replace(pipeline_state=start)
    actions = jax.random.uniform(jax.random.PRNGKey(1), (steps, n, 2), minval=-1.2, maxval=1.2)

    def walk(state, a):
        nxt = jax.vmap(env.step)(state, a)
        return nxt, (nxt.pipeline_state, nxt.obs)

    _, (points, obs) = jax.jit(lambda s, acts: jax.lax.scan(walk, s, acts))(state, actions)
    np.testing.assert_allclose(np.asarray(obs[..., :2]), np.asarray(jax.vmap(jax.vmap(env.goal_at))(points)))
    path = np.concatenate([np.asarray(start)[None], np.asarray(points)]).astype(np.float64)  # [steps + 1, n, 2]
    cells = np.floor(path / maze.scale + 0.5).astype(int)
    wall = np.array([[c == "#" for c in row] for row in maze.rows])
    assert not wall[cells[..., 0], cells[..., 1]].any()
    # segments: 9 points strictly between each pair of consecutive positions
    t = np.linspace(0, 1, 11)[1:-1, None, None, None]
    seg = path[:-1][None] + t * (path[1:] - path[:-1])[None]
    seg_cells = np.floor(seg / maze.scale + 0.5).astype(int)
    assert not wall[seg_cells[..., 0], seg_cells[..., 1]].any()
    # the float64 reference on a sample of 400 steps (a Python loop over all 160,000 would be slow)
    rng = np.random.default_rng(2)
    acts, stopped = np.asarray(actions, dtype=np.float64), 0
    for k, e in zip(rng.integers(0, steps, 4000), rng.integers(0, n, 4000)):
        d = env.max_move * np.clip(acts[k, e], -1, 1)
        want = reference_slide(maze, path[k, e].tolist(), d.tolist(), env._gap)
        np.testing.assert_allclose(path[k + 1, e], want, atol=2e-4)
        stopped += any(abs(w - (p + di)) > 1e-3 for w, p, di in zip(want, path[k, e], d))  # a wall stopped it
    assert stopped > 20  # the sample includes moves that hit walls
    assert np.abs(np.diff(path, axis=0)).max() <= env.max_move + 1e-5  # a bounded move per step


def test_starts_goals_and_the_evaluation_layout():
    env, eval_env = E.make_env("point_u_maze"), E.make_env("point_u_maze", eval=True)
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    train, evaluation = jax.vmap(env.reset)(keys), jax.vmap(eval_env.reset)(keys)
    s = env.maze.scale
    for maze, states in ((env.maze, train), (eval_env.maze, evaluation)):
        goals = np.asarray(states.info["goal"])
        cells = [tuple(c) for c in np.rint(goals / s).astype(int)]
        np.testing.assert_allclose(goals, np.rint(goals / s) * s, atol=1e-5)  # cell centres
        assert set(cells) == set(maze.cells("G"))  # only G cells of this layout, every one drawn
        start = np.asarray(states.pipeline_state) - maze.xy([maze.start])[0]
        assert np.abs(start).max() <= 0.1 + 1e-6 and np.abs(start).max() > 0.09  # R cell plus U(+-0.1)
    # the u maze evaluates on its far cells only
    assert set(eval_env.maze.cells("G")) == {(4, 1), (5, 1), (5, 2), (5, 3)}


def test_vec_env_auto_resets_with_fresh_goals(u_maze):
    env = E.VecGoalEnv(u_maze, num_envs=8, episode_length=5)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    goals = [np.asarray(state.info["goal"])]
    for _ in range(10):
        state = step(state, jnp.ones((8, 2)))
        if int(state.info["steps"][0]) == 0:
            goals.append(np.asarray(state.info["goal"]))
    np.testing.assert_array_equal(np.asarray(state.info["episode_id"]), 2)
    assert len(goals) == 3 and not all(np.array_equal(goals[0], g) for g in goals[1:])
    # a fresh episode starts at the R cell again
    np.testing.assert_allclose(np.asarray(state.pipeline_state), np.tile(u_maze.maze.xy([u_maze.maze.start]), (8, 1)),
                               atol=0.1 + 1e-6)


def test_critic_heatmap_scores_the_point_at_every_free_spot(u_maze):
    from crl_plots import critic_heatmap

    maze, k = u_maze.maze, 5
    seen = []

    def score(states, goals):  # a plain function of the states: minus the distance to the goal
        seen.append(states.shape)
        return -jnp.linalg.norm(states - goals, axis=-1)

    values = critic_heatmap(u_maze, score, (1, 3), points_per_cell=k)
    assert values.shape == (len(maze.rows) * k, len(maze.rows[0]) * k) and seen[0][1] == 2
    # the centre point of the start cell scores minus its straight-line distance to the goal cell (in cells)
    i, j = maze.start
    assert values[i * k + k // 2, j * k + k // 2] == pytest.approx(-float(np.linalg.norm(
        maze.xy([maze.start])[0] - maze.xy([(1, 3)])[0])) / maze.scale, abs=1e-5)
    assert np.isnan(values[0, 0]) and not np.isnan(values[i * k, j * k])


def test_render_rollout_draws_the_path(tmp_path, u_maze):
    path = tmp_path / "rollout.html"
    E.render_rollout(str(path), u_maze, lambda obs: jnp.array([-1.0, 1.0]), jax.random.PRNGKey(0), 20)
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html
    assert html.count("<rect") == 1 + len(u_maze.maze.cells("#"))  # background and one per wall
    points = html.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 21  # the start and 20 steps
