"""Arm manipulation envs (Franka Panda on brax's mjx backend): scenes, resets, the 5-dim action
mapping, the observation layout and the success logic, as in the arm tasks of the JaxGCRL benchmark
(arXiv 2408.11052) that the paper (arXiv 2503.14858) trains on.

mjx compiles slowly on CPU (about 30 s a function on an idle 2-core machine), so only
arm_push_easy's reset and step are compiled (once, module fixtures); arm_push_hard and
arm_binpick_hard are built, checked against the reference scenes (tests/data/panda/), and reset. A training epoch of an
arm task is GPU work: the training loop is tested on the other envs (tests/test_e2e.py)."""

import os

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import crl_depth as C
import crl_envs as E

pytestmark = pytest.mark.slow  # the mjx arms compile for minutes on a CPU: python -m pytest tests/ -m slow

PANDA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "panda")  # reference scenes, README there
# env id: scene, cube region centre, goal region centre, sampling half-range s
ARMS = {
    "arm_push_easy": ("push_easy", (-0.1, 0.6), (0.1, 0.6), 0.1),
    "arm_push_hard": ("push_hard", (-0.25, 0.65), (0.25, 0.65), 0.25),
    "arm_binpick_hard": ("binpick_hard", (-0.3, 0.6), (0.3, 0.6), 0.15),
}
ARM_Q = np.array([1.571, 0.742, 0, -1.571, 0, 3.054, 1.449, 0.04, 0.04])  # 7 joints, 2 fingers
CUBE, MARKER, JOINTS, FINGERS = slice(0, 3), slice(7, 10), slice(14, 21), slice(21, 23)  # qpos


@pytest.fixture(scope="module")
def envs():
    return {env_id: E.make_env(env_id) for env_id in ARMS}


@pytest.fixture(scope="module")
def push_easy(envs):
    """arm_push_easy with its reset and step compiled once, and a reset state."""
    env = envs["arm_push_easy"]
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    return env, reset, step, reset(jax.random.PRNGKey(0))


def _q_of_x(ps):
    """The qpos that brax's link transforms x, xd belong to. They come from the forward pass of the
    last 0.002 s substep, before its integration moved q; the arm's hinge and slide joints moved by
    dt * qvel (semi-implicit Euler), so subtracting that gives it back."""
    q = np.asarray(ps.q, np.float64).copy()
    q[14:23] -= 0.002 * np.asarray(ps.qd, np.float64)[12:21]  # arm dofs follow the two free joints' 12
    return q


def _cpu_data(env, q, qd):
    """MuJoCo (CPU) kinematics and velocities at q, qd: an independent reference."""
    m = env.sys.mj_model  # the model brax compiled (jointless bodies fused, as in the mjx model)
    d = mujoco.MjData(m)
    d.qpos[:], d.qvel[:] = q, qd
    mujoco.mj_forward(m, d)
    return m, d


def _place_cube(state, xyz):
    ps = state.pipeline_state
    q = ps.qpos.at[CUBE].set(jnp.asarray(xyz))
    return state.replace(pipeline_state=ps.replace(qpos=q, q=q))


def test_registry_entries_and_physics_settings(envs):
    for env_id, env in envs.items():
        spec = C.ENVS[env_id]
        assert (spec.obs_dim, spec.goal_start, spec.goal_end) == (17, 0, 3)
        assert env.backend == "mjx" and env._n_frames == 25
        assert float(env.sys.opt.timestep) == 0.002 and env.dt == pytest.approx(0.05)
        assert (int(env.sys.opt.iterations), int(env.sys.opt.ls_iterations)) == (6, 12)
        assert (env.sys.q_size(), env.sys.act_size(), env.action_size) == (23, 9, 5)
        assert env.success_radius == 0.1
        venv = E.VecGoalEnv(env, num_envs=2, episode_length=4)
        assert (venv.action_size, venv.obs_size) == (5, 20)
    assert E.VecGoalEnv(E.make_env("ant"), 2, 4).action_size == 8  # other envs: one action per actuator


