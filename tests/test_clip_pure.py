"""steadystep.clip: TensorFlow-semantics clipping and the adaptive rules' pure maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from steadystep import clip

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
tensor_lists = st.lists(
    arrays(np.float64, st.integers(1, 6), elements=finite), min_size=1, max_size=4
)


def test_import_does_not_load_frameworks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, steadystep.clip; "
        "print(any(m in sys.modules for m in ('torch', 'jax', 'tensorflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_global_norm_formula_from_seed() -> None:
    ts = [np.array([1.0, 2.0]), np.array([[2.0], [4.0]])]
    expected = math.sqrt(sum(float(np.sum(t**2)) for t in ts))  # sqrt(sum(l2norm(t)**2))
    assert float(clip.global_norm(ts)) == pytest.approx(expected, rel=1e-15)
    assert float(clip.global_norm([])) == 0.0


@pytest.mark.parametrize("p", [1.0, 3.0, math.inf])
def test_global_norm_p_matches_concatenation(p: float) -> None:
    ts = [np.array([1.0, -2.0]), np.array([3.0, -0.5, 4.0])]
    flat = np.concatenate(ts)
    assert float(clip.global_norm(ts, norm_type=p)) == pytest.approx(np.linalg.norm(flat, p))


def test_clip_by_global_norm_golden_and_none_passthrough() -> None:
    out, norm = clip.clip_by_global_norm([np.array([3.0]), None, np.array([4.0])], 2.5)
    assert float(norm) == 5.0
    assert out[1] is None
    np.testing.assert_allclose(out[0], [1.5])
    np.testing.assert_allclose(out[2], [2.0])


def test_clip_by_global_norm_use_norm() -> None:
    out, norm = clip.clip_by_global_norm([np.array([1.0])], 1.0, use_norm=np.float64(4.0))
    assert float(norm) == 4.0
    np.testing.assert_allclose(out[0], [0.25])


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_norm_gives_nan_as_tensorflow(bad: float) -> None:
    out, norm = clip.clip_by_global_norm([np.array([1.0, bad]), np.array([2.0])], 1.0)
    assert not np.isfinite(float(norm))
    assert all(np.isnan(t).all() for t in out)


@settings(max_examples=60, deadline=None)
@given(tensor_lists, st.floats(1e-3, 1e3))
def test_invariants(ts: list[np.ndarray], c: float) -> None:
    out, norm = clip.clip_by_global_norm(ts, c)
    after = float(clip.global_norm(out))
    assert after <= c * (1 + 1e-9) + 1e-12
    if float(norm) > c:
        assert after == pytest.approx(c, rel=1e-9)  # norm after clipping equals the bound
    twice, _ = clip.clip_by_global_norm(out, c)
    for a, b in zip(out, twice, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)  # clipping twice == once
    same, _ = clip.clip_by_global_norm(ts, 1e12)
    for a, b in zip(ts, same, strict=True):
        np.testing.assert_array_equal(a, b)  # a huge bound changes nothing


def test_half_precision_accumulates_in_float32() -> None:
    t = np.full(70_000, 1.0, dtype=np.float16)  # sum of squares overflows float16 (max 65504)
    norm = clip.global_norm([t])
    assert norm.dtype == np.float32
    assert float(norm) == pytest.approx(math.sqrt(70_000), rel=1e-6)
    out, _ = clip.clip_by_global_norm([t], 1.0)
    assert out[0].dtype == np.float16


def test_torch_and_jax_agree_with_numpy() -> None:
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    import jax

    ts = [np.array([3.0, 1.0], np.float32), np.array([[4.0, 2.0]], np.float32)]
    ref, ref_norm = clip.clip_by_global_norm(ts, 2.0)
    t_out, t_norm = clip.clip_by_global_norm([torch.from_numpy(t) for t in ts], 2.0)
    j_out, j_norm = jax.jit(lambda xs: clip.clip_by_global_norm(xs, 2.0))(
        [jnp.asarray(t) for t in ts]
    )
    for got, norm in ((t_out, t_norm), (j_out, j_norm)):
        assert float(norm) == pytest.approx(float(ref_norm), rel=1e-6)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6)
    bf = torch.ones(70_000, dtype=torch.bfloat16)
    assert clip.global_norm([bf]).dtype == torch.float32


def test_clip_by_norm_axes_and_value() -> None:
    x = np.array([[3.0, 4.0], [0.3, 0.4]])
    np.testing.assert_allclose(clip.clip_by_norm(x, 1.0), x / np.linalg.norm(x))
    np.testing.assert_allclose(clip.clip_by_norm(x, 1.0, axes=1), [[0.6, 0.8], [0.3, 0.4]])
    np.testing.assert_array_equal(clip.clip_by_value(x, 0.35, 1.0), np.clip(x, 0.35, 1.0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: clip.clip_by_global_norm([np.ones(1)], -1.0), "clip_norm=-1.0"),
        (lambda: clip.clip_by_global_norm([np.ones(1)], math.nan), "clip_norm=nan"),
        (lambda: clip.clip_by_norm(np.ones(1), 0), "Argument `clip_norm` must be > 0"),
        (lambda: clip.global_norm([np.ones(1)], norm_type=0), "norm_type=0"),
        (lambda: clip.clip_by_value(np.ones(1), 2.0, 1.0), "clip_value_min=2.0"),
        (lambda: clip.autoclip_step(clip.autoclip_init(2), 1.0, percentile=101), "percentile"),
        (lambda: clip.zclip_step(clip.zclip_init(), 1.0, alpha=1.5), "alpha=1.5"),
        (lambda: clip.history_init(0), "size=0"),
        (lambda: clip.agc_scale(np.ones(2), np.ones(2), clipping=-1), "clipping=-1"),
    ],
)
def test_bad_input_names_argument(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        call()  # type: ignore[operator]


# ------------------------------------------------------------------ rules


def test_unitwise_norm_layouts() -> None:
    w = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(clip.unitwise_norm(w).ravel(), np.linalg.norm(w, axis=1))
    np.testing.assert_allclose(
        clip.unitwise_norm(w, output_axis=-1).ravel(), np.linalg.norm(w, axis=0)
    )
    assert float(clip.unitwise_norm(np.array([3.0, 4.0]))) == 5.0


def test_agc_formula() -> None:
    rng = np.random.default_rng(0)
    w, g = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    out = clip.adaptive_grad_clip(g, w, clipping=0.1, eps=1e-3)
    wn = np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-3)
    gn = np.linalg.norm(g, axis=1, keepdims=True)
    expected = np.where(gn / wn > 0.1, g * 0.1 * wn / gn, g)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    # zero weights: eps keeps a minimum step
    out0 = clip.adaptive_grad_clip(np.ones(4), np.zeros(4), clipping=0.01, eps=1e-3)
    assert np.linalg.norm(out0) == pytest.approx(1e-5)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.0, 1e4, allow_nan=False, width=32), min_size=1, max_size=30),
    st.integers(1, 8),
    st.floats(0.0, 100.0),
)
def test_autoclip_percentile_matches_numpy(xs: list[float], size: int, q: float) -> None:
    state = clip.autoclip_init(size)
    for x in xs:
        state, thr = clip.autoclip_step(state, np.float32(x), percentile=q)
    window = np.asarray(xs, np.float32)[-size:]
    assert float(thr) == pytest.approx(float(np.percentile(window, q)), rel=1e-5, abs=1e-5)


def test_history_ignores_non_finite() -> None:
    h = clip.history_init(3)
    for x in [1.0, math.inf, 2.0, math.nan]:
        h = clip.history_push(h, np.float32(x))
    assert int(h.count) == 2
    assert float(clip.history_percentile(clip.history_init(3), 50.0)) == math.inf


def _zclip_reference(norms: list[float], alpha: float, z: float, warm: int) -> list[float | None]:
    """Straight transcription of the paper's algorithm (buffer, then EMA of clipped norms)."""
    buf: list[float] = []
    mean = var = 0.0
    out: list[float | None] = []
    for g in norms:
        if len(buf) < warm:
            buf.append(g)
            if len(buf) == warm:
                mean = sum(buf) / warm
                var = sum((b - mean) ** 2 for b in buf) / warm
            out.append(None)
            continue
        std = var**0.5
        zs = (g - mean) / (std + 1e-6)
        thr = mean + z * std / (zs / z) if zs > z else None
        out.append(thr)
        eff = thr if thr is not None else g
        mean = alpha * mean + (1 - alpha) * eff
        var = alpha * var + (1 - alpha) * (eff - mean) ** 2
    return out


