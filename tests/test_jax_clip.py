"""steadystep.jax clipping: invariants, jit and optax.chain, parity with optax and torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import steadystep.jax as ssj  # noqa: E402

RNG = np.random.default_rng(0)
# a few gradient pytrees of growing size, one with a norm spike at index 6
SHAPES = {"w": (3, 4), "b": (4,), "k": (2, 3, 2)}
GRADS = [
    {
        k: (RNG.standard_normal(s) * (30.0 if i == 6 else 1.0 + 0.1 * i)).astype(np.float32)
        for k, s in SHAPES.items()
    }
    for i in range(10)
]
PARAMS = {k: RNG.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _tree(x: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: jnp.asarray(v) for k, v in x.items()}


def _norm(tree: Any) -> float:
    return float(
        np.sqrt(
            sum(float(np.sum(np.square(np.asarray(v, np.float64)))) for v in jax.tree.leaves(tree))
        )
    )


def _run(tx: optax.GradientTransformation, grads: list[Any], params: Any = None) -> list[Any]:
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for g in grads:
        u, state = update(_tree(g), state, params)
        out.append(u)
    return out


# -- global norm --------------------------------------------------------------------------------
def test_clip_by_global_norm_invariants_and_optax_parity() -> None:
    g = _tree(GRADS[0])
    norm = _norm(g)
    tx = ssj.clip_by_global_norm(1.0)
    (clipped,) = _run(tx, [GRADS[0]])
    assert _norm(clipped) == pytest.approx(1.0, rel=1e-6)  # norm after clipping = bound
    (twice,) = _run(tx, [{k: np.asarray(v) for k, v in clipped.items()}])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), twice, clipped
    )  # idempotent
    (same,) = _run(ssj.clip_by_global_norm(norm * 10), [GRADS[0]])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), same, g)  # big bound: unchanged
    reference, _ = optax.clip_by_global_norm(1.0).update(g, optax.EmptyState())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), clipped, reference)
    (golden,) = _run(tx, [{"a": np.array([3.0], np.float32), "b": np.array([4.0], np.float32)}])
    assert [float(golden["a"][0]), float(golden["b"][0])] == pytest.approx([0.6, 0.8], rel=1e-6)


def test_clip_by_global_norm_in_chain_under_jit_with_bf16() -> None:
    opt = optax.chain(ssj.clip_by_global_norm(0.5), optax.sgd(1.0))
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    state = opt.init(params)
    u, state = jax.jit(opt.update)({"w": jnp.full(4, 100.0, jnp.bfloat16)}, state, params)
    assert u["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(u["w"], np.float32), -0.25, rtol=1e-2)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_nonfinite_policies(bad: float) -> None:
    g = {"a": np.array([1.0, bad], np.float32), "b": np.array([2.0], np.float32)}
    (prop,) = _run(ssj.clip_by_global_norm(1.0), [g])
    assert np.all(np.isnan(np.asarray(prop["a"]))) and np.all(np.isnan(np.asarray(prop["b"])))
    (skip,) = _run(ssj.clip_by_global_norm(1.0, nonfinite="skip"), [g])
    assert all(np.all(np.asarray(v) == 0) for v in skip.values())


def test_torch_parity_global_norm_and_agc() -> None:
    torch = pytest.importorskip("torch")
    from steadystep.torch import AGC, clip_grad_norm_

    tensors = {k: torch.nn.Parameter(torch.tensor(PARAMS[k])) for k in SHAPES}
    for k, p in tensors.items():
        p.grad = torch.tensor(GRADS[3][k])
    total = clip_grad_norm_(list(tensors.values()), 2.0)
    (u,) = _run(ssj.clip_by_global_norm(2.0), [GRADS[3]])
    assert float(total) == pytest.approx(_norm(_tree(GRADS[3])), rel=1e-6)
    for k, p in tensors.items():  # torch: max_norm / (norm + 1e-6); TF/optax: / max(norm, .)
        np.testing.assert_allclose(np.asarray(u[k]), p.grad.numpy(), rtol=1e-5)

    for k, p in tensors.items():
        p.grad = torch.tensor(GRADS[3][k]) * 0.05
    AGC(list(tensors.values()), clipping=0.05).clip()
    tx = ssj.adaptive_grad_clip(0.05, output_axis=0)  # torch layout: dim 0 is the output unit
    small = {k: v * np.float32(0.05) for k, v in GRADS[3].items()}
    (u,) = _run(tx, [small], _tree(PARAMS))
    for k, p in tensors.items():
        np.testing.assert_allclose(np.asarray(u[k]), p.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert not np.allclose(np.asarray(u["w"]), small["w"])  # something was clipped


def test_agc_flax_layout_and_needs_params() -> None:
    w = jnp.array([[3.0, 0.0], [4.0, 1.0]])  # [in, out]: unit norms 5 and 1
    g = jnp.array([[3.0, 0.0], [4.0, 0.001]])  # unit 0 has norm 5 > 0.01 * 5
    u, _ = ssj.adaptive_grad_clip(0.01).update(g, optax.EmptyState(), w)
    np.testing.assert_allclose(np.asarray(u), [[0.03, 0.0], [0.04, 0.001]], rtol=1e-6)
    with pytest.raises(ValueError, match="params=None"):
        ssj.adaptive_grad_clip().update(g, optax.EmptyState())


# -- adaptive rules: same thresholds as the torch clippers over a run ----------------------------
def _torch_run(make: Any, grads: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES.values()]
    clipper = make(params)
    out = []
    for g in grads:
        for p, k in zip(params, SHAPES, strict=True):
            p.grad = torch.tensor(g[k])
        clipper.clip()
        out.append({k: p.grad.numpy().copy() for p, k in zip(params, SHAPES, strict=True)})
    return out


@pytest.mark.parametrize(
    ("jax_tx", "torch_name", "kwargs"),
    [
        (ssj.autoclip, "AutoClip", {"percentile": 25.0, "history": 8}),
        (ssj.zclip, "ZClip", {"warmup_steps": 3, "z_thresh": 2.0}),
        (ssj.zclip, "ZClip", {"warmup_steps": 3, "mode": "percentile", "alpha": 0.9}),
    ],
)
def test_adaptive_rules_match_torch(jax_tx: Any, torch_name: str, kwargs: dict[str, Any]) -> None:
    import steadystep.torch as sst

    want = _torch_run(lambda ps: getattr(sst, torch_name)(ps, **kwargs), GRADS)
    got = _run(jax_tx(**kwargs), GRADS)
    for w, g in zip(want, got, strict=True):
        for k in SHAPES:
            np.testing.assert_allclose(np.asarray(g[k]), w[k], rtol=2e-5, atol=1e-7)
    assert _norm(got[6]) < 0.5 * _norm(_tree(GRADS[6]))  # the spike was clipped


def test_autoclip_golden_percentile() -> None:
    got = _run(
        ssj.autoclip(percentile=50.0, history=8),
        [{"a": np.array([n], np.float32)} for n in (1.0, 3.0, 2.0)],
    )
    assert [float(u["a"][0]) for u in got] == pytest.approx([1.0, 2.0, 2.0], rel=1e-5)


# -- spike skip: the whole optimizer step is skipped ---------------------------------------------
def test_spike_skip_leaves_params_and_adam_state_untouched() -> None:
    opt = ssj.spike_skip(optax.adam(0.1), window=8, sigma=3.0, min_history=3)
    params = _tree(PARAMS)
    state = opt.init(params)
    update = jax.jit(opt.update)
    for i, g in enumerate(GRADS):
        before = state
        u, state = update(_tree(g), state, params)
        params = optax.apply_updates(params, u)
        spiked = i == 6
        assert bool(jnp.all(jax.tree.leaves(u)[0] == 0)) == spiked
        if spiked:
            jax.tree.map(
                lambda a, b: np.testing.assert_array_equal(a, b),
                state.inner_state,
                before.inner_state,
            )
    assert int(state.skipped) == 1
    assert int(state.inner_state[0].count) == len(GRADS) - 1  # adam counted only real updates
    nan = {k: np.full(s, np.nan, np.float32) for k, s in SHAPES.items()}
    u, state2 = update(_tree(nan), state, params)  # non-finite: always skipped
    assert int(state2.skipped) == 2 and all(bool(jnp.all(v == 0)) for v in jax.tree.leaves(u))


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda: ssj.clip_by_global_norm(-1.0),
            ValueError,
            r"`max_norm` must be > 0.*max_norm=-1.0",
        ),
        (lambda: ssj.clip_by_global_norm("1"), TypeError, "`max_norm`"),
        (lambda: ssj.clip_by_global_norm(1.0, nonfinite="raise"), ValueError, "under jax.jit"),
        (lambda: ssj.clip_by_global_norm(1.0, nonfinite="zero"), ValueError, "nonfinite='zero'"),
        (lambda: ssj.adaptive_grad_clip(0.0), ValueError, "`clipping`"),
        (lambda: ssj.adaptive_grad_clip(0.1, eps=-1.0), ValueError, "`eps`"),
        (lambda: ssj.adaptive_grad_clip(0.1, output_axis=1.5), TypeError, "`output_axis`"),
        (lambda: ssj.autoclip(percentile=150.0), ValueError, "`percentile`"),
        (lambda: ssj.autoclip(history=0), ValueError, "`size`|`history`"),
        (lambda: ssj.zclip(alpha=1.5), ValueError, "`alpha`"),
        (lambda: ssj.zclip(mode="median"), ValueError, "`mode`"),
        (lambda: ssj.spike_skip(lambda g: g), TypeError, "`inner`"),
        (lambda: ssj.spike_skip(optax.sgd(1.0), sigma=0.0), ValueError, "`sigma`"),
        (lambda: ssj.spike_skip(optax.sgd(1.0), min_history=1), ValueError, "`min_history`"),
    ],
)
def test_bad_arguments(make: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make()