@pytest.mark.parametrize("env_id", list(ARMS))
def test_generated_scene_matches_the_reference_scene(env_id):
    """The model text lives in crl_envs.py; it must compile to the same model as the reference scene
    in tests/data/panda/ (the benchmark's scene without its visual meshes)."""
    path = os.path.join(PANDA_DIR, f"panda_{ARMS[env_id][0]}.xml")
    ours = mujoco.MjModel.from_xml_string(E.panda_xml(ARMS[env_id][0]))
    ref = mujoco.MjModel.from_xml_path(path)
    for size in ("nq", "nv", "nu", "nbody", "njnt", "ngeom", "npair", "neq"):
        assert getattr(ours, size) == getattr(ref, size), size
    for field in ("body_pos", "body_quat", "body_mass", "body_inertia", "body_ipos", "body_iquat",
                  "body_gravcomp", "jnt_range", "dof_damping", "dof_armature", "geom_type", "geom_size",
                  "geom_pos", "geom_quat", "geom_friction", "geom_contype", "geom_conaffinity", "pair_geom1",
                  "pair_geom2", "pair_friction", "eq_data", "eq_solref", "eq_solimp", "actuator_gainprm",
                  "actuator_biasprm", "actuator_ctrlrange", "actuator_forcerange", "actuator_trnid"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(ref, field), err_msg=field)
    assert (ours.opt.integrator, ours.opt.impratio) == (ref.opt.integrator, ref.opt.impratio)
    names = lambda m, obj, n: [mujoco.mj_id2name(m, obj, i) for i in range(n)]
    assert names(ours, mujoco.mjtObj.mjOBJ_GEOM, ours.ngeom) == names(ref, mujoco.mjtObj.mjOBJ_GEOM, ref.ngeom)


@pytest.mark.parametrize("env_id", list(ARMS))
def test_start_and_goal_sampling(envs, env_id):
    env = envs[env_id]
    _, cube_centre, goal_centre, s = ARMS[env_id]
    q, qd, goal = jax.jit(jax.vmap(env._start_and_goal))(jax.random.split(jax.random.PRNGKey(1), 512))
    q, qd, goal = np.asarray(q), np.asarray(qd), np.asarray(goal)
    for xy, centre in ((q[:, 0:2], cube_centre), (goal[:, 0:2], goal_centre)):
        offset = (xy - np.array(centre)) / s
        assert offset.min() >= -1 and offset.max() <= 1
        assert offset.min() < -0.95 and offset.max() > 0.95  # uniform over the whole square
        assert np.histogram(offset[:, 0], bins=4, range=(-1, 1))[0].min() > 80
    np.testing.assert_allclose(q[:, 2], 0.07)  # cube z
    np.testing.assert_allclose(goal[:, 2], 0.03)  # goal z
    np.testing.assert_allclose(q[:, 3:7], np.tile([1.0, 0, 0, 0], (512, 1)))  # cube upright
    np.testing.assert_allclose(q[:, MARKER], goal)  # the goal marker shows the goal
    np.testing.assert_allclose(q[:, 14:23], np.tile(ARM_Q, (512, 1)), atol=1e-7)  # fixed arm start
    assert not qd.any()


