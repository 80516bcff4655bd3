"""steadystep.torch clipping: parity with torch, non-finite policies, contiguous grads, adaptive."""

from __future__ import annotations

import io
import math

import pytest

torch = pytest.importorskip("torch")

import steadystep.torch as sst  # noqa: E402
from steadystep.clip import _rules  # noqa: E402


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4), torch.nn.LayerNorm(4)
    ).to(dtype)
    model(torch.randn(5, 8, dtype=dtype)).pow(2).sum().backward()
    return model


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("max_norm", [0.1, 1e9])
def test_parity_with_torch(dtype, norm_type, foreach, max_norm) -> None:
    a, b = _model(dtype=dtype), _model(dtype=dtype)
    ref = torch.nn.utils.clip_grad_norm_(a.parameters(), max_norm, norm_type, foreach=foreach)
    got = sst.clip_grad_norm_(b.parameters(), max_norm, norm_type, foreach=foreach)
    assert got.dtype == torch.float32 and got.dim() == 0
    torch.testing.assert_close(got, ref.float(), rtol=1e-6, atol=0)
    for x, y in zip(_grads(a), _grads(b), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_norm_is_fp32_and_accurate(dtype) -> None:
    w = torch.nn.Parameter(torch.zeros(70_000, dtype=dtype))
    w.grad = torch.ones(70_000, dtype=dtype)  # fp16 sum of squares would overflow
    norm = sst.clip_grad_norm_([w], 1e9)
    assert norm.dtype == torch.float32
    assert float(norm) == pytest.approx(math.sqrt(70_000), rel=1e-6)
    assert w.grad.dtype == dtype


def test_invariants_after_clipping() -> None:
    model = _model()
    before = float(sst.clip_grad_norm_(model.parameters(), 1e9))
    assert float(sst.clip_grad_norm_(model.parameters(), 1e9)) == before  # huge bound: no change
    sst.clip_grad_norm_(model.parameters(), before / 3)
    after = torch.linalg.vector_norm(torch.cat([g.flatten() for g in _grads(model)]))
    assert float(after) == pytest.approx(before / 3, rel=1e-5)
    snapshot = _grads(model)
    sst.clip_grad_norm_(model.parameters(), before / 3)  # twice == once
    for x, y in zip(snapshot, _grads(model), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=0)


def test_result_report_and_no_grads() -> None:
    model = _model()
    res = sst.clip_grad_norm_(model.parameters(), 0.5, return_result=True)
    assert isinstance(res, sst.ClipResult)
    assert float(res.threshold) == 0.5 and bool(res.clipped) and not bool(res.skipped)
    assert float(res.coefficient) == pytest.approx(0.5 / (float(res.norm) + 1e-6), rel=1e-6)
    fresh = torch.nn.Linear(2, 2)
    assert float(sst.clip_grad_norm_(fresh.parameters(), 1.0)) == 0.0
    assert float(sst.clip_grad_norm_([], 1.0)) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"max_norm": -1.0},
            ValueError,
            r"Argument `max_norm` must be > 0\. Received: max_norm=-1\.0",
        ),
        ({"max_norm": 0}, ValueError, "max_norm=0"),
        ({"max_norm": math.nan}, ValueError, "max_norm=nan"),
        ({"max_norm": "1"}, TypeError, "max_norm='1'"),
        ({"max_norm": 1.0, "norm_type": 0}, ValueError, "norm_type=0"),
        ({"max_norm": 1.0, "norm_type": -2}, ValueError, "norm_type=-2"),
        ({"max_norm": 1.0, "norm_type": "fro"}, TypeError, "norm_type='fro'"),
        ({"max_norm": 1.0, "nonfinite": "ignore"}, ValueError, "nonfinite='ignore'"),
    ],
)
def test_bad_arguments(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        sst.clip_grad_norm_(_model().parameters(), **kwargs)


def test_gradients_passed_as_parameters_raise() -> None:
    model = _model()
    with pytest.raises(TypeError, match="not gradients"):
        sst.clip_grad_norm_([p.grad for p in model.parameters()], 1.0)
    with pytest.raises(TypeError, match="must hold tensors"):
        sst.clip_grad_norm_([1.0, 2.0], 1.0)
    with pytest.raises(TypeError, match="iterable of tensors"):
        sst.clip_grad_norm_(3.0, 1.0)


def test_meta_device_is_refused() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.ones(2)
    m = torch.nn.Parameter(torch.zeros(2, device="meta"))
    m.grad = torch.ones(2, device="meta")
    with pytest.raises(ValueError, match="meta"):
        sst.clip_grad_norm_([w, m], 1.0)


def test_param_groups_and_duplicates_count_once() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([3.0, 4.0])
    opt = torch.optim.SGD([w], lr=0.1)
    assert float(sst.clip_grad_norm_([w, w], 1e9)) == 5.0
    assert float(sst.clip_grad_norm_(opt.param_groups, 1e9)) == 5.0


# ------------------------------------------------------------ non-finite policies


def _nonfinite_model(bad: float) -> torch.nn.Module:
    model = _model()
    next(model.parameters()).grad[0, 0] = bad
    return model


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_propagate_matches_torch(bad) -> None:
    a, b = _nonfinite_model(bad), _nonfinite_model(bad)
    ref = torch.nn.utils.clip_grad_norm_(a.parameters(), 1.0)
    got = sst.clip_grad_norm_(b.parameters(), 1.0)
    torch.testing.assert_close(got, ref, equal_nan=True)
    for x, y in zip(_grads(a), _grads(b), strict=True):
        torch.testing.assert_close(x, y, equal_nan=True)


def test_raise_leaves_gradients_untouched() -> None:
    model = _nonfinite_model(math.inf)
    before = _grads(model)
    with pytest.raises(RuntimeError, match="non-finite"):
        sst.clip_grad_norm_(model.parameters(), 1.0, nonfinite="raise")
    for x, y in zip(before, _grads(model), strict=True):
        torch.testing.assert_close(x, y)


def _state_snapshot(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    out = []
    for state in opt.state.values():
        out.extend(v.clone() for v in state.values() if isinstance(v, torch.Tensor))
    return out


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("pass_optimizer", [True, False])
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_skip_leaves_params_and_adam_state_untouched(fused, pass_optimizer, bad) -> None:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1, fused=fused)
    opt.step()  # build state (exp_avg, exp_avg_sq, step)
    model.zero_grad()
    model(torch.randn(5, 8)).pow(2).sum().backward()
    next(model.parameters()).grad[0, 0] = bad
    params = [p.detach().clone() for p in model.parameters()]
    state = _state_snapshot(opt)
    res = sst.clip_grad_norm_(
        model.parameters(),
        1.0,
        nonfinite="skip",
        optimizer=opt if pass_optimizer else None,
        return_result=True,
    )
    assert bool(res.skipped)
    opt.step()
    for x, y in zip(params, model.parameters(), strict=True):
        torch.testing.assert_close(x, y.detach(), rtol=0, atol=0)
    for x, y in zip(state, _state_snapshot(opt), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not hasattr(opt, "found_inf")
    # the next, finite step goes through
    model.zero_grad()
    model(torch.randn(5, 8)).pow(2).sum().backward()
    res = sst.clip_grad_norm_(
        model.parameters(), 1.0, nonfinite="skip", optimizer=opt, return_result=True
    )
    assert not bool(res.skipped)
    opt.step()
    assert any(
        not torch.equal(x, y.detach()) for x, y in zip(params, model.parameters(), strict=True)
    )


def test_skip_combines_with_grad_scaler_state() -> None:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    opt.step()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    opt.found_inf = torch.zeros(())  # what GradScaler sets before calling step()
    sst.clip_grad_norm_(model.parameters(), 1.0, nonfinite="skip", optimizer=opt)
    next(model.parameters()).grad[0, 0] = math.inf
    sst.clip_grad_norm_(model.parameters(), 1.0, nonfinite="skip", optimizer=opt)
    opt.step()
    assert hasattr(opt, "found_inf")  # the scaler's own attribute stays for it to remove
    del opt.found_inf
    for x, y in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(x, y.detach(), rtol=0, atol=0)


# ------------------------------------------------------------ adaptive clippers


def _roundtrip(state: dict) -> dict:
    blob = io.BytesIO()
    torch.save(state, blob)
    blob.seek(0)
    return torch.load(blob, weights_only=True)


def _feed(clipper, w, norms):
    out = []
    for g in norms:
        w.grad = torch.tensor([float(g), 0.0])
        clipper.clip()
        grad = None if w.grad is None else w.grad.clone()
        out.append((float(clipper.last.norm), float(clipper.last.threshold), grad))
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda w: sst.AutoClip([w], percentile=25.0, history=8),
        lambda w: sst.ZClip([w], warmup_steps=5),
        lambda w: sst.SpikeSkip([w], window=8, min_history=4, sigma=3.0, max_norm=5.0),
        lambda w: sst.AGC([w], clipping=0.05),
    ],
)
def test_state_dict_resumes_exactly(make) -> None:
    torch.manual_seed(0)
    norms = (1.0 + 0.2 * torch.randn(30)).abs().tolist()
    norms[20] = 40.0
    w = torch.nn.Parameter(torch.ones(2))
    full = _feed(make(w), w, norms)
    first = make(w)
    _feed(first, w, norms[:15])
    second = make(w)
    second.load_state_dict(_roundtrip(first.state_dict()))
    resumed = _feed(second, w, norms[15:])
    for (n1, t1, g1), (n2, t2, g2) in zip(full[15:], resumed, strict=True):
        assert (n1, t1) == (n2, t2)
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_autoclip_clips_to_history_percentile() -> None:
    import numpy as np

    w = torch.nn.Parameter(torch.ones(2))
    clipper = sst.AutoClip([w], percentile=30.0, history=5)
    seen = []
    for g in [4.0, 1.0, 3.0, 2.0, 8.0, 5.0, 0.5]:
        w.grad = torch.tensor([g, 0.0])
        norm = clipper.clip()
        seen.append(g)
        thr = float(np.percentile(np.asarray(seen[-5:], np.float32), 30.0))
        assert float(norm) == g
        assert float(clipper.last.threshold) == pytest.approx(thr, rel=1e-6)
        assert float(w.grad[0]) == pytest.approx(min(g, thr), rel=1e-5)


