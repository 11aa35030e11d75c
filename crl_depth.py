"""Online contrastive RL (CRL) with residual networks that scale from 4 to 1024 layers.

Reproduces "1000 Layer Networks for Self-Supervised RL: Scaling Depth Can Enable New Goal-Reaching Capabilities"
(Wang et al., NeurIPS 2025; arXiv 2503.14858), sections 4-5: goal-conditioned RL with no rewards or demonstrations.
A critic of two encoders, phi(s, a) and psi(g), learns by InfoNCE on relabelled goals; a SAC-style actor maximises it.

Read it top to bottom: Args, network, replay buffer and relabelling, losses and the SGD update, training loop,
evaluation, main (the whole run: state, fresh or --resume; jit; prefill; the epoch loop: train, evaluate, log,
checkpoint). To try an idea, copy this file beside the modules and edit the copy; it relies only on their stated
interfaces: crl_envs.py (ENVS, make_vec_envs), crl_runs.py (RunArgs, Run: run directory, metrics of any names,
checkpoints of any pytree, --resume; seeds, devices), crl_plots.py, crl_datasets.py, crl_estimate.py (any state),
crl_kernels.py (--fused-block).
SHARED BLOCK banners ("keep identical in ...") are this repository's bookkeeping: a fork edits its copy freely."""

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Literal, NamedTuple, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from crl_datasets import save_crl_buffer
from crl_estimate import compare, estimate
from crl_envs import ENVS, State, VecGoalEnv, make_env, make_vec_envs, render_rollout
from crl_kernels import FUSED_WIDTHS, fused_blocks, fused_residual_block
from crl_plots import CriticPlotArgs
from crl_runs import (Run, compile_all, describe, device_mesh, fail, flag, metrics_line, not_positive, parse_args,
                      seed_all, seed_map, split_seed_keys, state_shardings)


# ======================================== Args ====================================================
@dataclasses.dataclass
class Args(CriticPlotArgs):
    """Flags of this script; the run flags (--seed, --track and wandb, --runs-dir, --checkpoint-every, --resume,
    --num-seeds, --num-devices) are crl_runs.RunArgs', --plot-critic's crl_plots.CriticPlotArgs'; --help lists all."""

    # --- experiment and outputs ---
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this experiment (part of the run name)"""
    render: bool = False
    """after training, write an HTML rollout of the deterministic policy (brax html viewer)"""
    save_buffer: bool = False
    """after training, write the replay buffer to runs/{run_name}/buffer.npz, the dataset of
    crl_depth_offline.py (its keys: docs/offline.md)"""
# SHARED BLOCK: online flags (keep identical in crl_depth.py and crl_collector_learner.py)
    checkpoint_buffer: bool = True
    """include the replay buffer in state.msgpack (--no-checkpoint-buffer for very large buffers:
    a resumed run then refills it with the current actor)"""

    # --- environment ---
    env_id: str = "humanoid"
    """environment id, one of crl_envs.ENVS (reacher, ant, humanoid, the mazes, the arms)"""
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
    """steps per env collected before training starts, with the untrained stochastic actor (as the paper)"""

    def online_flags_error(self) -> Optional[str]:
        """One line on what is wrong with the environment, schedule and replay flags above, or None."""
        if self.env_id not in ENVS:
            return f"unknown --env-id {self.env_id!r}; valid ids: {', '.join(ENVS)}"
        if error := not_positive(self, ("num_envs", "episode_length", "num_eval_envs", "total_env_steps",
                                        "num_epochs", "unroll_length", "num_sgd_steps", "batch_size",
                                        "max_replay_size", "min_replay_size")):
            return error
        if self.episode_length < 2:
            return f"--episode-length must be at least 2 (got {self.episode_length})"
        if self.min_replay_size > self.max_replay_size:
            return (f"--min-replay-size ({self.min_replay_size}) must not exceed --max-replay-size "
                    f"({self.max_replay_size})")
        if self.min_replay_size < self.episode_length:
            return (f"--min-replay-size ({self.min_replay_size}) must be at least --episode-length "
                    f"({self.episode_length}): sampling takes windows of one episode length per env")
        if self.unroll_length > self.max_replay_size:
            return f"--unroll-length ({self.unroll_length}) must not exceed --max-replay-size ({self.max_replay_size})"
        per_step = self.num_envs * (self.episode_length - 1)  # relabelled transitions per training step
        if self.num_sgd_steps * self.batch_size > per_step:
            return (f"--num-sgd-steps x --batch-size ({self.num_sgd_steps} x {self.batch_size}) is larger than "
                    f"what a training step yields: num_envs x (episode_length - 1) = {per_step} transitions")
        prefill, per_train_step, steps_per_epoch = schedule(self)
        if steps_per_epoch < 1:
            return (f"--total-env-steps {self.total_env_steps} is too small: {self.num_epochs} epochs of one "
                    f"training step each after the prefill need {prefill + self.num_epochs * per_train_step}")
        return None

    def settle_resume(self, saved: Optional["Args"]) -> tuple["Args", Optional[str]]:
        """--resume (self: the command line over the run's args.json, saved; None for a new run): a run keeps
        the env steps of its epochs. --num-epochs N alone continues (or ends) it at N such epochs, the total
        following; a --total-env-steps that changes the epoch's length is refused with the values that work."""
        if saved is None or not self.num_epochs > 0:  # a new run, or a bad --num-epochs that validation names
            return self, None
        prefill, per_train_step, steps = schedule(saved)
        if self.total_env_steps == saved.total_env_steps and self.num_epochs != saved.num_epochs:
            self = dataclasses.replace(self, total_env_steps=prefill + self.num_epochs * steps * per_train_step)
        if schedule(self)[::2] != (prefill, steps):
            low, high = (prefill + self.num_epochs * n * per_train_step for n in (steps, steps + 1))
            return self, (f"--num-epochs {self.num_epochs} --total-env-steps {self.total_env_steps} change the run's "
                          f"epoch ({steps} training steps of {per_train_step:,} env steps); give --num-epochs "
                          f"{self.num_epochs} alone (the total follows: {low:,}) or a --total-env-steps from "
                          f"{low:,} to {high - 1:,}")
        return self, None
# END SHARED BLOCK: online flags
# SHARED BLOCK: algorithm flags (keep identical in all three scripts)
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

    def algorithm_flags_error(self) -> Optional[str]:
        """One line on what is wrong with the flags above, or None."""
        if not 0.0 < self.gamma < 1.0:
            return f"--gamma must be in (0, 1) (got {self.gamma})"
        if self.logsumexp_penalty < 0:
            return f"--logsumexp-penalty must be >= 0 (got {self.logsumexp_penalty})"
        return not_positive(self, ("actor_lr", "critic_lr", "alpha_lr"))
# END SHARED BLOCK: algorithm flags

    # --- network ---
    depth: int = 4
    """Dense layers inside the residual blocks of actor and critic (a positive multiple of 4)"""
    actor_depth: Optional[int] = None
    """actor depth; overrides --depth for the actor"""
    critic_depth: Optional[int] = None
    """critic depth (phi and psi); overrides --depth for the critic"""
# SHARED BLOCK: network flags (keep identical in all three scripts)
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
    fused_block: bool = False
    """run the residual blocks as fused GPU kernels (crl_kernels.py): the same parameters and math, a trunk's
    blocks in one kernel each way (with --remat one block at a time); on a CPU the kernels run in Pallas'
    interpreter (slow: for checking); with --num-devices above 1 each device runs every row through them (no
    gain: use the plain blocks there, docs/usage.md)"""

    def network_flags_error(self, depths: tuple[str, ...]) -> Optional[str]:
        """One line on what is wrong with the flags above or the depth flags named (multiples of 4), or None."""
        for name in depths:
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % 4 != 0):
                return f"{flag(name)} must be a positive multiple of 4 (got {value})"
        if self.fused_block and not (self.layer_norm and self.residual):
            return "--fused-block runs the block with LayerNorm and its skip: drop --no-layer-norm / --no-residual"
        if self.fused_block and self.width not in FUSED_WIDTHS:
            return f"--fused-block takes a --width of {', '.join(map(str, FUSED_WIDTHS))} (got {self.width})"
        return not_positive(self, ("width", "repr_dim"))