def _check_reset_state(env, state, env_id):
    """Shared checks of a reset state: placement and the 17 + 3 observation layout."""
    _, cube_centre, goal_centre, s = ARMS[env_id]
    ps, obs, goal = state.pipeline_state, np.asarray(state.obs), np.asarray(state.info["goal"])
    q = np.asarray(ps.q)
    assert obs.shape == (20,) and np.isfinite(obs).all()
    np.testing.assert_allclose(q[14:23], ARM_Q, atol=1e-6)
    assert np.abs(q[0:2] - cube_centre).max() <= s and q[2] == pytest.approx(0.07)
    assert np.abs(goal[0:2] - goal_centre).max() <= s and goal[2] == pytest.approx(0.03)
    np.testing.assert_allclose(q[MARKER], goal)
    m, d = _cpu_data(env, q, np.asarray(ps.qd))
    np.testing.assert_allclose(obs[0:3], d.xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "cube")], atol=1e-6)
    np.testing.assert_allclose(obs[3:10], ARM_Q[:7], atol=1e-6)  # the 7 arm joints
    eef = d.xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "link7")]
    np.testing.assert_allclose(obs[10:13], eef, atol=1e-5)  # end-effector (link 7 frame) position
    np.testing.assert_allclose(obs[13:16], 0.0, atol=1e-6)  # ... at rest
    assert obs[16] == pytest.approx(0.08, abs=1e-6)  # finger gap: both fingers 0.04 open
    np.testing.assert_allclose(obs[17:20], goal)
    dist = np.linalg.norm(obs[0:3] - goal)
    assert float(state.metrics["dist"]) == pytest.approx(dist, rel=1e-5)
    assert float(state.metrics["success"]) == float(dist < 0.1)
    return eef


def test_reset_places_arm_cube_and_goal(push_easy):
    env, _, _, state = push_easy
    eef = _check_reset_state(env, state, "arm_push_easy")
    assert 0.3 < eef[2] < 0.45 and abs(eef[0]) < 0.05  # the hand starts above the regions


@pytest.mark.parametrize("env_id", ["arm_push_hard", "arm_binpick_hard"])
def test_other_scenes_reset(envs, push_easy, env_id):
    env = envs[env_id]
    state = jax.jit(env.reset)(jax.random.PRNGKey(4))
    eef = _check_reset_state(env, state, env_id)
    np.testing.assert_allclose(eef, np.asarray(push_easy[3].obs[10:13]), atol=1e-5)  # same arm, same start


def test_action_mapping_to_actuator_controls(envs):
    env = envs["arm_push_easy"]
    lo = [0.3491, 0.0, 0.0, -3.0718, 0.0, 2.3562, 1.4487, 255, 255]  # action -1: gripper open
    hi = [2.7925, 1.48353, 0.0, -0.0698, 0.0, 3.7525, 1.4487, 0, 0]  # action +1: gripper closed
    np.testing.assert_allclose(env._ctrl(-jnp.ones(5)), lo, atol=1e-6)
    np.testing.assert_allclose(env._ctrl(jnp.ones(5)), hi, atol=1e-6)
    mid = np.asarray(env._ctrl(jnp.zeros(5)))  # gripper 0 is not > 0: open
    np.testing.assert_allclose(mid[[0, 1, 3, 5]], (np.array(lo) + np.array(hi))[[0, 1, 3, 5]] / 2, atol=1e-6)
    np.testing.assert_allclose(mid[[2, 4, 6, 7, 8]], [0, 0, 1.4487, 255, 255])
    assert float(env._ctrl(jnp.array([0, 0, 0, 0, 1e-3]))[7]) == 0.0