def test_zclip_torch_matches_pure_rule() -> None:
    import numpy as np

    w = torch.nn.Parameter(torch.ones(1))
    z = sst.ZClip([w], warmup_steps=5, max_norm=100.0)
    state = _rules.zclip_init()
    for g in [1.0, 1.2, 0.9, 1.1, 1.0, 1.05, 20.0, 1.0]:
        w.grad = torch.tensor([g])
        z.clip()
        state, thr = _rules.zclip_step(state, np.float32(g), warmup_steps=5)
        assert float(z.last.threshold) == pytest.approx(min(float(thr), 100.0), rel=1e-6)
    assert z.state_dict()["alpha"] == 0.97 and z.state_dict()["z_thresh"] == 2.5


def test_agc_matches_formula_per_unit() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    lin.weight.grad = torch.randn(3, 6)
    lin.bias.grad = torch.randn(3)
    expected_w = _rules.adaptive_grad_clip(
        lin.weight.grad.numpy(), lin.weight.detach().numpy(), clipping=0.01
    )
    agc = sst.AGC(lin.parameters())
    agc.clip()
    torch.testing.assert_close(lin.weight.grad, torch.from_numpy(expected_w), rtol=1e-5, atol=1e-7)
    assert bool(agc.last.clipped)
    with pytest.raises(ValueError, match="clipping=0"):
        sst.AGC(lin.parameters(), clipping=0)