def test_zclip_matches_reference() -> None:
    rng = np.random.default_rng(1)
    norms = list(1.0 + 0.1 * rng.standard_normal(80))
    norms[40] = 9.0
    norms[60] = 4.0
    ref = _zclip_reference(norms, 0.97, 2.5, 25)
    state = clip.zclip_init()
    for g, r in zip(norms, ref, strict=True):
        state, thr = clip.zclip_step(state, np.float32(g))
        if r is None:
            assert float(thr) == math.inf
        else:
            assert float(thr) == pytest.approx(r, rel=1e-4)
    assert ref[40] is not None and ref[60] is not None


def test_zclip_under_jit() -> None:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    step = jax.jit(lambda s, x: clip.zclip_step(s, x, warmup_steps=3))
    state = clip.zclip_init(like=jnp.zeros(()))
    thrs = []
    for x in [1.0, 1.1, 0.9, 10.0]:
        state, thr = step(state, jnp.float32(x))
        thrs.append(float(thr))
    assert thrs[:3] == [math.inf] * 3
    assert 1.0 < thrs[3] < 1.1


def test_spike_matches_olmo_rule() -> None:
    rng = np.random.default_rng(2)
    xs = list(1.0 + 0.05 * rng.standard_normal(40))
    state = clip.spike_init(16)
    for i, x in enumerate(xs):
        prev = np.asarray(xs[max(0, i - 16) : i], np.float32)
        state, spike = clip.spike_step(state, np.float32(x), sigma=3.0, min_history=8)
        expected = len(prev) >= 8 and abs(x - prev.mean()) > 3.0 * prev.std(ddof=1)
        assert bool(spike) == expected
    state, spike = clip.spike_step(state, np.float32(5.0), sigma=3.0, min_history=8)
    assert bool(spike)
    state, spike = clip.spike_step(state, np.float32(math.nan), sigma=3.0, min_history=8)
    assert bool(spike)