def test_step_applies_the_action_mapping(push_easy):
    env, _, step, state = push_easy
    q0 = np.asarray(state.pipeline_state.q)
    action = jnp.array([0.3, -0.2, 0.5, -0.7, 1.0])
    out = step(state, action)
    np.testing.assert_allclose(np.asarray(out.pipeline_state.ctrl), np.asarray(env._ctrl(action)), atol=1e-6)
    assert float(out.done) == 0.0 and np.isfinite(np.asarray(out.obs)).all()
    # Each action dimension drives its own joint: a higher target gives a higher angle after a step.
    # Joint 6 is checked from q6 = 1.5: as in the benchmark's scenes, actuators 5-7 have gain 1000 and
    # position bias -2000, so joint 6 settles at ctrl / 2 (1.18..1.88), and at the start pose (3.054)
    # every target asks for more than its 12 N m limit: action[3] acts only once joint 6 is near there.
    ps = state.pipeline_state
    q6 = ps.qpos.at[19].set(1.5)
    wrist_down = state.replace(pipeline_state=ps.replace(qpos=q6, q=q6))
    up_down = lambda s, k: [np.asarray(step(s, jnp.zeros(5).at[k].set(a)).pipeline_state.q[JOINTS]) for a in (1.0, -1.0)]
    for k, joint, start in ((0, 0, state), (1, 1, state), (2, 3, state), (3, 5, wrist_down)):
        up, down = up_down(start, k)
        diff = np.abs(up - down)
        assert up[joint] - down[joint] > 0.03 and diff.argmax() == joint, (k, diff)
    up, down = up_down(state, 3)
    np.testing.assert_allclose(up, down, atol=1e-6)  # (the saturation described above)
    # gripper: closing narrows the 0.08 gap, opening widens it; both fingers move together
    for grip, sign in ((1.0, -1), (-1.0, 1)):
        after = step(state, jnp.zeros(5).at[4].set(grip))
        gap = float(after.obs[16])
        assert sign * (gap - 0.08) > 0.02, gap
        fingers = _q_of_x(after.pipeline_state)[FINGERS]
        assert gap == pytest.approx(fingers.sum(), abs=1e-5) and abs(fingers[0] - fingers[1]) < 2e-3
    np.testing.assert_allclose(q0, np.asarray(state.pipeline_state.q))  # (the reset state is untouched)


def test_observation_layout_after_a_step(push_easy):
    env, _, step, state = push_easy
    out = step(state, jnp.array([1.0, -1.0, 1.0, -1.0, 1.0]))
    ps, obs = out.pipeline_state, np.asarray(out.obs)
    q = np.asarray(ps.q)
    np.testing.assert_allclose(obs[0:3], q[CUBE], atol=1e-6)
    assert obs[2] < 0.07  # the cube starts 4 cm above the table and falls
    np.testing.assert_allclose(obs[3:10], q[JOINTS], atol=1e-6)
    # end effector and fingers: brax's x, xd, one 0.002 s substep behind q (see _q_of_x)
    m, d = _cpu_data(env, _q_of_x(ps), np.asarray(ps.qd))
    link7 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "link7")
    np.testing.assert_allclose(obs[10:13], d.xpos[link7], atol=1e-5)
    vel = np.zeros(6)
    mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_BODY, link7, vel, 0)  # [angular, linear], world frame
    # qvel before that substep is not kept; the arm accelerates hard, so allow the change of one substep
    assert np.linalg.norm(vel[3:]) > 0.5 and np.linalg.norm(obs[13:16] - vel[3:]) < 0.2 * np.linalg.norm(vel[3:])
    assert np.linalg.norm(obs[13:16] - vel[:3]) > 1.0  # linear, not angular, velocity
    np.testing.assert_allclose(obs[16], _q_of_x(ps)[FINGERS].sum(), atol=1e-5)
    np.testing.assert_allclose(obs[17:20], np.asarray(state.info["goal"]))


def test_success_logic_and_no_termination(push_easy):
    _, _, step, state = push_easy
    goal = np.asarray(state.info["goal"])  # z 0.03: a cube resting on the table
    hold = jnp.zeros(5)  # the arm's targets are its start pose: it stays clear of the cube
    # offset of the cube from the goal: (success < 0.1, success_easy < 0.3, success_hard < 0.03)
    for dx, expected in ((0.0, (1, 1, 1)), (0.06, (1, 1, 0)), (0.2, (0, 1, 0)), (0.4, (0, 0, 0))):
        out = step(_place_cube(state, goal + np.array([dx, 0.0, 0.0])), hold)
        dist = np.linalg.norm(np.asarray(out.obs[0:3]) - goal)
        assert dist == pytest.approx(dx, abs=0.01) and float(out.metrics["dist"]) == pytest.approx(dist, rel=1e-5)
        got = tuple(float(out.metrics[k]) for k in ("success", "success_easy", "success_hard"))
        assert got == expected, (dx, dist, got)
        assert float(out.reward) == expected[0] and float(out.done) == 0.0