# END SHARED BLOCK: network flags
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the matmuls; parameters, LayerNorm, activations and losses stay float32 (bfloat16:
    faster on GPUs with bf16 tensor cores; float32 is the paper's)"""


# ======================================== Network =================================================
# SHARED BLOCK: network (keep identical in all three scripts)
# depth = number of Dense layers in the residual blocks: input Dense+LN+act, then depth/4 identical blocks of
# 4 x (Dense, LayerNorm, act) with the skip added after the block's last activation, then the output head(s).
# nn.scan stacks the blocks, so the compiled graph holds ONE block whatever the depth (`unroll` of them per trip
# of its loop: fewer trips, a graph still flat in depth); the backward pass recomputes each block's LayerNorms and
# activations from its matmuls' outputs, and with --remat its matmuls too, instead of storing them. compute_dtype
# "bfloat16" runs the matmuls in bfloat16; parameters, LayerNorm, activations, the residual stream and every output
# stay float32. fused: once their parameters exist, the blocks run as fused kernels (crl_kernels.py) on the same
# parameters: all of a trunk's blocks as one kernel forward and one backward (with --remat, each block as its own
# pair, under the scan).
def dense(features: int, compute_dtype: str, name: Optional[str] = None) -> Callable:
    """Dense layer with float32 params whose matmul runs in compute_dtype; returns float32. Kernels are
    uniform with variance 1 / (3 fan_in), a third of LeCun uniform's; biases start at zero."""
    layer = nn.Dense(features, kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                     bias_init=nn.initializers.zeros,
                     dtype=jnp.dtype(compute_dtype), param_dtype=jnp.float32, name=name)
    return lambda x: layer(x).astype(jnp.float32)


def hidden(x: jax.Array, width: int, layer_norm: bool, activation: str, compute_dtype: str) -> jax.Array:
    """One hidden layer, built inside a module's nn.compact: Dense, LayerNorm (unless off), activation."""
    x = dense(width, compute_dtype)(x)
    x = nn.LayerNorm()(x) if layer_norm else x
    return nn.swish(x) if activation == "swish" else nn.relu(x)


class ResidualBlock(nn.Module):
    width: int
    layer_norm: bool
    activation: str
    residual: bool
    compute_dtype: str = "float32"
    fused: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
        if self.fused and not self.is_initializing():  # the loop below, as kernels (needs layer_norm, residual)
            return fused_residual_block(x, self.variables["params"], self.activation, self.compute_dtype), None
        h = x
        for _layer in range(4):  # fixed 4 layers per block, independent of depth
            h = hidden(h, self.width, self.layer_norm, self.activation, self.compute_dtype)
        return (h + x if self.residual else h), None


class ResidualTrunk(nn.Module):
    depth: int
    width: int
    layer_norm: bool = True
    activation: str = "swish"
    residual: bool = True
    remat: bool = False
    compute_dtype: str = "float32"
    unroll: int = 2  # blocks per trip of the scan's loop: the same math in fewer trips (docs/results.md)
    fused: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = hidden(x, self.width, self.layer_norm, self.activation, self.compute_dtype)
        if self.fused and not self.remat and not self.is_initializing():  # all the blocks: one kernel each way
            return fused_blocks(x, self.variables["params"]["blocks"], self.activation, self.compute_dtype)
        # for the backward pass each block keeps only its input and its matmuls' outputs, and recomputes LayerNorm
        # and the activation there (jax.checkpoint's dots_saveable: the same numbers, less memory, fewer kernels);
        # --remat keeps its input alone and recomputes the whole block
        policy = None if self.remat else jax.checkpoint_policies.dots_saveable
        block = nn.remat(ResidualBlock, prevent_cse=False, policy=policy)
        blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                         length=self.depth // 4, unroll=min(self.unroll, self.depth // 4))
        x, _ = blocks(self.width, self.layer_norm, self.activation, self.residual, self.compute_dtype, self.fused,
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
                  remat: bool = False, compute_dtype: str = "float32", unroll: int = 2,
                  fused: bool = False) -> Networks:
    def trunk(depth):
        return ResidualTrunk(depth, width, layer_norm, activation, residual, remat, compute_dtype, unroll, fused)

    return Networks(Actor(trunk(actor_depth), action_size), Encoder(trunk(critic_depth), repr_dim),
                    Encoder(trunk(critic_depth), repr_dim))
# END SHARED BLOCK: network


# ======================================== Replay buffer and relabelling ===========================
# SHARED BLOCK: replay buffer (keep identical in all three scripts)
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


# ======================================== Losses and the SGD update ===============================
# SHARED BLOCK: losses (keep identical in all three scripts)
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
    off_diag = (jnp.sum(logits) - jnp.sum(diag)) / (n * (n - 1.0))  # a float: n (n - 1) overflows int32 from n = 46,341
    metrics = {"losses/critic": loss, "critic/logsumexp": jnp.mean(lse),
               "critic/categorical_accuracy": jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(n)),
               "critic/logits_pos": jnp.mean(diag), "critic/logits_neg": off_diag}
    return loss, metrics