def test_spike_skip_skips_optimizer_step() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([w], lr=0.1)
    guard = sst.SpikeSkip([w], window=16, min_history=4, optimizer=opt)
    for g in [1.0, 1.1, 0.9, 1.05, 1.0]:
        w.grad = torch.tensor([g, 0.0])
        guard.clip()
        opt.step()
    assert not bool(guard.last.skipped)
    before, step = w.detach().clone(), opt.state[w]["step"].clone()
    w.grad = torch.tensor([500.0, 0.0])
    guard.clip()
    opt.step()
    assert bool(guard.last.skipped)
    torch.testing.assert_close(w.detach(), before, rtol=0, atol=0)
    assert torch.equal(opt.state[w]["step"], step)


@pytest.mark.parametrize("use_buffer", [False, True])
def test_a_clipper_after_a_skip_leaves_its_statistics_alone(use_buffer) -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([w], lr=0.1)  # not fused: a skip drops the gradients
    source = sst.contiguous_grads([w]) if use_buffer else [w]
    guard = sst.SpikeSkip(source, window=16, min_history=4, optimizer=opt)
    clippers = [sst.ZClip(source, warmup_steps=3), sst.AutoClip(source, history=8)]
    for g in [1.0, 1.1, 0.9, 1.05, 500.0]:  # the last one is a spike
        if use_buffer:
            source.zero_grad()
            (w * torch.tensor([g, 0.0])).sum().backward()
        else:
            w.grad = torch.tensor([g, 0.0])
        before = [c.state_dict() for c in clippers]
        guard.clip()
        for clipper, state in zip(clippers, before, strict=True):
            clipper.clip()
            if bool(guard.last.skipped):  # no gradient left: not a step for the others
                assert float(clipper.last.norm) == 0.0 and not bool(clipper.last.clipped)
                after = clipper.state_dict()
                assert all(torch.equal(after[k], v) for k, v in state.items() if torch.is_tensor(v))
        opt.step()
    assert bool(guard.last.skipped)


