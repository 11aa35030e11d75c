"""Offline contrastive RL (CRL) at any depth: the same critic and actor as crl_depth.py, trained from a
fixed dataset with no environment interaction.

Tests the paper's counterpoint ("1000 Layer Networks for Self-Supervised RL", Wang et al., NeurIPS
2025; arXiv 2503.14858, offline experiment): without exploration, depth does not help and can hurt
(offline CRL at depths 4..64 fell sharply on two of three OGBench tasks; depth 4 was usually best).
The dataset is either a replay buffer written by `crl_depth.py --save-buffer` (evaluated in the
matching brax env exactly as crl_depth.py evaluates) or an OGBench-format .npz (evaluated in
OGBench's env when the optional `ogbench` package is installed). Hindsight relabelling is
crl_depth.py's: a strictly future state of the same episode, P(k) ~ gamma^k. The actor loss is CRL's
critic term plus behaviour cloning on the dataset's actions (--bc-coef; 0 gives pure CRL).

Read it top to bottom: Args, network, replay buffer, losses, dataset, training loop, evaluation,
main, the whole run in view as in crl_depth.py (the training state, fresh or --resume, the jit, the
epoch loop). The brax envs come from crl_envs.py, the reading of the two dataset formats from
crl_datasets.py (docs/offline.md documents them) and the run plumbing (run directory, metrics,
checkpoints, --resume, seeds) from crl_runs.py, --estimate's report from crl_estimate.py, --fused-block's
kernels from crl_kernels.py. The blocks marked SHARED BLOCK (flags, network,
replay buffer, losses, evaluation) are verbatim copies of crl_depth.py's (tests/test_shared_blocks.py);
`diff crl_depth.py crl_depth_offline.py` shows what the offline variant changes. To try an idea, copy
this file beside the modules and edit the copy; it relies only on their stated interfaces.
SHARED BLOCK banners ("keep identical in ...") are this repository's bookkeeping: a fork edits its copy freely.
"""

import dataclasses
import hashlib
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

from crl_datasets import DatasetError, DatasetFlags, OfflineData, check_env_shapes, load_dataset
from crl_estimate import compare, estimate
from crl_envs import VecGoalEnv, make_env
from crl_kernels import FUSED_WIDTHS, fused_blocks, fused_residual_block
from crl_runs import (Run, RunArgs, across_seeds, compile_all, device_mesh, fail, flag, metrics_line, not_positive,
                      parse_args, seed_all, seed_map, split_seed_keys, state_shardings)


