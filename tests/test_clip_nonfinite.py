"""Non-finite and overflowing gradients, tensor ``max_norm``, and armed skips/folds that outlive
their step (issue 12): adversarial cases against torch on a plain twin and fp64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
import steadystep.torch as sst  # noqa: E402
from steadystep.torch import _clip  # noqa: E402

INF, NAN = math.inf, math.nan


def _params(*grads: list[float] | torch.Tensor, dtype: torch.dtype = torch.float32) -> list:
    out = []
    for g in grads:
        g = torch.as_tensor(g, dtype=dtype)
        p = torch.nn.Parameter(torch.ones_like(g))
        p.grad = g.clone()
        out.append(p)
    return out


def _ref_norm(grads: list[torch.Tensor], p: float) -> float:
    """fp64 reference, itself scaled so that it cannot overflow."""
    flat = torch.cat([g.detach().double().flatten() for g in grads])
    m = float(flat.abs().max())
    if m == 0 or math.isinf(p):
        return m
    return m * float(torch.linalg.vector_norm(flat / m, p))


# ------------------------------------------------- NaN/inf under "propagate"


def _timm_agc(params: list, clipping: float = 0.01, eps: float = 1e-3) -> None:
    """timm's adaptive_clip_grad (timm/utils/agc.py, commit aa4b5850), rewritten from its
    formula: per output unit, g * (max_norm / max(||g||, 1e-6)) unless ||g|| < max_norm."""

    def unit(x: torch.Tensor) -> torch.Tensor:
        if x.ndim <= 1:
            return x.norm(2)
        return x.norm(2, dim=tuple(range(1, x.ndim)), keepdim=True)

    for p in params:
        max_norm = unit(p.detach()).clamp(min=eps) * clipping
        g_norm = unit(p.grad)
        clipped = p.grad * (max_norm / g_norm.clamp(min=1e-6))
        p.grad.copy_(torch.where(g_norm < max_norm, p.grad, clipped))


def _agc_twins() -> tuple[list, list]:
    def make() -> list:
        torch.manual_seed(0)
        ws = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
        ws.append(torch.nn.Parameter(torch.randn(2, 3)))
        for w in ws:
            w.grad = torch.randn_like(w) * 10
        ws[0].grad[1, 2] = INF  # one unit of one parameter
        return ws

    return make(), make()


def test_agc_inf_in_one_unit_leaves_the_rest_alone_as_timm() -> None:
    ours, theirs = _agc_twins()
    norm = sst.AGC(ours).clip()
    _timm_agc(theirs)
    assert math.isinf(float(norm))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, equal_nan=True)
    assert torch.isfinite(ours[1].grad).all() and torch.isfinite(ours[2].grad).all()
    assert torch.isfinite(ours[0].grad[[0, 2]]).all()  # the other units of that parameter too
    assert ours[0].grad[1, 2].isnan() and (ours[0].grad[1, [0, 1, 3]] == 0).all()


def test_agc_nan_unit_is_left_as_it_is() -> None:
    """Decided: a NaN unit norm gets factor 1 (its finite elements stay finite; timm
    multiplies the whole unit by NaN). Every other unit is clipped as usual."""
    ours, theirs = _agc_twins()
    for ws in (ours, theirs):
        ws[0].grad[1, 2] = NAN
    sst.AGC(ours).clip()
    _timm_agc(theirs)
    before = _agc_twins()[0][0].grad[1]
    assert torch.equal(ours[0].grad[1, [0, 1, 3]], before[[0, 1, 3]])
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(ours[0].grad[[0, 2]], theirs[0].grad[[0, 2]])


@pytest.mark.parametrize("bad", [INF, NAN])
def test_an_inf_threshold_never_turns_finite_gradients_into_nan(bad: float) -> None:
    """AutoClip's first call and ZClip's warm-up have threshold inf: nothing is enforced,
    whatever the norm (inf / inf was NaN on every parameter)."""
    for make in (lambda ps: sst.AutoClip(ps), lambda ps: sst.ZClip(ps), lambda ps: sst.AGC(ps)):
        ps = _params([1.0, bad, 2.0], [[3.0, 4.0]])
        opt = torch.optim.SGD(ps, lr=0.1)
        make(ps).clip()
        assert torch.isfinite(ps[1].grad).all()
        opt.step()
        assert torch.isfinite(ps[1]).all()


@pytest.mark.parametrize("bad", [INF, NAN])
def test_a_finite_threshold_over_a_non_finite_norm_is_torchs_coefficient(bad: float) -> None:
    """AutoClip with a history: threshold finite, norm inf -> 0, norm NaN -> NaN, as
    torch.nn.utils.clip_grad_norm_ with that threshold on a plain twin."""
    ours = _params([1.0, 2.0], [[3.0]])
    clipper = sst.AutoClip(ours, percentile=50.0)
    clipper.clip()
    threshold = float(clipper.last.threshold)
    for p in ours:
        p.grad = torch.full_like(p, 1.0)
    ours[0].grad[1] = bad
    theirs = _params(ours[0].grad, ours[1].grad)
    clipper.clip()
    assert float(clipper.last.threshold) == threshold  # the bad norm is not recorded
    torch.nn.utils.clip_grad_norm_(theirs, threshold)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, equal_nan=True)


def test_jax_adaptive_clippers_keep_finite_updates_finite() -> None:
    jnp = pytest.importorskip("jax.numpy")
    import steadystep.jax as ssj

    for tx in (ssj.autoclip(), ssj.zclip()):
        updates = {"a": jnp.array([1.0, jnp.inf]), "b": jnp.ones(2)}
        out, _ = tx.update(updates, tx.init(None))
        assert bool(jnp.isfinite(out["b"]).all()) and float(out["a"][0]) == 1.0


# ---------------------------------------------------------------- overflow


@pytest.mark.parametrize("value", [1e20, 1e30, 3e38])
def test_fp32_gradients_whose_squares_overflow_have_a_finite_norm(value: float) -> None:
    ps = _params([value] * 4, [value / 2] * 3, [1.0])
    want = _ref_norm([p.grad for p in ps], 2.0)
    if want > torch.finfo(torch.float32).max:  # the norm itself is not an fp32 number
        assert math.isinf(float(sst.clip_grad_norm_(ps, 1.0)))
        return
    norm = sst.clip_grad_norm_(ps, 1.0)
    assert float(norm) == pytest.approx(want, rel=1e-6)
    after = _ref_norm([p.grad for p in ps], 2.0)
    assert after == pytest.approx(1.0, rel=1e-5)  # clipped to max_norm, not zeroed


def test_overflowing_sum_of_per_tensor_norms_is_finite() -> None:
    ps = _params(*([[1e19, 1e19]] * 50))  # each tensor's norm fits, their total's square not
    assert float(sst.clip_grad_norm_(ps, 1.0)) == pytest.approx(1e20, rel=1e-6)


def test_bf16_gradients_near_the_maximum() -> None:
    big = float(torch.finfo(torch.bfloat16).max) / 4
    ps = _params([big, -big, big / 2], [[big]], dtype=torch.bfloat16)
    want = _ref_norm([p.grad for p in ps], 2.0)
    norm = sst.clip_grad_norm_(ps, 1.0)
    assert norm.dtype == torch.float32 and float(norm) == pytest.approx(want, rel=1e-6)
    assert torch.isfinite(ps[0].grad).all() and float(ps[0].grad.float().abs().max()) > 0


def test_tiny_gradients_do_not_underflow_to_zero() -> None:
    ps = _params([1e-30, 2e-30], [[3e-25]])
    want = _ref_norm([p.grad for p in ps], 2.0)
    assert float(sst.clip_grad_norm_(ps, 1.0)) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("p", [1e3, 1e4, 1e6, INF, 3.0, 1.0])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_large_norm_types_neither_overflow_nor_underflow(p: float, scale: float) -> None:
    ps = _params(torch.linspace(0.1, 4.0, 50) * scale, [[2.5 * scale, -3.9 * scale]])
    want = _ref_norm([q.grad for q in ps], p)
    got = float(sst.clip_grad_norm_(ps, 1e9, p))
    assert got == pytest.approx(want, rel=1e-5)


def test_normal_ranges_are_torchs_numbers_bit_for_bit() -> None:
    for p in (2.0, 1.0, 3.0, INF):
        torch.manual_seed(1)
        ps = _params(*(torch.randn(n) for n in (7, 300, 1)), torch.zeros(4))
        twin = _params(*(q.grad for q in ps))
        assert torch.equal(
            sst.clip_grad_norm_(ps, 0.5, p), torch.nn.utils.clip_grad_norm_(twin, 0.5, p)
        )
        for a, b in zip(ps, twin, strict=True):
            assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 1e3])
@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_the_sync_free_accelerator_paths_agree(p: float, device: str) -> None:
    """The accelerator branches of the norm (fp64 sums on CUDA for p = 1, 2; plain and
    scaled chosen on device otherwise) run here on CPU tensors: same numbers, no host read."""
    for values in ([1e30, 2e30, 3.0], [1e-30, 5e-31], [0.5, -0.25, 0.125], [0.0, 0.0]):
        grads = [torch.tensor(values), torch.tensor([v / 3 for v in values])]
        got = _clip._tensor_norms(grads, p, torch.device(device), torch.float32, False)
        for g, n in zip(grads, got, strict=True):
            assert float(n) == pytest.approx(_ref_norm([g], p), rel=1e-6)


def test_clippers_report_a_finite_norm_for_overflowing_gradients() -> None:
    for make in (sst.AutoClip, sst.ZClip, sst.AGC, lambda ps: sst.SpikeSkip(ps, window=4)):
        ps = _params([1e30, 1e30])
        assert float(make(ps).clip()) == pytest.approx(math.sqrt(2) * 1e30, rel=1e-6)
        assert torch.isfinite(ps[0].grad).all()


def test_agc_unit_norms_do_not_overflow() -> None:
    w = torch.nn.Parameter(torch.ones(2, 3))
    w.grad = torch.tensor([[1e30, 1e30, 1e30], [0.001, 0.0, 0.0]])
    sst.AGC([w], clipping=0.01).clip()
    row = torch.linalg.vector_norm(w.grad[0].double())
    assert float(row) == pytest.approx(0.01 * math.sqrt(3), rel=1e-5)  # clipped, not zeroed
    assert w.grad[1, 0] == pytest.approx(0.001)


@pytest.mark.parametrize("xp", ["numpy", "torch", "jax"])
def test_pure_layer_norms_are_overflow_safe(xp: str) -> None:
    if xp == "jax":
        mk = pytest.importorskip("jax.numpy").asarray
    else:
        mk = np.asarray if xp == "numpy" else torch.as_tensor
    big = mk(np.full(4, 1e30, np.float32))
    assert float(ss.clip.global_norm([big, mk(np.ones(2, np.float32))])) == pytest.approx(2e30)
    assert float(ss.clip.global_norm([mk(np.full(3, 1e-30, np.float32))])) == pytest.approx(
        math.sqrt(3) * 1e-30
    )
    v = mk(np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    assert float(ss.clip.global_norm([v], norm_type=1e3)) == pytest.approx(4.0, rel=1e-6)
    assert float(ss.clip.global_norm([v / 10], norm_type=1e4)) == pytest.approx(0.4, rel=1e-6)
    clipped, _ = ss.clip.clip_by_global_norm([big], 1.0)
    assert [round(float(x), 6) for x in clipped[0]] == [0.5] * 4
    assert np.allclose(np.asarray(ss.clip.clip_by_norm(big, 1.0)), 0.5)
    rows = ss.clip.unitwise_norm(mk(np.array([[1e30, 1e30], [3.0, 4.0]], np.float32)))
    assert np.allclose(np.asarray(rows).ravel(), [math.sqrt(2) * 1e30, 5.0])
    for bad, want in ((INF, INF), (NAN, NAN)):
        got = float(ss.clip.global_norm([mk(np.array([bad, 1.0], np.float32))]))
        assert got == want or (math.isnan(got) and math.isnan(want))


def test_optax_transforms_are_overflow_safe() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    import steadystep.jax as ssj

    updates = {"a": jnp.full(4, 1e30, jnp.float32), "b": jnp.ones(3, jnp.bfloat16)}
    tx = ssj.clip_by_global_norm(1.0)
    out, _ = jax.jit(tx.update)(updates, tx.init(None))
    assert np.allclose(np.asarray(out["a"]), 0.5)
    for tx in (ssj.autoclip(percentile=50.0), ssj.zclip(warmup_steps=1)):
        state = tx.init(None)
        for _ in range(3):
            out, state = jax.jit(tx.update)(updates, state)
        assert bool(jnp.isfinite(out["a"]).all())
    assert float(ssj._clip._norm(updates)) == pytest.approx(2e30, rel=1e-6)
    small = {"a": jnp.array([3.0, 4.0])}
    assert float(jax.jit(ssj._clip._norm)(small)) == 5.0


# ------------------------------------------------------------ tensor max_norm


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_one_element_max_norm_tensors_work_like_a_float(shape: tuple[int, ...]) -> None:
    ours, theirs = _params([3.0, 4.0]), _params([3.0, 4.0])
    norm = sst.clip_grad_norm_(ours, torch.full(shape, 1.0))
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert norm.shape == () and float(norm) == 5.0
    assert torch.equal(ours[0].grad, theirs[0].grad)
    res = sst.clip_grad_norm_(ours, torch.full(shape, 1.0), return_result=True)
    assert res.threshold.shape == () and res.coefficient.shape == ()


@pytest.mark.parametrize(
    ("max_norm", "error", "match"),
    [
        (torch.tensor([1.0, 2.0]), ValueError, r"one-element.*shape \(2,\)"),
        (torch.tensor([]), ValueError, "one-element"),
        (torch.tensor(-1.0), ValueError, r"`max_norm` must be > 0.*-1"),
        (torch.tensor([0.0]), ValueError, "`max_norm` must be > 0"),
        (torch.tensor(NAN), ValueError, "`max_norm`.*nan"),
        (torch.tensor(INF), ValueError, "`max_norm`"),
        (torch.tensor(True), TypeError, "`max_norm`.*bool"),
        (torch.tensor(1 + 1j), TypeError, "`max_norm`.*complex"),
        (torch.ones((), device="meta"), ValueError, "`max_norm`.*meta"),
    ],
)
def test_bad_max_norm_tensors_are_refused_untouched(max_norm, error, match) -> None:
    ps = _params([3.0, 4.0])
    with pytest.raises(error, match=match):
        sst.clip_grad_norm_(ps, max_norm)
    assert ps[0].grad.tolist() == [3.0, 4.0]


def test_an_integer_max_norm_tensor_and_one_that_needs_grad() -> None:
    ps = _params([3.0, 4.0])
    assert float(sst.clip_grad_norm_(ps, torch.tensor(1))) == 5.0
    ps = _params([3.0, 4.0])
    sst.clip_grad_norm_(ps, torch.tensor(1.0, requires_grad=True))
    assert ps[0].grad.tolist() == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize("bad", [-1.0, 0.0, NAN])
def test_an_unread_device_max_norm_with_a_bad_value_is_never_applied(bad: float) -> None:
    """On an accelerator the value is not read (no sync): a max_norm that is not > 0
    counts as a non-finite norm. Simulated on CPU through the same code."""
    threshold = torch.tensor(bad)

    def clip(nonfinite: str, opt=None):
        ps = _params([3.0, 4.0])
        gs = _clip.grad_set(ps)
        res = _clip.clip_with_threshold(
            gs, gs.norm(2.0), threshold, nonfinite=nonfinite, optimizer=opt, check_threshold=True
        )
        return ps, res

    ps, res = clip("propagate")
    assert ps[0].grad.isnan().all() and res.coefficient.isnan()  # loud, never a silent clip
    ps, res = clip("skip")
    assert bool(res.skipped) and ps[0].grad is None  # no optimizer: gradients dropped
    with pytest.raises(ValueError, match="`max_norm` must be > 0"):
        clip("raise")


# ------------------------------------------------------------- SpikeSkip


@pytest.mark.parametrize("window", [2, 5, 8, 19, 20, 40])
def test_spike_skip_with_a_short_window_arms(window: int) -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    guard = sst.SpikeSkip([w], window=window, sigma=3.0)
    assert guard.min_history == min(max(20, window // 2), window)
    norms = [1.0 + 0.01 * (i % 3) for i in range(window)] + [50.0]
    for g in norms:
        w.grad = torch.tensor([g])
        guard.clip()
    assert bool(guard.last.skipped)


def test_spike_skip_optax_with_a_short_window_arms() -> None:
    pytest.importorskip("jax")
    import jax.numpy as jnp
    import optax

    import steadystep.jax as ssj

    opt = ssj.spike_skip(optax.sgd(0.1), window=8)
    state = opt.init(jnp.zeros(1))
    for g in [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 60.0]:
        _, state = opt.update(jnp.array([g]), state)
    assert int(state.skipped) == 1


def test_spike_skip_refuses_inconsistent_settings() -> None:
    pytest.importorskip("jax")
    import optax

    import steadystep.jax as ssj

    w = torch.nn.Parameter(torch.zeros(1))
    for make in (
        lambda **kw: sst.SpikeSkip([w], **kw),
        lambda **kw: ssj.spike_skip(optax.sgd(1.0), **kw),
    ):
        with pytest.raises(ValueError, match=r"`min_history` must be <= window.*=30.*window=8"):
            make(window=8, min_history=30)
        with pytest.raises(ValueError, match="`window` must be >= 2"):
            make(window=1)
        with pytest.raises(ValueError, match="`min_history` must be >= 2"):
            make(window=8, min_history=1)
    guard = sst.SpikeSkip([w], window=8, min_history=8)
    state = guard.state_dict()
    with pytest.raises(ValueError, match="`min_history` must be <= window"):
        guard.load_state_dict({**state, "min_history": 9})
    assert guard.min_history == 8


# --------------------------------------------- armed skips and folds that go stale


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _backward(model: torch.nn.Module, bad: float | None = None) -> None:
    x = torch.linspace(-1, 1, 6).reshape(2, 3)
    if bad is not None:
        x = x.clone()
        x[0, 0] = bad
    model(x).pow(2).sum().backward()


def _leftovers(opt: torch.optim.Optimizer) -> list[str]:
    names = ("grad_scale", "found_inf", "_steadystep_pending", "_steadystep_owned")
    return [n for n in names if hasattr(opt, n)]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def _fused(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=0.1, fused=True)


ZEROINGS = {
    "optimizer.zero_grad()": lambda m, o: o.zero_grad(),
    "model.zero_grad()": lambda m, o: m.zero_grad(),
    "zero_grad(set_to_none=False)": lambda m, o: o.zero_grad(set_to_none=False),
}


@pytest.mark.parametrize(
    ("zero", "clip_again"),
    # an in-place zeroing is seen by the next steadystep clip, not by a bare step (documented)
    [(zero, True) for zero in ZEROINGS] + [(zero, False) for zero in list(ZEROINGS)[:2]],
)
def test_a_skip_armed_for_a_dropped_batch_does_not_skip_the_next_good_update(
    zero: str, clip_again: bool
) -> None:
    ours, twin = _net(), _net()
    opt, opt_twin = _fused(ours), _fused(twin)
    _backward(ours, bad=NAN)
    res = sst.clip_grad_norm_(ours.parameters(), 1.0, nonfinite="skip", optimizer=opt,
                              return_result=True)  # fmt: skip
    assert bool(res.skipped)
    ZEROINGS[zero](ours, opt)  # the user drops this batch: no step
    for model, o in ((ours, opt), (twin, opt_twin)):
        _backward(model)
        if clip_again or model is twin:
            sst.clip_grad_norm_(model.parameters(), 1.0, nonfinite="skip", optimizer=o)
        o.step()
    assert _same(ours, twin) and not _same(ours, _net())  # the good update happened, once
    assert _leftovers(opt) == []


@pytest.mark.parametrize("zero", list(ZEROINGS))
def test_a_fold_armed_for_a_dropped_batch_does_not_break_the_next_fold(zero: str) -> None:
    ours, twin = _net(), _net()
    opt, opt_twin = _fused(ours), _fused(twin)
    _backward(ours)
    sst.clip_grad_norm_(ours.parameters(), 0.01, optimizer=opt, fold=True)
    ZEROINGS[zero](ours, opt)
    _backward(ours, bad=None)
    _backward(twin)
    # used to raise "already folded"; the new fold replaces the stale one
    sst.clip_grad_norm_(ours.parameters(), 0.5, optimizer=opt, fold=True)
    torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    opt.step()
    opt_twin.step()
    for a, b in zip(ours.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert _leftovers(opt) == []


@pytest.mark.parametrize("zero", ["optimizer.zero_grad()", "model.zero_grad()"])
def test_a_stale_fold_is_not_applied_by_a_step_without_clip(zero: str) -> None:
    ours, twin = _net(), _net()
    opt, opt_twin = _fused(ours), _fused(twin)
    _backward(ours)
    sst.clip_grad_norm_(ours.parameters(), 1e-4, optimizer=opt, fold=True)
    ZEROINGS[zero](ours, opt)
    _backward(ours)
    _backward(twin)
    opt.step()  # the stale 1e-4 coefficient must not scale these new gradients
    opt_twin.step()
    assert _same(ours, twin) and _leftovers(opt) == []


def test_a_spike_skip_then_dropped_batch_and_clippers_stacked_on_one_backward() -> None:
    ours, twin = _net(), _net()
    opt, opt_twin = _fused(ours), _fused(twin)
    guard = sst.SpikeSkip(ours.parameters(), window=4, optimizer=opt)
    zclip = sst.ZClip(ours.parameters(), warmup_steps=2, optimizer=opt, fold=True)
    _backward(ours, bad=INF)
    guard.clip()
    zclip.clip()  # stacked on the same gradients: the skip stays armed
    assert bool(guard.last.skipped)
    opt.step()
    assert _same(ours, _net())  # skipped
    _backward(ours, bad=INF)  # and again, but this batch is dropped
    guard.clip()
    opt.zero_grad()
    _backward(ours)
    _backward(twin)
    opt.step()
    opt_twin.step()
    assert _same(ours, twin) and _leftovers(opt) == []


@pytest.mark.parametrize("zero", list(ZEROINGS))
def test_stale_arming_is_noticed_among_many_parameters_some_without_gradients(zero: str) -> None:
    """The gradients are sampled (16 spread over the parameters, as GradBuffer's
    sentinels); the first ones sampled here get no gradient, so the sample looks further."""
    torch.manual_seed(0)
    layers = torch.nn.ModuleList(torch.nn.Linear(2, 1) for _ in range(100))
    used = [layer for i, layer in enumerate(layers) if i % 7 == 3]
    opt = torch.optim.SGD(layers.parameters(), lr=0.1, fused=True)

    def backward(bad: float | None = None) -> None:
        x = torch.ones(1, 2) if bad is None else torch.full((1, 2), bad)
        sum(layer(x).sum() for layer in used).backward()

    backward(NAN)
    sst.clip_grad_norm_(layers.parameters(), 1.0, nonfinite="skip", optimizer=opt)
    assert len(_clip._grad_stamp(opt)[1]) == 16
    ZEROINGS[zero](layers, opt)
    backward()
    before = [p.detach().clone() for p in layers.parameters()]
    sst.clip_grad_norm_(layers.parameters(), 1e9, nonfinite="skip", optimizer=opt)
    opt.step()
    moved = [not torch.equal(a, b) for a, b in zip(before, layers.parameters(), strict=True)]
    assert sum(moved) == 2 * len(used) and _leftovers(opt) == []