def sample_tanh_gaussian(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a = tanh(u), u ~ N(mean, std); returns (a, log pi(a)) with the paper's tanh correction log(1 - tanh(u)^2
    + 1e-6), bounded at log(1e-6) per dimension where a deep actor saturates (docs/implementation.md)."""
    std = jnp.exp(log_std)
    u = mean + std * jax.random.normal(key, mean.shape)
    log_prob_u = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    # log(1 - tanh(u)^2 + 1e-6) = logaddexp(log(1 - tanh(u)^2), log(1e-6)), with log(1 - tanh(u)^2)
    # = 2 (log 2 - u - softplus(-2u)): the paper's value, without float32's cancellation in 1 - a^2
    log_det = jnp.logaddexp(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), math.log(1e-6))
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


def adam(learning_rate: float) -> optax.GradientTransformation:
    """optax.adam on a parameter set raveled into one vector (optax.flatten): Adam's update, element by element,
    as one fused kernel per parameter set on a GPU rather than one per parameter array (docs/implementation.md)."""
    return optax.flatten(optax.adam(learning_rate))


def agent_init(key: jax.Array, nets: Networks, opts: Optimizers, obs_dim: int, goal_dim: int,
               action_size: int) -> Agent:
    key_actor, key_phi, key_psi = jax.random.split(key, 3)
    actor_params = nets.actor.init(key_actor, jnp.zeros((1, obs_dim + goal_dim)))
    critic_params = {"phi": nets.phi.init(key_phi, jnp.zeros((1, obs_dim + action_size))),
                     "psi": nets.psi.init(key_psi, jnp.zeros((1, goal_dim)))}
    log_alpha = jnp.zeros(())
    return Agent(actor_params, critic_params, log_alpha, opts.actor.init(actor_params),
                 opts.critic.init(critic_params), opts.alpha.init(log_alpha))


def critic_loss_fn(sa_repr: jax.Array, g_repr: jax.Array, logsumexp_penalty: float) -> tuple[jax.Array, dict]:
    """InfoNCE over the batch: phi(s_i, a_i) of the data's actions against psi(g_j); the positives are the
    batch's own relabelled goals (j = i), the other rows' goals the negatives."""
    return infonce_loss(l2_energy_matrix(sa_repr, g_repr), logsumexp_penalty)


def actor_loss_fn(log_alpha: jax.Array, log_prob: jax.Array, sa_pi_repr: jax.Array, g_repr: jax.Array,
                  action: jax.Array, data_action: jax.Array, bc_coef: float = 0.0) -> tuple[jax.Array, dict]:
    """mean(alpha * log pi(a|s,g) - f(s, a, g)), a ~ pi (sa_pi_repr = phi(s, a)), on the batch's relabelled goals;
    plus bc_coef * mean ||a - a_data||^2 (behaviour cloning, used offline; 0 online)."""
    q = l2_energy_pairs(sa_pi_repr, g_repr)
    bc = jnp.mean(jnp.sum((action - data_action) ** 2, axis=-1))
    loss = jnp.mean(jnp.exp(log_alpha) * log_prob - q) + bc_coef * bc
    return loss, {"losses/actor": loss, "actor/entropy": -jnp.mean(log_prob), "actor/q": jnp.mean(q),
                  "actor/bc_mse": bc}


def alpha_loss_fn(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    return jnp.mean(jnp.exp(log_alpha) * jax.lax.stop_gradient(-log_prob - target_entropy))


def apply_stacked(calls: list[tuple[nn.Module, Any, jax.Array]]) -> list[jax.Array]:
    """[module.apply(params, x) for module, params, x in calls] as ONE vmapped apply where the calls share their
    module: the parameters stacked on a leading axis, so each layer is one batched matmul and the trunk one loop
    for all. Inputs of other widths are zero-padded to the widest, and the input layer's kernel rows with them
    (zero features times zero rows add nothing): this assumes, as every network here, that the module's first
    op on its input is a Dense (a fork that first normalises the raw input must not stack inputs of other
    widths). Calls that differ in any other way (a fork's psi of another shape) run one by one."""
    modules, params, inputs = zip(*calls)
    width, widths = max(x.shape[-1] for x in inputs), {x.shape[-1] for x in inputs}
    same = (all(m == modules[0] for m in modules)
            and all(jax.tree.structure(p) == jax.tree.structure(params[0]) for p in params))
    if not same or not all(len({x.shape for x in leaves}) == 1 or all(  # equal, or the input layer's kernel
            x.ndim == 2 and x.shape[0] in widths and x.shape[1] == leaves[0].shape[1] for x in leaves)
                           for leaves in zip(*map(jax.tree.leaves, params))):
        return [m.apply(p, x) for m, p, x in calls]
    pad = lambda x, axis: jnp.pad(x, [(0, width - n if i == axis else 0) for i, n in enumerate(x.shape)])
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves if len({x.shape for x in leaves}) == 1
                                                     else [pad(x, 0) for x in leaves]), *params)
    return list(jax.vmap(modules[0].apply)(stacked, jnp.stack([pad(x, x.ndim - 1) for x in inputs])))