# ======================================== Args ====================================================
@dataclasses.dataclass
class Args(RunArgs):
    """Flags of this script; the run flags (--seed, --track and wandb, --runs-dir, --checkpoint-every,
    --resume, --num-seeds, --num-devices) are crl_runs.RunArgs'. `--help` lists them all."""

    # --- experiment and outputs ---
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this experiment (part of the run name)"""

    # --- dataset (replaces crl_depth.py's environment block) ---
    dataset: str = ""
    """path of the .npz dataset (required): a buffer.npz of `crl_depth.py --save-buffer`, or an
    OGBench-format file (keys observations, actions, terminals[, timeouts, next_observations])"""
    dataset_format: Literal["auto", "crl", "ogbench"] = "auto"
    """format of --dataset; auto: a crl_depth.py buffer if its `format` key says so, else OGBench"""
    env_id: Optional[str] = None
    """evaluation env. crl buffers: the brax env id stored in the file (if given, it must match).
    OGBench: the dataset name for ogbench.make_env_and_datasets (default: the file name without
    .npz and -val, e.g. antmaze-large-navigate-v0)"""
    obs_dim: Optional[int] = None
    """OGBench (required): features of one observation, the state. crl buffers: from the env"""
    goal_start: Optional[int] = None
    """OGBench (required): the goal is state[goal_start:goal_end] (antmaze: 0 2). crl: from the env"""
    goal_end: Optional[int] = None
    """OGBench (required): end of the goal slice (exclusive). crl buffers: from the env"""
    window_length: Optional[int] = None
    """steps of each sampled window, the relabelling horizon; default: crl: the run's
    --episode-length; OGBench: the longest episode"""
    num_columns: Optional[int] = None
    """OGBench only: the one sequence of steps is cut into this many contiguous columns (the
    buffer's [time, column] layout; one window per column per round); default min(256, steps // window)"""
    episode_length: Optional[int] = None
    """steps of an evaluation episode; default: crl: the run's --episode-length; OGBench: the env's limit"""
    num_eval_envs: int = 128
    """number of evaluation episodes per evaluation (OGBench: its evaluation tasks in turn)"""

    # --- algorithm ---
    num_gradient_steps: int = 1_000_000
    """total SGD steps (each updates actor, alpha and critic on one batch)"""
    eval_every: int = 100_000
    """SGD steps between evaluations (a multiple of --num-sgd-steps dividing --num-gradient-steps)"""
    num_epochs: Optional[int] = None
    """epochs of --eval-every SGD steps, an evaluation after each: sets --num-gradient-steps to
    num_epochs x eval_every (with --resume: continue the run to this many epochs)"""
    num_sgd_steps: int = 100
    """SGD steps per relabelling round: one window per column is relabelled, shuffled and split
    into this many batches"""
    batch_size: int = 512
    """batch size of each SGD step (also the number of InfoNCE negatives + 1)"""

    def dataset_batches_error(self, data: OfflineData) -> Optional[str]:
        """One line on why the dataset cannot fill the batches of the flags above, or None."""
        if data.num_transitions < self.batch_size:
            return (f"too few transitions: the dataset has {data.num_transitions} steps with a later step of the "
                    f"same episode (a relabelled goal), fewer than one batch (--batch-size {self.batch_size})")
        per_round = data.state.shape[1] * (data.window - 1)
        if self.num_sgd_steps * self.batch_size > per_round:
            return (f"--num-sgd-steps x --batch-size ({self.num_sgd_steps} x {self.batch_size}) is larger than "
                    f"what a relabelling round yields: columns x (window - 1) = {per_round} transitions")
        return None
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
    bc_coef: float = 0.1
    """weight of behaviour cloning, mean ||a_pi - a_data||^2, in the actor loss; 0 gives pure CRL.
    0.1 is TD3+BC's balance (alpha 2.5) rescaled to this loss: see docs/offline.md"""

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
    """dtype of the matmuls; parameters, LayerNorm, activations and losses stay float32"""


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


# ======================================== Dataset =================================================
# crl_datasets.load_dataset reads --dataset, either format, into the replay buffer's layout: states
# [T, C, obs_dim], actions [T, C, A] and an episode id per step, non-decreasing down each column.
# Here it becomes a full Buffer that buffer_sample relabels exactly as online (never across an
# episode boundary of the dataset), and the evaluation env is built and checked against it.
def offline_buffer(data: OfflineData) -> Buffer:
    """The fixed dataset as a full replay buffer, oldest row first."""
    size = data.state.shape[0]
    return Buffer(state=jnp.asarray(data.state), action=jnp.asarray(data.action),
                  episode_id=jnp.asarray(data.episode_id), ptr=jnp.zeros((), jnp.int32),
                  size=jnp.asarray(size, jnp.int32))


def read_dataset(args: Args) -> OfflineData:
    """--dataset in the buffer layout (crl_datasets.load_dataset), checked against the batch flags."""
    data = load_dataset(args.dataset, DatasetFlags(args.dataset_format, args.env_id, args.obs_dim, args.goal_start,
                                                   args.goal_end, args.window_length, args.num_columns))
    error = args.dataset_batches_error(data)
    if error:
        raise DatasetError(error)
    return data


def open_dataset(args: Args) -> tuple[Args, OfflineData, Optional[VecGoalEnv], Optional[list], Optional[str]]:
    """Every check of the dataset and the evaluation env, before anything is compiled or written (bad
    input: one line, exit 2). Returns args with what the dataset and env decided filled in (recorded in
    args.json), the dataset, the brax evaluation env (crl buffers) or OGBench's envs (None without the
    ogbench package), and the note to print once."""
    note, envs, eval_env = None, None, None
    try:
        data = read_dataset(args)
        if data.kind == "crl":
            episode_length = args.episode_length or data.episode_length
            eval_env = VecGoalEnv(make_env(data.env_id, eval=True), args.num_eval_envs, episode_length)
            check_env_shapes(data, eval_env.obs_size, eval_env.action_size)
        else:
            envs, note = make_ogbench_envs(data, args.num_eval_envs)
            episode_length = args.episode_length
            if envs is not None:
                check_env_shapes(data, envs[0].observation_space.shape[0], envs[0].action_space.shape[0])
                episode_length = episode_length or envs[0].spec.max_episode_steps
                if not episode_length:
                    raise DatasetError(f"OGBench env {data.env_id} has no episode limit: pass --episode-length")
    except DatasetError as e:
        fail(str(e))
    args = dataclasses.replace(args, dataset_format=data.kind, env_id=data.env_id, obs_dim=data.obs_dim,
                               goal_start=data.goal_start, goal_end=data.goal_end, window_length=data.window,
                               num_columns=data.state.shape[1], episode_length=episode_length)
    return args, data, eval_env, envs, note


# ======================================== Training loop ===========================================
@flax.struct.dataclass
class TrainState:
    agent: Agent
    buffer: Buffer
    key: jax.Array
    gradient_steps: jax.Array


def fresh_state(args: Args, nets: Networks, opts: Optimizers, data: OfflineData, buffer: Buffer,
                key_agent: jax.Array, key: jax.Array) -> TrainState:
    """The training state a run starts from: every seed's fresh networks and optimisers (key_agent, key: one
    per seed; every leaf gets a leading seed axis), the training keys, no gradient steps, and the dataset
    buffer, one copy shared by all seeds."""
    def fresh_agent(key_agent: jax.Array) -> Agent:  # one seed
        return agent_init(key_agent, nets, opts, data.obs_dim, data.goal_end - data.goal_start, data.action.shape[-1])
    return TrainState(agent=jax.vmap(fresh_agent)(key_agent), buffer=buffer, key=key,
                      gradient_steps=jnp.zeros((args.num_seeds,), jnp.int32))


def make_train_fns(args: Args, nets: Networks, opts: Optimizers, action_size: int,
                   goal_slice: tuple[int, int], batch_sharding: Optional[NamedSharding] = None) -> Callable:
    """Builds the epoch of one seed: eval_every SGD steps, in rounds of num_sgd_steps on one relabelling
    (main vmaps it over the seed axis, with the dataset buffer shared, and jits it).
    batch_sharding: where each SGD batch lives when the batch is split across devices."""
    target_entropy = -args.target_entropy_scale * action_size
    sgd_update = make_sgd_update(nets, opts, target_entropy, args.logsumexp_penalty, args.bc_coef)
    rounds_per_epoch = args.eval_every // args.num_sgd_steps

    def training_step(ts: TrainState, _) -> tuple[TrainState, dict]:
        agent, metrics, relabelling, key = sgd_round(sgd_update, ts.agent, ts.buffer, ts.key, args.window_length,
                                                     args, goal_slice, batch_sharding)
        return (ts.replace(agent=agent, key=key, gradient_steps=ts.gradient_steps + args.num_sgd_steps),
                metrics | relabelling)

    def train_epoch(ts: TrainState) -> tuple[TrainState, dict]:
        ts, metrics = jax.lax.scan(training_step, ts, None, length=rounds_per_epoch)
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["train/params_finite"] = all_finite(ts.agent)
        return ts, metrics
    return train_epoch


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


def make_ogbench_evaluate(args: Args, envs: list, nets: Networks) -> Callable:
    """OGBench's evaluation, one episode per env stepped in lockstep (one actor call per step):
    env i runs evaluation task 1 + i % num_tasks, the goal is info['goal'][goal_start:goal_end], the
    actor deterministic tanh(mean). Episodes end by the env's own termination (at the goal with
    OGBench's terminate_at_goal: time at goal is then 0 or 1) or truncation, or after episode_length steps.
    eval/success_any is OGBench's success rate: info['success'] at some step."""
    act = jax.jit(lambda params, obs: jnp.tanh(nets.actor.apply(params, obs)[0]))
    num_tasks = len(getattr(envs[0].unwrapped, "task_infos", range(5)))

    def evaluate(actor_params, key: jax.Array) -> dict:
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        obs, goals = [], []
        for i, env in enumerate(envs):
            ob, info = env.reset(seed=seed + i, options=dict(task_id=1 + i % num_tasks, render_goal=False))
            obs.append(ob)
            goals.append(np.asarray(info["goal"])[args.goal_start : args.goal_end])
        obs, goals = np.asarray(obs, np.float32), np.asarray(goals, np.float32)
        alive = np.ones(len(envs), bool)
        at_goal, steps = np.zeros(len(envs)), np.zeros(len(envs))
        for _ in range(args.episode_length):
            actions = np.asarray(act(actor_params, np.concatenate([obs, goals], axis=1)))
            for i in np.flatnonzero(alive):
                obs[i], _, terminated, truncated, info = envs[i].step(actions[i])
                steps[i] += 1
                at_goal[i] += float(info["success"])
                alive[i] = not (terminated or truncated)
            if not alive.any():
                break
        return {"eval/time_at_goal": float(at_goal.mean()), "eval/success_any": float(np.mean(at_goal > 0)),
                "eval/episode_length": float(steps.mean())}
    return evaluate


def make_diagnostics(nets: Networks, logsumexp_penalty: float) -> Callable:
    """Offline diagnostics on a fixed batch of relabelled dataset transitions: the critic's InfoNCE
    loss and accuracy, the deterministic actor's squared distance to the dataset action, and the
    critic's score of the actor's action against the dataset's (a policy score far above the data's
    means the actor exploits actions the critic never saw)."""

    def diagnostics(agent: Agent, batch: dict) -> dict:
        mean, _ = nets.actor.apply(agent.actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
        action = jnp.tanh(mean)
        g_repr = nets.psi.apply(agent.critic_params["psi"], batch["goal"])
        phi = lambda a: nets.phi.apply(agent.critic_params["phi"], jnp.concatenate([batch["state"], a], -1))
        sa_data = phi(batch["action"])
        _, critic_m = critic_loss_fn(sa_data, g_repr, logsumexp_penalty)
        return {"offline/critic_loss": critic_m["losses/critic"],
                "offline/critic_accuracy": critic_m["critic/categorical_accuracy"],
                "offline/bc_mse": jnp.mean(jnp.sum((action - batch["action"]) ** 2, axis=-1)),
                "offline/q_policy": jnp.mean(l2_energy_pairs(phi(action), g_repr)),
                "offline/q_data": jnp.mean(l2_energy_pairs(sa_data, g_repr))}

    return jax.jit(diagnostics)


def make_ogbench_envs(data: OfflineData, num_envs: int) -> tuple[Optional[list], Optional[str]]:
    """(envs, None) with the `ogbench` package, else (None, the note to print once)."""
    try:
        import ogbench
    except ImportError:
        return None, ("note: the ogbench package is not installed, so there is no environment evaluation: "
                      "only offline diagnostics (losses, offline/*) are logged (pip install ogbench to evaluate)")
    import gymnasium

    try:
        envs = [ogbench.make_env_and_datasets(data.env_id, env_only=True) for _ in range(num_envs)]
    except gymnasium.error.Error as e:
        raise DatasetError(f"--env-id {data.env_id}: OGBench has no such env ({e})") from e
    return envs, None


def evaluation_fn(args: Args, eval_env: Optional[VecGoalEnv], envs: Optional[list], nets: Networks) -> Optional[Callable]:
    """The evaluation of every seed, {name: [num_seeds] values}: in the brax env jitted (vmapped over the
    seeds), in OGBench's gym envs one seed after the other, or None without an env (no ogbench)."""
    if eval_env is not None:
        return jax.jit(seed_map(make_evaluate(args, eval_env, nets), args.num_seeds))
    if envs is None:
        return None
    ogbench_evaluate = make_ogbench_evaluate(args, envs, nets)

    def evaluate(actor_params, keys: jax.Array) -> dict:
        outs = [ogbench_evaluate(jax.tree.map(lambda x: x[i], actor_params), keys[i]) for i in range(args.num_seeds)]
        return {k: np.array([out[k] for out in outs]) for k in outs[0]}
    return evaluate


# ======================================== Main ====================================================
# flags a resumed run may change; every other flag comes from the run's args.json
RESUMABLE_FIELDS = ("num_gradient_steps", "num_epochs", "checkpoint_every", "track", "wandb_project_name", "wandb_entity",
                    "wandb_mode", "runs_dir", "resume", "num_devices", "estimate")
# state.msgpack holds the whole training state: every network's params and optimiser state, log(alpha),
# the training key, gradient steps, each with a leading seed axis; plus the epoch and the evaluation
# keys. Not the dataset: a resumed run reads --dataset again, and the header identifies it (path, size,
# shape, a sha256 of its arrays) so that a run is never continued on other data.
STATE_FORMAT, STATE_VERSION = "crl_depth_offline_state", 4  # 2: a seed axis on every leaf; 3: leaves by path name;
# 4: Adam on raveled parameters


def validate_args(args: Args) -> Optional[str]:
    """Returns one line describing what is wrong with args, or None (the dataset is checked later,
    by load_dataset, still before anything is compiled or written)."""
    if not args.dataset and args.resume is None:  # a resumed run's dataset comes from its args.json
        return ("--dataset is required: a buffer.npz written by crl_depth.py --save-buffer or an "
                "OGBench-format .npz")
    error = (not_positive(args, ("num_eval_envs", "num_gradient_steps", "eval_every", "num_sgd_steps", "batch_size",
                                 "obs_dim", "num_columns", "episode_length")) or args.algorithm_flags_error()
             or args.network_flags_error(depths=("depth", "actor_depth", "critic_depth"))
             or args.run_flags_error(split=("batch_size",)))
    if error:
        return error
    if not args.bc_coef >= 0:
        return f"--bc-coef must be >= 0 (got {args.bc_coef})"
    if args.batch_size < 2:
        return f"--batch-size must be at least 2: InfoNCE needs negatives (got {args.batch_size})"
    if args.window_length is not None and args.window_length < 2:
        return f"--window-length must be at least 2 (got {args.window_length})"
    if args.episode_length is not None and args.episode_length < 2:
        return f"--episode-length must be at least 2 (got {args.episode_length})"
    if (args.goal_start is None) != (args.goal_end is None):
        return "--goal-start and --goal-end go together"
    if args.goal_start is not None and not 0 <= args.goal_start < args.goal_end:
        return f"--goal-start and --goal-end must satisfy 0 <= start < end (got {args.goal_start}, {args.goal_end})"
    if args.eval_every % args.num_sgd_steps != 0:
        return f"--eval-every ({args.eval_every}) must be a multiple of --num-sgd-steps ({args.num_sgd_steps})"
    if args.num_gradient_steps % args.eval_every != 0:
        return (f"--num-gradient-steps ({args.num_gradient_steps}) must be a multiple of --eval-every "
                f"({args.eval_every})")
    return None


def settle(args: Args, saved: Optional[Args]) -> tuple[Args, Optional[str]]:
    """--num-epochs N stands for --num-gradient-steps N x eval_every (and is not kept: args.json records the
    gradient steps). With --resume (saved: the run's args.json) the run reads its dataset again from the path
    there; --num-epochs or --num-gradient-steps alone continues it. (That the checkpoint's epoch still fits
    is checked by main, once the checkpoint is read.)"""
    if saved is not None and not saved.dataset:
        return args, f"--resume {args.resume}: args.json is not a {os.path.basename(__file__)} args file (no dataset)"
    if args.num_epochs is not None:
        if args.num_epochs < 1:
            return args, f"--num-epochs must be positive (got {args.num_epochs})"
        args = dataclasses.replace(args, num_gradient_steps=args.num_epochs * args.eval_every, num_epochs=None)
    return args, None


def dataset_identity(args: Args, data: OfflineData) -> dict:
    """What identifies the dataset a run trains on: its path as given, file size, buffer-layout
    shape, relabellable transitions and a sha256 of the arrays it was loaded into."""
    digest = hashlib.sha256()
    for x in (data.state, data.action, data.episode_id):
        digest.update(np.ascontiguousarray(x).data)
    return {"dataset": args.dataset, "dataset_format": data.kind, "dataset_bytes": os.path.getsize(args.dataset),
            "dataset_shape": "x".join(str(n) for n in data.state.shape), "num_transitions": data.num_transitions,
            "dataset_sha256": digest.hexdigest()}


def state_header(args: Args, dataset: dict) -> dict:
    """What a state checkpoint must match to be loaded into a run of these args on this dataset
    (dataset: dataset_identity's dict)."""
    return {"format": STATE_FORMAT, "version": STATE_VERSION, **dataset, "env_id": args.env_id,
            "obs_dim": args.obs_dim, "goal_start": args.goal_start, "goal_end": args.goal_end,
            "window_length": args.window_length, "actor_depth": args.actor_depth or args.depth,
            "critic_depth": args.critic_depth or args.depth, "width": args.width, "repr_dim": args.repr_dim,
            "layer_norm": args.layer_norm, "activation": args.activation, "residual": args.residual,
            "num_seeds": args.num_seeds}


def describe_run(header: dict) -> str:
    size = header.get("dataset_bytes")
    return (f"dataset {header.get('dataset')} ({f'{size:,}' if isinstance(size, int) else size} bytes, shape "
            f"{header.get('dataset_shape')}, sha256 {str(header.get('dataset_sha256'))[:12]}) env "
            f"{header.get('env_id')} actor depth {header.get('actor_depth')} critic depth "
            f"{header.get('critic_depth')} width {header.get('width')}")


def build(args: Args, data: OfflineData, estimating: bool = False) -> tuple[Networks, Optimizers, Buffer]:
    """The networks, optimisers and dataset buffer of a run of args on data (estimating: the buffer's shapes alone)."""
    nets = make_networks(args.actor_depth or args.depth, args.critic_depth or args.depth, args.width, args.repr_dim,
                         data.action.shape[-1], args.layer_norm, args.activation, args.residual, args.remat,
                         args.compute_dtype, fused=args.fused_block)
    opts = Optimizers(adam(args.actor_lr), adam(args.critic_lr), adam(args.alpha_lr))
    buffer = offline_buffer(data) if not estimating else jax.eval_shape(
        lambda s, a, e: offline_buffer(data._replace(state=s, action=a, episode_id=e)), data.state, data.action,
        data.episode_id)
    return nets, opts, buffer


def programs(args: Args, data: OfflineData, nets: Networks, opts: Optimizers, ts: TrainState,
             mesh: Optional[jax.sharding.Mesh]) -> tuple[Callable, Callable, Callable, Any, Any]:
    """The epoch, the diagnostics' fixed batch (probe) and the diagnostics of every seed, jitted for a state like
    ts, and the state's shardings. Every function runs on all seeds at once (seed_map: vmap over the leading seed
    axis); the dataset buffer is not mapped (in_axes None): one copy serves every seed. The epoch donates the
    state. With several devices the whole state is replicated on every device; jit splits each batch and inserts
    the all-reduces."""
    goal_slice = (data.goal_start, data.goal_end)
    axes = TrainState(agent=0, buffer=None, key=0, gradient_steps=0)
    epoch_fn = seed_map(make_train_fns(args, nets, opts, data.action.shape[-1], goal_slice,
                                       NamedSharding(mesh, PartitionSpec(None, "batch")) if mesh else None),
                        args.num_seeds, in_axes=(axes,), out_axes=(axes, 0))
    shardings = replicated = None
    if mesh:
        shardings, replicated = state_shardings(ts, mesh, split={}), NamedSharding(mesh, PartitionSpec())
    epoch_fn = jax.jit(epoch_fn, in_shardings=shardings and (shardings,),
                       out_shardings=shardings and (shardings, replicated), donate_argnums=0)

    def probe(buf: Buffer, key_diag: jax.Array) -> dict:  # one seed's fixed batch for the diagnostics
        key_probe_sample, key_probe_shuffle = jax.random.split(key_diag)
        return jax.tree.map(lambda x: x[0], shuffle_into_batches(
            key_probe_shuffle, buffer_sample(buf, key_probe_sample, args.window_length, args.gamma, *goal_slice), 1,
            args.batch_size))

    probe_fn = jax.jit(seed_map(probe, args.num_seeds, in_axes=(None, 0)))
    diagnostics = jax.jit(seed_map(make_diagnostics(nets, args.logsumexp_penalty), args.num_seeds))
    return epoch_fn, probe_fn, diagnostics, shardings, replicated


def estimate_run(args: Args) -> dict:
    """--estimate: what the run of args would need, printed and returned (crl_estimate.estimate's report), without
    and with --remat: its programs compiled for this backend from the shapes alone. The dataset is read and
    checked; nothing is trained, allocated on the device or written."""
    args, data, eval_env, envs, _ = open_dataset(args)
    run = Run(args, args.env_id, state_header(args, dataset_identity(args, data)), describe_run, "gradient_steps")
    key, key_agent, key_diag, key_eval = seed_all(args.seed, run.seeds, 4)
    devices, mesh = device_mesh(args.num_devices, "batch")
    nets, opts, buffer = build(args, data, estimating=True)
    ts = jax.eval_shape(lambda k, kk: fresh_state(args, nets, opts, data, None, k, kk), key_agent, key).replace(
        buffer=buffer)
    epoch_fn, probe_fn, diagnostics, _, _ = programs(args, data, nets, opts, ts, mesh)
    evaluate = evaluation_fn(args, eval_env, envs, nets)
    diag_batch = jax.eval_shape(probe_fn, ts.buffer, key_diag)
    report = estimate(run.describe(run.header) + f", remat {args.remat}", {
        "actor": ts.agent.actor_params, "critic": ts.agent.critic_params}, {
        "parameters": (ts.agent.actor_params, ts.agent.critic_params, ts.agent.log_alpha),
        "optimiser states": (ts.agent.actor_opt, ts.agent.critic_opt, ts.agent.alpha_opt),
        "dataset": ts.buffer}, {
        "epoch": (epoch_fn, (ts,), args.eval_every), "diagnostics": (diagnostics, (ts.agent, diag_batch), None),
        **({"evaluation": (evaluate, (ts.agent.actor_params, key_eval), None)} if eval_env is not None else {})},
        args.num_seeds, len(devices))
    if not args.remat:  # the same run with --remat, to show what rematerialisation saves
        report = compare(report, estimate_run(dataclasses.replace(args, remat=True)), "without -> with --remat")
    return report


# the console line of an epoch: (label, metric, format, every seed's value too); a metric not logged is left out
CONSOLE = (("time at goal", "eval/time_at_goal", ".1f", True), ("success", "eval/success_any", ".2f", True),
           ("probe critic acc", "offline/critic_accuracy", ".2f", True), ("probe bc mse", "offline/bc_mse", ".3f", True),
           ("critic", "losses/critic", ".3f", False), ("acc", "critic/categorical_accuracy", ".2f", False),
           ("actor", "losses/actor", ".3f", False), ("bc", "actor/bc_mse", ".3f", False),
           ("alpha", "actor/alpha", ".3g", False), ("entropy", "actor/entropy", ".2f", False))


def main(args: Args) -> None:
    """Trains (or with --resume continues) a run of args, checked by cli() before it gets here."""
    args, data, eval_env, envs, note = open_dataset(args)  # the dataset and env, checked before any work
    actor_depth, critic_depth = args.actor_depth or args.depth, args.critic_depth or args.depth
    num_epochs = args.num_gradient_steps // args.eval_every
    run = Run(args, args.env_id, state_header(args, dataset_identity(args, data)), describe_run, "gradient_steps")
    # seeding: seed i of --num-seeds draws exactly the keys a single run with --seed seed+i draws
    key, key_agent, key_diag, key_eval = seed_all(args.seed, run.seeds, 4)
    # devices: with more than one, every SGD batch is split across them (dataset and networks replicated)
    devices, mesh = device_mesh(args.num_devices, "batch")
    nets, opts, buffer = build(args, data)

    # the training state: fresh, or with --resume the checkpoint's, checked against a fresh state before
    # anything is compiled or written (the checkpoint never holds the dataset: it is read again)
    start_epoch = 1
    if args.resume:
        shapes = jax.eval_shape(lambda: fresh_state(args, nets, opts, data, buffer, key_agent, key))
        _, ckpt_epoch, saved = run.load(lambda header: {"ts": shapes.replace(buffer=None), "key_eval": key_eval})
        if ckpt_epoch > num_epochs:
            fail(f"--num-gradient-steps {args.num_gradient_steps} ends the run at epoch {num_epochs}, before "
                 f"its checkpoint's epoch {ckpt_epoch} ({run.state_path}): give --num-epochs {ckpt_epoch} or more")
        ts, key_eval, start_epoch = saved["ts"].replace(buffer=buffer), saved["key_eval"], ckpt_epoch + 1
    else:
        ts = fresh_state(args, nets, opts, data, buffer, key_agent, key)
    epoch_fn, probe_fn, diagnostics, shardings, replicated = programs(args, data, nets, opts, ts, mesh)
    evaluate = evaluation_fn(args, eval_env, envs, nets)

    ts, key_eval = jax.tree.map(jnp.array, (ts, key_eval))  # every leaf its own copy, so ts can be donated
    buffer = None  # only ts holds the dataset now (one copy, shared by all seeds)
    if mesh:
        ts, key_eval = jax.device_put(ts, shardings), jax.device_put(key_eval, replicated)
    # a fixed batch of relabelled transitions per seed (the one a single run of that seed draws)
    print("compiling and drawing the diagnostics' fixed batch ...", flush=True)
    diag_batch = probe_fn(ts.buffer, key_diag)
    num_params = sum(x[0].size for x in jax.tree.leaves((ts.agent.actor_params, ts.agent.critic_params)))
    run.open()
    steps, columns = data.state.shape[:2]
    run.announce(f"{data.kind} dataset {args.dataset}: {steps:,} steps x {columns} columns, "
                 f"{data.num_transitions:,} relabellable transitions, window {data.window}"
                 + (f", {data.num_dropped} steps left out by the cut into columns" if data.num_dropped else "")
                 + f" | env {args.env_id} | actor depth {actor_depth} critic depth {critic_depth} width {args.width} | "
                 f"{num_params:,} params | bc coef {args.bc_coef} | {num_epochs} epochs of {args.eval_every:,} "
                 "gradient steps", len(devices), "batches", ts.gradient_steps, args.compute_dtype)
    if note:
        print(note, flush=True)
    compiled, compile_s = compile_all({
        "epoch": lambda: epoch_fn.lower(ts).compile(),
        "diagnostics": lambda: diagnostics.lower(ts.agent, diag_batch).compile(),
        **({"evaluation": lambda: evaluate.lower(ts.agent.actor_params, key_eval).compile()} if eval_env is not None
           else {})})
    compiled.setdefault("evaluation", evaluate)  # OGBench's envs (not compiled) or None

    def measure(ts: TrainState, keys: jax.Array) -> dict:
        """Diagnostics and evaluation of every seed: {name: [num_seeds] values}."""
        out = dict(jax.device_get(compiled["diagnostics"](ts.agent, diag_batch)))
        if compiled["evaluation"] is not None:
            out.update(jax.device_get(compiled["evaluation"](ts.agent.actor_params, keys)))
        return out

    def summary(m: dict) -> str:  # the console line's metrics, and the critic's preference of the policy's actions
        text = metrics_line(m, CONSOLE)
        if "offline/q_policy" in m and "offline/q_data" in m:
            q_gap = np.asarray(m["offline/q_policy"], np.float64) - np.asarray(m["offline/q_data"], np.float64)
            text += f" | q policy - q data {across_seeds(q_gap, '.3f')}"
        return text

    if not args.resume:  # epoch 0: the untrained policy, the baseline that learning must rise above
        key_eval, keys = split_seed_keys(key_eval)
        m = measure(ts, keys)
        run.log(0, ts.gradient_steps, m, {"time/compile_s": compile_s})
        print(f"epoch 0 (untrained) | {summary(m)}", flush=True)
    for epoch in range(start_epoch, num_epochs + 1):
        t_epoch = time.perf_counter()  # train an epoch
        ts, train_m = compiled["epoch"](ts)
        train_m = jax.device_get(train_m)
        steps_per_s = args.num_seeds * args.eval_every / (time.perf_counter() - t_epoch)
        key_eval, keys = split_seed_keys(key_eval)  # evaluate
        m = measure(ts, keys) | train_m
        epoch_s = time.perf_counter() - t_epoch  # log
        records = run.log(epoch, ts.gradient_steps, m, {"charts/gradient_steps_per_s": steps_per_s,
                                                        "time/epoch_s": epoch_s, "time/compile_s": compile_s})
        print(f"epoch {epoch}/{num_epochs} | gradient steps {records[0]['gradient_steps']:,} | "
              f"{steps_per_s:,.0f} steps/s | {summary(m)} | ETA {run.eta(epoch_s, num_epochs - epoch)}", flush=True)
        run.check_finite(epoch, m)  # the divergence guard: every metric, parameters included
        run.checkpoint(epoch, num_epochs,  # checkpoint (never the dataset)
                       {"ts": ts.replace(buffer=None), "key_eval": key_eval}, has_buffer=False)

    run.save_networks({"actor": ts.agent.actor_params, "critic": ts.agent.critic_params,
                       "log_alpha": ts.agent.log_alpha}, run.header, num_epochs)
    run.score({"time at goal": "eval/time_at_goal"}, args.episode_length)
    run.finish()


def cli(argv: Optional[list[str]] = None) -> Args:
    """The command line's Args; with --resume RUN_DIR the run's own, changed by the flags given."""
    return parse_args(Args, argv, validate_args, RESUMABLE_FIELDS, settle)


if __name__ == "__main__":
    args = cli()
    estimate_run(args) if args.estimate else main(args)