# ------------------------------------------------- folding the coefficient into a fused step

FUSED = [
    lambda ps: torch.optim.Adam(ps, lr=0.1, fused=True),
    lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.1, fused=True),
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True),
    lambda ps: torch.optim.Adagrad(ps, lr=0.1, fused=True),
]


def _leftovers(opt: torch.optim.Optimizer) -> list[str]:
    names = ("grad_scale", "found_inf", "_steadystep_pending", "_steadystep_owned")
    return [n for n in names if hasattr(opt, n)]


@pytest.mark.parametrize("make_opt", FUSED)
def test_fold_equals_clip_then_step(make_opt) -> None:
    a, b = _model(), _model()
    oa, ob = make_opt(a.parameters()), make_opt(b.parameters())
    for step in range(3):
        for model in (a, b):
            model.zero_grad()
            model(torch.randn(5, 8, generator=torch.Generator().manual_seed(step))).sum().backward()
        raw = _grads(b)
        ref = sst.clip_grad_norm_(a.parameters(), 0.05)
        got = sst.clip_grad_norm_(b.parameters(), 0.05, optimizer=ob, fold=True)
        torch.testing.assert_close(got, ref)
        for x, y in zip(raw, _grads(b), strict=True):
            assert torch.equal(x, y)  # not scaled yet: the step will do it
        oa.step()
        ob.step()
        # equal up to rounding: the kernel divides by 1/coefficient instead of multiplying
        # (Adagrad's g / sqrt(sum g^2) magnifies last-bit differences of tiny gradients)
        for x, y in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
        for x, y in zip(_grads(a), _grads(b), strict=True):  # written back clipped
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        assert _leftovers(ob) == []


@pytest.mark.parametrize(
    "make",
    [
        lambda ps, **kw: sst.ZClip(ps, warmup_steps=2, **kw),
        lambda ps, **kw: sst.AutoClip(ps, percentile=50.0, **kw),
        lambda ps, **kw: sst.SpikeSkip(ps, window=8, min_history=2, max_norm=0.05, **kw),
    ],
)
def test_adaptive_clippers_fold(make) -> None:
    a, b = _model(), _model()
    oa = torch.optim.AdamW(a.parameters(), lr=0.1, fused=True)
    ob = torch.optim.AdamW(b.parameters(), lr=0.1, fused=True)
    ca, cb = make(a.parameters(), optimizer=oa), make(b.parameters(), optimizer=ob, fold=True)
    clipped = 0
    for step in range(6):
        for model in (a, b):
            model.zero_grad()
            x = torch.randn(5, 8, generator=torch.Generator().manual_seed(step))
            (model(x).sum() * (50.0 if step == 5 else 1.0)).backward()  # a spike at the end
        torch.testing.assert_close(ca.clip(), cb.clip())
        clipped += bool(cb.last.clipped)
        oa.step()
        ob.step()
        for x, y in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
        assert _leftovers(ob) == []
    assert clipped >= 1
    cb.load_state_dict(cb.state_dict())
    assert cb.fold  # a setting of the run, kept when loading a state
    with pytest.raises(ValueError, match=r"fold=True.*needs the `optimizer`"):
        make(b.parameters(), fold=True)


