"""--estimate: what a run needs from the shapes alone. The counting of FLOPs against a hand count; each
script's estimate against a state really built at the same tiny settings; --remat's effect; nothing written."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_estimate as X

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flops_count_every_scan_iteration():
    """A matmul inside a scan of length 7 inside a scan of length 3 counts 21 times, 2 m n k each (the loop
    XLA's cost analysis would count once); a while loop counts once and is reported."""
    m, k, n = 5, 6, 4

    def f(x, w):
        def inner(c, _):
            return c, c @ w
        def outer(c, _):
            return c, jax.lax.scan(inner, c, None, length=7)[1]
        return jax.lax.scan(outer, x, None, length=3)[1]

    x, w = jnp.ones((m, k)), jnp.ones((k, n))
    flops, whiles = X.jaxpr_flops(jax.make_jaxpr(f)(x, w))
    assert flops == 3 * 7 * 2 * m * n * k and whiles == 0
    g = lambda x: jax.lax.while_loop(lambda c: c[0] < 10, lambda c: (c[0] + 1, c[1] @ jnp.ones((k, k))), (0, x))[1]
    flops, whiles = X.jaxpr_flops(jax.make_jaxpr(g)(x))
    assert whiles == 1 and flops >= 2 * m * k * k


def test_tree_bytes_and_size():
    tree = {"a": jax.ShapeDtypeStruct((3, 4), jnp.float32), "b": [np.zeros((2,), np.int8), jnp.zeros((5,), jnp.bfloat16)]}
    assert X.tree_size(tree) == 12 + 2 + 5
    assert X.tree_bytes(tree) == 12 * 4 + 2 * 1 + 5 * 2
