"""The last pre-clip norm, readable from the JAX clip transforms' state (under jit too)."""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import steadystep.jax as ssj  # noqa: E402


def test_last_norm_from_clip_by_global_norm_under_jit() -> None:
    tx = optax.chain(ssj.clip_by_global_norm(1.0), optax.adam(1e-3))
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    state = tx.init(params)
    assert float(ssj.last_norm(state)) == 0.0
    step = jax.jit(tx.update)
    for g in (3.0, 12.0):
        grads = {"w": jnp.array([g, 0.0]), "b": jnp.array(g * 4 / 3)}
        updates, state = step(grads, state, params)
        assert float(ssj.last_norm(state)) == pytest.approx(g * 5 / 3)
    # the updates are still clipped
    updates, state = ssj.clip_by_global_norm(1.0).update({"w": jnp.array([3.0, 4.0])}, state[0])
    assert float(jnp.linalg.norm(updates["w"])) == pytest.approx(1.0)
    assert float(state.norm) == 5.0


def test_last_norm_from_autoclip_and_none_for_zclip() -> None:
    tx = ssj.autoclip(percentile=50.0, history=2)
    state = tx.init(None)
    for g in (1.0, 3.0, 2.0):  # wraps around the ring buffer
        _, state = tx.update(jnp.array([g]), state)
    assert float(ssj.last_norm(state)) == 2.0
    z = ssj.zclip()
    assert ssj.last_norm(z.init(None)) is None
    assert float(ssj.last_norm(optax.chain(z, ssj.clip_by_global_norm(1.0)).init(None))) == 0.0