def sgd_losses(params: tuple, nets: Networks, batch: dict, key: jax.Array, target_entropy: float,
               logsumexp_penalty: float, bc_coef: float = 0.0) -> tuple[jax.Array, dict]:
    """The actor, critic and alpha losses of one SGD step, summed so that ONE backward pass gives each parameter
    set the gradient of its own loss alone: stop-gradients keep the critic (phi, psi) and log(alpha) out of the
    actor loss, and the actor out of the alpha loss. params: (actor, critic {"phi", "psi"}, log_alpha).
    The trunks run in two passes: the actor; then phi(s, a_data), psi(g) and phi(s, a ~ pi) stacked in one."""
    actor_params, critic_params, log_alpha = params
    mean, log_std = nets.actor.apply(actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
    action, log_prob = sample_tanh_gaussian(key, mean, log_std)
    phi_fixed = jax.lax.stop_gradient(critic_params["phi"])  # the actor loss moves the actor, not phi
    sa_repr, g_repr, sa_pi_repr = apply_stacked([
        (nets.phi, critic_params["phi"], jnp.concatenate([batch["state"], batch["action"]], -1)),
        (nets.psi, critic_params["psi"], batch["goal"]),
        (nets.phi, phi_fixed, jnp.concatenate([batch["state"], action], -1))])
    critic_loss, critic_m = critic_loss_fn(sa_repr, g_repr, logsumexp_penalty)
    actor_loss, actor_m = actor_loss_fn(jax.lax.stop_gradient(log_alpha), log_prob, sa_pi_repr,
                                        jax.lax.stop_gradient(g_repr), action, batch["action"], bc_coef)
    alpha_loss = alpha_loss_fn(log_alpha, log_prob, target_entropy)
    return actor_loss + alpha_loss + critic_loss, {**actor_m, **critic_m, "losses/alpha": alpha_loss,
                                                   "actor/alpha": jnp.exp(log_alpha)}


def make_sgd_update(nets: Networks, opts: Optimizers, target_entropy: float, logsumexp_penalty: float,
                    bc_coef: float = 0.0) -> Callable:
    """One SGD step on one batch: actor, alpha and critic from one set of losses at the step's parameters
    (the actor loss sees the critic as it was before this step's critic update). No target networks."""
    def update(agent: Agent, batch: dict, key: jax.Array) -> tuple[Agent, dict]:
        (actor_grads, critic_grads, alpha_grad), metrics = jax.grad(sgd_losses, has_aux=True)(
            (agent.actor_params, agent.critic_params, agent.log_alpha), nets, batch, key, target_entropy,
            logsumexp_penalty, bc_coef)

        def apply(opt, grads, opt_state, params):
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        actor_params, actor_opt = apply(opts.actor, actor_grads, agent.actor_opt, agent.actor_params)
        log_alpha, alpha_opt = apply(opts.alpha, alpha_grad, agent.alpha_opt, agent.log_alpha)
        critic_params, critic_opt = apply(opts.critic, critic_grads, agent.critic_opt, agent.critic_params)
        return Agent(actor_params, critic_params, log_alpha, actor_opt, critic_opt, alpha_opt), metrics
    return update


def sgd_round(update: Callable, agent: Any, buf: Buffer, key: jax.Array, window: int, args: Args,
              goal_slice: tuple[int, int], batch_sharding: Optional[NamedSharding]) -> tuple:
    """One round of training on the buffer: one window per column relabelled (buffer_sample), shuffled into
    args.num_sgd_steps batches of args.batch_size, one update(agent, batch, key) on each in turn. agent: any pytree
    that update maps (the collector-learner passes all its agents); batch_sharding: where each batch lives when split
    across devices. Returns (agent, the mean of every update metric, the relabelling's metrics, the next key)."""
    key, key_sample, key_shuffle, key_sgd = jax.random.split(key, 4)
    data = buffer_sample(buf, key_sample, window, args.gamma, *goal_slice)
    batches = shuffle_into_batches(key_shuffle, data, args.num_sgd_steps, args.batch_size)
    if batch_sharding is not None:  # data parallel: each device takes its slice of every batch
        batches = jax.lax.with_sharding_constraint(batches, batch_sharding)
    tree = []  # the metrics' pytree structure, noted when the scan traces its step
    def step(agent, xs):  # a step's metrics as one row of a [steps, metrics] array: one write a step, not one each
        agent, metrics = update(agent, *xs)
        leaves, structure = jax.tree.flatten(metrics)
        tree.append(structure)
        return agent, jnp.stack([jnp.mean(m) for m in leaves])
    agent, rows = jax.lax.scan(step, agent, (batches, jax.random.split(key_sgd, args.num_sgd_steps)))
    metrics = jax.tree.unflatten(tree[0], list(jnp.mean(rows, axis=0)))
    relabelling = {"buffer/valid_fraction": jnp.mean(data["valid"]),
                   "buffer/mean_goal_offset": jnp.sum(data["k"] * data["valid"]) / jnp.maximum(
                       jnp.sum(data["valid"]), 1)}
    return agent, metrics, relabelling, key


def all_finite(tree: Any) -> jax.Array:
    """1.0 when every leaf (parameters, optimiser moments, log(alpha)) is finite, else NaN: a metric that the
    divergence guard, which checks every metric, stops on."""
    return jnp.where(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)])), 1.0, jnp.nan)