def test_fold_with_grad_scaler_and_skip() -> None:
    a, b = _model(), _model()
    oa = torch.optim.AdamW(a.parameters(), lr=0.1, fused=True)
    ob = torch.optim.AdamW(b.parameters(), lr=0.1, fused=True)
    sa, sb = (
        torch.amp.GradScaler("cpu", init_scale=64.0),
        torch.amp.GradScaler("cpu", init_scale=64.0),
    )
    for step in range(3):
        for model, opt, scaler, fold in ((a, oa, sa, False), (b, ob, sb, True)):
            opt.zero_grad()
            x = torch.randn(5, 8, generator=torch.Generator().manual_seed(step))
            if step == 1:
                x[0, 0] = math.inf  # a non-finite step: skipped, by the scaler and by us
            scaler.scale(model(x).sum()).backward()
            scaler.unscale_(opt)
            sst.clip_grad_norm_(
                model.parameters(), 0.05, nonfinite="skip", optimizer=opt, fold=fold
            )
            scaler.step(opt)
            scaler.update()
            assert _leftovers(opt) == []
        for x, y in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_fold_falls_back_to_scaling_now() -> None:
    model = _model()
    params = list(model.parameters())
    expected = [
        g * min(1.0, 0.05 / (float(torch.nn.utils.get_total_norm(_grads(model))) + 1e-6))
        for g in _grads(model)
    ]
    partial = torch.optim.Adam(params[:2], fused=True)  # does not step every parameter
    sst.clip_grad_norm_(params, 0.05, optimizer=partial, fold=True)
    for x, y in zip(expected, _grads(model), strict=True):
        torch.testing.assert_close(x, y)
    assert _leftovers(partial) == []
    plain = torch.optim.Adam(params)  # not fused
    sst.clip_grad_norm_(params, 1e-3, optimizer=plain, fold=True)
    assert _leftovers(plain) == [] and float(torch.nn.utils.get_total_norm(_grads(model))) < 1.1e-3
    with pytest.raises(ValueError, match=r"fold=True.*needs the `optimizer`"):
        sst.clip_grad_norm_(params, 1.0, fold=True)
    with pytest.raises(TypeError, match=r"`fold` must be True or False\. Received: fold='yes'"):
        sst.clip_grad_norm_(params, 1.0, optimizer=plain, fold="yes")
    fused = torch.optim.Adam(params, fused=True)
    sst.clip_grad_norm_(params, 1e-4, optimizer=fused, fold=True)
    with pytest.raises(RuntimeError, match="already folded"):
        sst.clip_grad_norm_(params, 1e-4, optimizer=fused, fold=True)


# ------------------------------------------------------------ CUDA (skipped without a GPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_default_path_makes_no_sync() -> None:
    model = _model().cuda()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    zclip = sst.ZClip(model.parameters(), warmup_steps=2)
    sst.clip_grad_norm_(model.parameters(), 1.0)  # warm up lazy imports / allocations
    torch.cuda.set_sync_debug_mode("error")
    try:
        sst.clip_grad_norm_(model.parameters(), 1.0)
        sst.clip_grad_norm_(model.parameters(), 1.0, nonfinite="skip", optimizer=opt)
        for _ in range(3):
            zclip.clip()
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@cuda
def test_cuda_skip_with_fused_adam() -> None:
    model = _model().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    opt.step()
    next(model.parameters()).grad[0, 0] = math.inf
    before = [p.detach().clone() for p in model.parameters()]
    sst.clip_grad_norm_(model.parameters(), 1.0, nonfinite="skip", optimizer=opt)
    opt.step()
    for x, y in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(x, y.detach(), rtol=0, atol=0)