# END SHARED BLOCK: losses


# ======================================== Training loop ===========================================
@flax.struct.dataclass
class TrainState:
    agent: Agent
    env_state: State
    buffer: Buffer
    key: jax.Array
    env_steps: jax.Array


def fresh_state(args: Args, spec: Any, env: VecGoalEnv, nets: Networks, opts: Optimizers, key_agent: jax.Array,
                key_env: jax.Array, key: jax.Array) -> TrainState:
    """The training state a run starts from, of ONE seed (main maps it over the seeds): fresh networks and
    optimisers, reset envs, an empty replay buffer, the training key, no env steps."""
    agent = agent_init(key_agent, nets, opts, spec.obs_dim, spec.goal_end - spec.goal_start, env.action_size)
    return TrainState(agent=agent, env_state=env.reset(key_env),
                      buffer=buffer_init(args.max_replay_size, args.num_envs, spec.obs_dim, env.action_size),
                      key=key, env_steps=jnp.zeros((), jnp.int32))


# SHARED BLOCK: collection (keep identical in crl_depth.py and crl_collector_learner.py)
def schedule(args: Args) -> tuple[int, int, int]:
    """(prefill env steps, env steps per training step, training steps per epoch)."""
    prefill_unrolls = -(-args.min_replay_size // args.unroll_length)
    prefill = prefill_unrolls * args.unroll_length * args.num_envs
    per_train_step = args.num_envs * args.unroll_length
    return prefill, per_train_step, (args.total_env_steps - prefill) // (args.num_epochs * per_train_step)


def make_collect(args: Args, env: VecGoalEnv, nets: Networks) -> tuple[Callable, Callable]:
    """(collect, prefill) of one seed; ts.agent's actor is the one that acts."""
    obs_dim = env.env.obs_dim
    def collect(ts: TrainState) -> TrainState:
        """num_envs x unroll_length env steps of the stochastic actor, a = tanh(u) with
        u ~ N(mean(s, g), std(s, g)); inserts (state, action, episode id) into the buffer."""

        def env_step(carry, _):
            env_state, key = carry
            key, key_act = jax.random.split(key)
            mean, log_std = nets.actor.apply(ts.agent.actor_params, env_state.obs)
            action = sample_tanh_gaussian(key_act, mean, log_std)[0]
            next_state = env.step(env_state, action)
            return (next_state, key), (env_state.obs[:, :obs_dim], action, env_state.info["episode_id"])
        key, key_unroll = jax.random.split(ts.key)
        (env_state, _), (states, actions, episode_ids) = jax.lax.scan(
            env_step, (ts.env_state, key_unroll), None, length=args.unroll_length)
        buffer = buffer_insert(ts.buffer, states, actions, episode_ids)
        return ts.replace(env_state=env_state, buffer=buffer, key=key,
                          env_steps=ts.env_steps + args.unroll_length * args.num_envs)

    def prefill(ts: TrainState) -> TrainState:
        """min_replay_size steps per env with the current actor before training starts: at the start of a run the
        untrained stochastic actor, as in the paper's code (so the prefill depends on depth: deep actors saturate)."""
        num_unrolls = -(-args.min_replay_size // args.unroll_length)
        return jax.lax.fori_loop(0, num_unrolls, lambda _, ts: collect(ts), ts)
    return collect, prefill
# END SHARED BLOCK: collection


def make_train_fns(args: Args, env: VecGoalEnv, nets: Networks, opts: Optimizers, goal_slice: tuple[int, int],
                   batch_sharding: Optional[NamedSharding] = None) -> tuple[Callable, Callable]:
    """The prefill and epoch functions of ONE seed (main vmaps them over the seed axis and jits them).
    batch_sharding: where each SGD batch lives when the batch is split across devices."""
    target_entropy = -args.target_entropy_scale * env.action_size
    sgd_update = make_sgd_update(nets, opts, target_entropy, args.logsumexp_penalty)
    collect, prefill = make_collect(args, env, nets)
    _, _, steps_per_epoch = schedule(args)

    def training_step(ts: TrainState, _) -> tuple[TrainState, dict]:
        episodes_before = jnp.sum(ts.env_state.info["episode_id"])
        ts = collect(ts)
        agent, metrics, relabelling, key = sgd_round(sgd_update, ts.agent, ts.buffer, ts.key, args.episode_length,
                                                     args, goal_slice, batch_sharding)
        metrics |= relabelling
        metrics["train/episodes_finished"] = jnp.sum(ts.env_state.info["episode_id"]) - episodes_before
        return ts.replace(agent=agent, key=key), metrics

    def train_epoch(ts: TrainState) -> tuple[TrainState, dict]:
        ts, metrics = jax.lax.scan(training_step, ts, None, length=steps_per_epoch)
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["train/params_finite"] = all_finite(ts.agent)
        return ts, metrics
    return prefill, train_epoch


# ======================================== Evaluation ==============================================
# SHARED BLOCK: evaluation (keep identical in crl_depth.py and crl_depth_offline.py)
def make_evaluate(args: Args, eval_env: VecGoalEnv, nets: Networks) -> Callable:
    """The evaluation of one seed: one episode of episode_length steps on every eval env, fresh starts and goals, the
    deterministic actor tanh(mean). Per-step metrics count while the episode is alive (to its terminating step)."""
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
# END SHARED BLOCK: evaluation


def critic_score(nets: Networks, actor_params, critic_params) -> Callable:
    """score(states, goals) = f(s, pi(s, g), g) with the deterministic actor: what --plot-critic draws."""
    def score(states: jax.Array, goals: jax.Array) -> jax.Array:
        action = jnp.tanh(nets.actor.apply(actor_params, jnp.concatenate([states, goals], -1))[0])
        sa_repr = nets.phi.apply(critic_params["phi"], jnp.concatenate([states, action], -1))
        return l2_energy_pairs(sa_repr, nets.psi.apply(critic_params["psi"], goals))
    return score


def critic_of(args: Args, action_size: int) -> Callable[[dict], tuple[Any, Callable, str, str]]:
    """--load: of a network config (NETWORK_FIELDS), the saved parameters' shapes, critic score, title, words."""
    spec = ENVS[args.env_id]
    def build(cfg: dict) -> tuple[Any, Callable, str, str]:
        actor_depth, critic_depth = cfg["actor_depth"] or cfg["depth"], cfg["critic_depth"] or cfg["depth"]
        nets = make_networks(actor_depth, critic_depth, cfg["width"], cfg["repr_dim"], action_size,
                             cfg["layer_norm"], cfg["activation"], cfg["residual"])
        agent = jax.eval_shape(lambda: agent_init(jax.random.PRNGKey(0), nets, Optimizers(*[optax.adam(1.0)] * 3),
                                                  spec.obs_dim, spec.goal_end - spec.goal_start, action_size))
        return ({"actor": agent.actor_params, "critic": agent.critic_params, "log_alpha": agent.log_alpha},
                lambda params: critic_score(nets, params["actor"], params["critic"]),
                f"critic depth {critic_depth}, width {cfg['width']}", f"actor depth {actor_depth}, critic depth "
                f"{critic_depth}, width {cfg['width']}, repr dim {cfg['repr_dim']}, layer norm {cfg['layer_norm']}")
    return build


# ======================================== Main ====================================================
NETWORK_FIELDS = ("depth", "actor_depth", "critic_depth", "width", "repr_dim", "layer_norm", "activation", "residual")
# flags a resumed run may change; every other flag comes from the run's args.json
RESUMABLE_FIELDS = ("num_epochs", "total_env_steps", "checkpoint_every", "checkpoint_buffer", "track",
                    "wandb_project_name", "wandb_entity", "wandb_mode", "render", "save_buffer", "plot_critic",
                    "plot_goal", "plot_out", "runs_dir", "resume", "num_devices", "estimate")


def validate_args(args: Args) -> Optional[str]:
    """Returns one line describing what is wrong with args, or None."""
    return (args.online_flags_error() or args.algorithm_flags_error()
            or args.network_flags_error(depths=("depth", "actor_depth", "critic_depth"))
            or args.run_flags_error(split=("num_envs", "batch_size"), one_run=("render", "save_buffer", "plot_critic"))
            or args.plot_flags_error(args.env_id))


def state_header(args: Args) -> dict:
    """What a state checkpoint must match to be loaded into a run of these args."""
    return {"format": "crl_depth_state", "version": 4, "env_id": args.env_id,  # 4: Adam on raveled parameters
            "actor_depth": args.actor_depth or args.depth, "critic_depth": args.critic_depth or args.depth,
            **{name: getattr(args, name) for name in ("width", "repr_dim", "layer_norm", "activation", "residual",
                                                      "num_envs", "episode_length", "max_replay_size", "num_seeds")}}


def new_run(args: Args) -> Run:
    """The run of args (crl_runs.Run): its directory, seeds, checkpoint header, and its name in error messages."""
    return Run(args, args.env_id, state_header(args),
               lambda h: describe(h, ("env_id", "actor_depth", "critic_depth", "width")), "env_steps")


def actor_params(ts: TrainState) -> Any:
    """What acts in the evaluation: the actor's parameters."""
    return ts.agent.actor_params


def sizes(ts: TrainState) -> tuple[dict, dict]:
    """--estimate's view of a training state: the parameters to count, the parts to size."""
    return ({"actor": ts.agent.actor_params, "critic": ts.agent.critic_params},
            {"parameters": (ts.agent.actor_params, ts.agent.critic_params, ts.agent.log_alpha),
             "optimiser states": (ts.agent.actor_opt, ts.agent.critic_opt, ts.agent.alpha_opt),
             "replay buffer": ts.buffer, "env states": ts.env_state})


def write_outputs(args: Args, run: Run, ts: TrainState, nets: Networks, spec: Any, key_render: jax.Array) -> None:
    """After training, as asked: the replay buffer as a dataset, the rollout, the critic heatmap (one seed's)."""
    if args.save_buffer:  # the dataset of crl_depth_offline.py: the buffer's steps, oldest first
        buf = jax.device_get(ts.buffer)
        rows = (int(buf.ptr) - int(buf.size) + np.arange(int(buf.size))) % buf.state.shape[0]
        save_crl_buffer(os.path.join(run.dir, "buffer.npz"), args.env_id, spec, args.episode_length,
                        buf.state[rows], buf.action[rows], buf.episode_id[rows])
    if args.render:
        print("rendering rollout.html (compiling the env's step and the actor) ...", flush=True)
        render_rollout(os.path.join(run.dir, "rollout.html"), make_env(args.env_id, eval=True),
                       lambda obs: jnp.tanh(nets.actor.apply(ts.agent.actor_params, obs)[0]), key_render,
                       args.episode_length)
    if args.plot_critic:
        print("drawing the critic heatmap (compiling the critic's score) ...", flush=True)
        args.write_heatmap(args.env_id, [(f"critic depth {args.critic_depth or args.depth}, width {args.width}\n"
                                          f"{run.name[:48]}", critic_score(nets, ts.agent.actor_params,
                                                                           ts.agent.critic_params))], run.dir)


def build(args: Args) -> tuple[Any, VecGoalEnv, VecGoalEnv, Networks, Optimizers]:
    """The envs (training and evaluation), networks and optimisers of a run of args."""
    spec, env, eval_env = make_vec_envs(args.env_id, args.num_envs, args.num_eval_envs, args.episode_length)
    nets = make_networks(args.actor_depth or args.depth, args.critic_depth or args.depth, args.width, args.repr_dim,
                         env.action_size, args.layer_norm, args.activation, args.residual, args.remat,
                         args.compute_dtype, fused=args.fused_block)
    opts = Optimizers(adam(args.actor_lr), adam(args.critic_lr), adam(args.alpha_lr))
    return spec, env, eval_env, nets, opts


def programs(args: Args, spec: Any, env: VecGoalEnv, eval_env: VecGoalEnv, nets: Networks, opts: Optimizers,
             ts: TrainState, mesh: Optional[jax.sharding.Mesh]) -> tuple[Callable, Callable, Callable, Any, Any]:
    """The prefill, epoch and evaluation of every seed (seed_map: vmap over the leading seed axis), jitted
    for a state like ts on mesh (jit_online), with the state's shardings."""
    prefill_fn, epoch_fn = (seed_map(fn, args.num_seeds) for fn in make_train_fns(
        args, env, nets, opts, (spec.goal_start, spec.goal_end),
        NamedSharding(mesh, PartitionSpec(None, "envs")) if mesh else None))
    return jit_online(prefill_fn, epoch_fn, seed_map(make_evaluate(args, eval_env, nets), args.num_seeds), ts, mesh)


# SHARED BLOCK: online jit (keep identical in crl_depth.py and crl_collector_learner.py)
def jit_online(prefill_fn: Callable, epoch_fn: Callable, evaluate: Callable, ts: Any,
               mesh: Optional[jax.sharding.Mesh]) -> tuple[Callable, Callable, Callable, Any, Any]:
    """jit of prefill, epoch (both donate the state) and evaluation; returns them with the state's shardings
    and the replicated sharding (both None on one device). With several devices the env state and the buffer
    are split along their env axis (1 and 2, after the seed axis), the rest replicated, and XLA inserts the
    communication."""
    shardings = replicated = None
    if mesh:
        shardings = state_shardings(ts, mesh, split={"env_state": 1, "buffer": 2})
        replicated = NamedSharding(mesh, PartitionSpec())
    prefill_fn = jax.jit(prefill_fn, in_shardings=shardings and (shardings,), out_shardings=shardings, donate_argnums=0)
    epoch_fn = jax.jit(epoch_fn, in_shardings=shardings and (shardings,),
                       out_shardings=shardings and (shardings, replicated), donate_argnums=0)
    return prefill_fn, epoch_fn, jax.jit(evaluate, out_shardings=replicated), shardings, replicated
# END SHARED BLOCK: online jit


# SHARED BLOCK: online estimate (keep identical in crl_depth.py and crl_collector_learner.py)
def estimate_run(args: Args) -> dict:
    """--estimate: what the run of args would need, printed and returned (crl_estimate.estimate's report), without
    and with --remat: its programs compiled for this backend from the state's shapes alone. Nothing is trained,
    allocated, read or written."""
    run = new_run(args)
    key, key_agent, key_env, key_eval, _ = seed_all(args.seed, run.seeds, 5)
    devices, mesh = device_mesh(args.num_devices, "envs")
    spec, env, eval_env, nets, opts = build(args)
    ts = jax.eval_shape(seed_map(functools.partial(fresh_state, args, spec, env, nets, opts), args.num_seeds),
                        key_agent, key_env, key)
    prefill_fn, epoch_fn, evaluate, _, _ = programs(args, spec, env, eval_env, nets, opts, ts, mesh)
    report = estimate(run.describe(run.header) + f", remat {args.remat}", *sizes(ts), {
        "prefill": (prefill_fn, (ts,), None), "epoch": (epoch_fn, (ts,), schedule(args)[2]),
        "evaluation": (evaluate, (actor_params(ts), key_eval), None)}, args.num_seeds, len(devices))
    if not args.remat:  # the same run with --remat, to show what rematerialisation saves
        report = compare(report, estimate_run(dataclasses.replace(args, remat=True)), "without -> with --remat")
    return report
# END SHARED BLOCK: online estimate


def plot_saved_critics(args: Args) -> None:
    """--plot-critic --load PATH...: the critic heatmap of saved checkpoints, no training."""
    print("drawing the critic heatmap of the saved checkpoints (compiling the critic's score) ...", flush=True)
    args.plot_checkpoints(args.env_id, {name: getattr(args, name) for name in NETWORK_FIELDS},
                          {"env_id": args.env_id}, critic_of(args, make_env(args.env_id).action_size))


# the console line of an epoch: (label, metric, format, every seed's value too); a metric not logged is left out
CONSOLE = (("time at goal", "eval/time_at_goal", ".1f", True), ("success", "eval/success_any", ".2f", True),
           ("dist", "eval/dist", ".2f", True), ("critic", "losses/critic", ".3f", False),
           ("acc", "critic/categorical_accuracy", ".2f", False), ("actor", "losses/actor", ".3f", False),
           ("alpha", "actor/alpha", ".3g", False), ("entropy", "actor/entropy", ".2f", False))


def main(args: Args) -> None:
    """Trains (or with --resume continues) a run of args, checked by cli() before it gets here."""
    actor_depth, critic_depth = args.actor_depth or args.depth, args.critic_depth or args.depth
    run = new_run(args)
    # seeding: seed i of --num-seeds draws exactly the keys a single run with --seed seed+i draws
    key, key_agent, key_env, key_eval, key_render = seed_all(args.seed, run.seeds, 5)
    # devices: with more than one, training envs, replay buffer and SGD batches are split across them
    devices, mesh = device_mesh(args.num_devices, "envs")
    spec, env, eval_env, nets, opts = build(args)
    fresh = seed_map(functools.partial(fresh_state, args, spec, env, nets, opts), args.num_seeds)  # every seed's

# SHARED BLOCK: online training state (keep identical in crl_depth.py and crl_collector_learner.py)
    # the training state: fresh, or with --resume the checkpoint's, checked against a fresh state before
    # anything is compiled or written (saved with --no-checkpoint-buffer: an empty buffer, refilled below)
    start_epoch, refill = 1, True
    if args.resume:
        shapes = jax.eval_shape(fresh, key_agent, key_env, key)
        header, ckpt_epoch, saved = run.load(lambda header: {
            "ts": shapes if header.get("has_buffer") else shapes.replace(buffer=None), "key_eval": key_eval})
        if ckpt_epoch > args.num_epochs:
            fail(f"--num-epochs {args.num_epochs} ends the run before its checkpoint's epoch {ckpt_epoch} "
                 f"({run.state_path}): give --num-epochs {ckpt_epoch} or more")
        ts, key_eval, start_epoch = saved["ts"], saved["key_eval"], ckpt_epoch + 1
        refill = not header.get("has_buffer")
        if refill:
            ts = ts.replace(buffer=jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes.buffer))
    else:
        print("compiling and building the fresh training state (networks' init, envs' reset) ...", flush=True)
        ts = jax.jit(fresh)(key_agent, key_env, key)
    ts, key_eval = jax.tree.map(jnp.array, (ts, key_eval))  # every leaf its own copy, so ts can be donated
# END SHARED BLOCK: online training state
    prefill_steps, per_train_step, steps_per_epoch = schedule(args)
    prefill_fn, epoch_fn, evaluate, shardings, replicated = programs(args, spec, env, eval_env, nets, opts, ts, mesh)
    num_params = sum(x[0].size for x in jax.tree.leaves((ts.agent.actor_params, ts.agent.critic_params)))
    run.open()
    run.announce(f"env {args.env_id} | actor depth {actor_depth} critic depth {critic_depth} width {args.width} | "
                 f"{num_params:,} params | {steps_per_epoch} training steps/epoch of {per_train_step:,} env steps",
                 len(devices), "envs and batches", ts.env_steps, args.compute_dtype)

# SHARED BLOCK: online compile (keep identical in crl_depth.py and crl_collector_learner.py)
    if mesh:
        ts, key_eval = jax.device_put(ts, shardings), jax.device_put(key_eval, replicated)
    compiled, compile_s = compile_all({
        **({"prefill": lambda: prefill_fn.lower(ts).compile()} if refill else {}),
        "epoch": lambda: epoch_fn.lower(ts).compile(),
        "evaluation": lambda: evaluate.lower(actor_params(ts), key_eval).compile()})

    if refill:  # at the start of a run with the untrained actor, on a resumed run with the current one
        print(f"the checkpoint holds no replay buffer (--no-checkpoint-buffer): refilling it with {prefill_steps:,} "
              f"env steps of the current actor" if args.resume else
              f"prefilling {prefill_steps:,} env steps with the untrained actor", flush=True)
        ts = compiled["prefill"](ts)
# END SHARED BLOCK: online compile
    if not args.resume:  # epoch 0: the untrained policy, the baseline that learning must rise above
        key_eval, keys = split_seed_keys(key_eval)
        m = jax.device_get(compiled["evaluation"](actor_params(ts), keys))
        run.log(0, ts.env_steps, m, {"time/compile_s": compile_s})
        print(f"epoch 0 (untrained) | {metrics_line(m, CONSOLE)}", flush=True)
    for epoch in range(start_epoch, args.num_epochs + 1):
        t_epoch = time.perf_counter()  # train an epoch
        ts, train_m = compiled["epoch"](ts)
        train_m = jax.device_get(train_m)
        sps = args.num_seeds * steps_per_epoch * per_train_step / (time.perf_counter() - t_epoch)
        key_eval, keys = split_seed_keys(key_eval)  # evaluate
        m = jax.device_get(compiled["evaluation"](actor_params(ts), keys)) | train_m
        epoch_s = time.perf_counter() - t_epoch  # log
        records = run.log(epoch, ts.env_steps, m, {"charts/sps": sps, "time/epoch_s": epoch_s,
                                                   "time/compile_s": compile_s})
        print(f"epoch {epoch}/{args.num_epochs} | env steps {records[0]['env_steps']:,} | SPS {sps:,.0f} | "
              f"{metrics_line(m, CONSOLE)} | ETA {run.eta(epoch_s, args.num_epochs - epoch)}", flush=True)
        run.check_finite(epoch, m)  # the divergence guard: every metric, parameters included
        run.checkpoint(epoch, args.num_epochs,  # checkpoint (the buffer too, unless --no-checkpoint-buffer)
                       {"ts": ts if args.checkpoint_buffer else ts.replace(buffer=None), "key_eval": key_eval},
                       has_buffer=args.checkpoint_buffer)

    run.save_networks({"actor": ts.agent.actor_params, "critic": ts.agent.critic_params,
                       "log_alpha": ts.agent.log_alpha}, state_header(args), args.num_epochs)
    write_outputs(args, run, jax.tree.map(lambda x: x[0], ts), nets, spec, key_render[0])
    run.score({"time at goal": "eval/time_at_goal"}, args.episode_length)
    run.finish()


def cli(argv: Optional[list[str]] = None) -> Args:
    """The command line's Args; with --resume RUN_DIR the run's own, changed by the flags given."""
    return parse_args(Args, argv, validate_args, RESUMABLE_FIELDS, Args.settle_resume)


if __name__ == "__main__":
    args = cli()
    plot_saved_critics(args) if args.load else estimate_run(args) if args.estimate else main(args)
