"""Contiguous gradients: layout detection, ``GradBuffer`` and clipping straight from its buffers.

The property test drives a buffer-backed model and a plain twin through the same random
sequence of backwards (over random subsets of the parameters), ``zero_grad`` variants and
clips, and checks that clipping the buffer gives torch's norm and gradients every time.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import steadystep.torch as sst  # noqa: E402
from steadystep.torch._contiguous import flat_plan  # noqa: E402


def _many(n: int = 50, size: int = 7) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(size)) for _ in range(n)]
    for p in params:
        p.grad = torch.randn(size)
    return params


def _assert_same_grads(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert (x.grad is None) == (y.grad is None), i
        if x.grad is not None:
            torch.testing.assert_close(x.grad, y.grad, rtol=1e-6, atol=1e-7)


# -- detection of layouts made elsewhere --------------------------------------------------------
def test_contiguous_grads_same_results_as_torch() -> None:
    a, b = _many(), _many()
    buf = sst.contiguous_grads(b)
    assert len(buf.buffers) == 1
    assert all(p.grad.untyped_storage().data_ptr() == buf.buffers[0].data_ptr() for p in b)
    ref = torch.nn.utils.clip_grad_norm_(a, 0.3)
    got = sst.clip_grad_norm_(b, 0.3)  # the parameters: every .grad read, runs detected
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)
    _assert_same_grads(a, b)
    torch.nn.utils.clip_grad_value_(a, 0.01)
    sst.clip_grad_value_(b, 0.01)
    _assert_same_grads(a, b)


def test_flat_plan_detects_runs_and_gaps() -> None:
    flat = torch.arange(10.0)
    grads = [flat[0:3], flat[3:5], flat[6:8], flat[8:10], torch.ones(2)]
    flats, others = flat_plan(grads)
    assert sorted(f.tolist() for f in flats) == [[0.0, 1.0, 2.0, 3.0, 4.0], [6.0, 7.0, 8.0, 9.0]]
    assert len(others) == 1
    assert flat_plan(grads)[0] is flats  # cached


def test_flat_plan_cache_keeps_no_gradient_alive() -> None:
    import gc
    import weakref

    grads = [torch.ones(1000) for _ in range(3)]  # separate tensors: no run, cached too
    assert flat_plan(grads) == ([], grads)
    assert flat_plan(list(grads))[1] == grads
    refs = [weakref.ref(g) for g in grads]
    del grads
    gc.collect()
    assert all(r() is None for r in refs)


def test_contiguous_grads_survive_set_to_none() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    buf = sst.contiguous_grads(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        model(torch.randn(3, 4)).sum().backward()
        ptr = buf.buffers[0].data_ptr()
        assert all(p.grad.untyped_storage().data_ptr() == ptr for p in model.parameters())
    expected = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(buf.buffers[0], expected)
    # accumulation keeps adding into the buffer
    model(torch.randn(3, 4)).sum().backward()
    buf.zero_grad()
    assert float(buf.buffers[0].abs().sum()) == 0.0
    assert all(p.grad is not None for p in model.parameters())
    buf.remove()


# -- clipping the buffer itself -----------------------------------------------------------------
def test_buffer_clip_matches_torch_across_dtypes() -> None:
    torch.manual_seed(1)
    shapes = [(3, 4), (5,), (2, 2, 2), (7,)]
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64]
    a = [torch.nn.Parameter(torch.zeros(s, dtype=d)) for s, d in zip(shapes, dtypes, strict=True)]
    b = [torch.nn.Parameter(torch.zeros(s, dtype=d)) for s, d in zip(shapes, dtypes, strict=True)]
    for x, y in zip(a, b, strict=True):
        x.grad = torch.randn_like(x)
        y.grad = x.grad.clone()
    buf = sst.contiguous_grads(b)
    assert [t.dtype for t in buf.buffers] == [torch.float32, torch.float64]
    assert buf.parameters == [b[0], b[2], b[1], b[3]]  # buffer order
    for norm_type in (2.0, 1.0, math.inf):
        ref = torch.nn.utils.clip_grad_norm_(a, 0.5, norm_type)
        got = sst.clip_grad_norm_(buf, 0.5, norm_type)
        torch.testing.assert_close(got, ref.float(), rtol=1e-6, atol=0)
        _assert_same_grads(a, b)
    torch.nn.utils.clip_grad_value_(a, 0.05)
    sst.clip_grad_value_(buf, 0.05)
    _assert_same_grads(a, b)


OPS = st.one_of(
    st.tuples(st.just("backward"), st.sets(st.integers(0, 5), max_size=6)),
    st.tuples(st.just("zero_none"), st.just(frozenset())),  # optimizer.zero_grad() default
    st.tuples(st.just("zero_keep"), st.just(frozenset())),  # zero_grad(set_to_none=False)
    st.tuples(st.just("buffer_zero"), st.just(frozenset())),  # buf.zero_grad()
    st.tuples(st.just("by_hand"), st.sets(st.integers(0, 5), max_size=6)),  # then check()
    st.tuples(st.just("clip"), st.just(frozenset())),
)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(OPS, min_size=1, max_size=14), seed=st.integers(0, 2**16))
def test_buffer_clip_follows_any_zeroing_and_accumulation(ops, seed) -> None:
    torch.manual_seed(seed)
    shapes = [(3, 2), (4,), (2, 3), (5,), (1,), (2, 2)]
    init = [torch.randn(s) for s in shapes]
    twin = [torch.nn.Parameter(t.clone()) for t in init]  # plain gradients, torch clips them
    mine = [torch.nn.Parameter(t.clone()) for t in init]
    buf = sst.contiguous_grads(mine)
    for step, (op, subset) in enumerate(ops):
        if op == "backward":
            coefs = torch.randn(len(shapes))
            for params in (twin, mine):
                terms = [coefs[i] * params[i].pow(2).sum() for i in sorted(subset)]
                if terms:
                    torch.stack(terms).sum().backward()
        elif op == "zero_none":
            for p in twin + mine:
                p.grad = None
        elif op == "zero_keep":
            for p in twin + mine:
                if p.grad is not None:
                    p.grad.zero_()
        elif op == "by_hand":  # some .grad set to None, others to new tensors
            for params in (twin, mine):
                for i in subset:
                    params[i].grad = None if i % 2 else torch.full_like(params[i], float(i))
            buf.check()
        elif op == "buffer_zero":  # same meaning as zero_keep, one kernel
            for p in twin:
                if p.grad is not None:
                    p.grad.zero_()
            buf.zero_grad()
        else:
            ref = torch.nn.utils.clip_grad_norm_(twin, 0.7)
            got = sst.clip_grad_norm_(buf, 0.7)
            torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7, msg=f"op {step}")
        _assert_same_grads(twin, mine)
    ref = torch.nn.utils.clip_grad_norm_(twin, 0.7)
    torch.testing.assert_close(sst.clip_grad_norm_(buf, 0.7), ref, rtol=1e-6, atol=1e-7)
    _assert_same_grads(twin, mine)


def test_stale_views_of_unused_parameters_are_zeroed_not_reattached() -> None:
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(3, 3), "unused": torch.nn.Linear(3, 3)})
    buf = sst.contiguous_grads(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    for layer in model.values():
        layer(torch.ones(1, 3)).sum().backward()
    opt.zero_grad()  # set_to_none: the unused layer's views keep last round's numbers
    model["used"](torch.ones(1, 3)).sum().backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in model["used"].parameters()])
    torch.testing.assert_close(sst.clip_grad_norm_(buf, 1e9), expected)
    assert all(p.grad is None for p in model["unused"].parameters())  # optimizer still skips
    before = [p.detach().clone() for p in model["unused"].parameters()]
    opt.step()
    for x, p in zip(before, model["unused"].parameters(), strict=True):
        assert torch.equal(x, p.detach())  # no weight decay on a parameter without gradient


def test_set_to_none_without_a_backward_is_noticed() -> None:
    params = _many(200, 3)
    buf = sst.contiguous_grads(params)
    opt = torch.optim.SGD(params, lr=0.1)
    assert float(sst.clip_grad_norm_(buf, 1e9)) > 0
    opt.zero_grad()  # every .grad None, the buffer still full: the sentinels see it
    assert float(sst.clip_grad_norm_(buf, 1e9)) == 0.0
    assert all(p.grad is None for p in params)
    assert float(buf.buffers[0].abs().sum()) == 0.0


def test_check_after_gradients_changed_by_hand() -> None:
    a, b = _many(6, 3), _many(6, 3)
    buf = sst.contiguous_grads(b)
    for params in (a, b):
        params[1].grad = None
        params[2].grad = torch.full((3,), 2.0)
    buf.check()  # the buffer cannot see hand-made changes: check() says they happened
    assert b[1].grad is None and b[2].grad.data_ptr() == buf.buffers[0][6:].data_ptr()
    ref = torch.nn.utils.clip_grad_norm_(a, 0.1)
    torch.testing.assert_close(sst.clip_grad_norm_(buf, 0.1), ref)
    _assert_same_grads(a, b)


def test_skip_through_the_buffer_leaves_the_model_untouched() -> None:
    model = torch.nn.Linear(4, 3)
    buf = sst.contiguous_grads(model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    state = {k: v.clone() for k, v in opt.state[model.weight].items()}
    before = [p.detach().clone() for p in model.parameters()]
    buf.zero_grad()
    model(torch.full((2, 4), math.inf)).sum().backward()
    res = sst.clip_grad_norm_(buf, 1.0, nonfinite="skip", optimizer=opt, return_result=True)
    assert bool(res.skipped) and not math.isfinite(float(res.norm))
    assert all(p.grad is None for p in model.parameters())
    assert float(buf.buffers[0].abs().sum()) == 0.0  # no inf left behind for the next round
    opt.step()
    for x, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(x, p.detach())
    assert all(torch.equal(v, opt.state[model.weight][k]) for k, v in state.items())
    model(torch.ones(2, 4)).sum().backward()  # the next round is clean and on the buffer again
    ref = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    torch.testing.assert_close(sst.clip_grad_norm_(buf, 1e9), ref)


def test_scheduler_does_not_count_an_update_skipped_through_the_buffer() -> None:
    import steadystep as ss

    model = torch.nn.Linear(3, 2)
    buf = sst.contiguous_grads(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = sst.Scheduler(opt, ss.linear(1.0, 0.0, steps=10))
    lrs = []
    for bad in (False, True, False):
        buf.zero_grad()
        model(torch.full((1, 3), math.inf if bad else 1.0)).sum().backward()
        sst.clip_grad_norm_(buf, 1.0, nonfinite="skip", optimizer=opt)
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.9, 0.9, 0.8])


def test_adaptive_clippers_read_the_buffer() -> None:
    a, b = _many(20, 5), _many(20, 5)
    buf = sst.contiguous_grads(b)
    za, zb = sst.ZClip(a, warmup_steps=2), sst.ZClip(buf, warmup_steps=2)
    for k in range(6):
        scale = 10.0 if k == 4 else 1.0
        for x, y in zip(a, b, strict=True):
            x.grad = torch.full_like(x, scale * (k + 1))
            y.grad.fill_(scale * (k + 1))
        torch.testing.assert_close(za.clip(), zb.clip())
        _assert_same_grads(a, b)
    state = zb.state_dict()
    zb.load_state_dict(state)  # rebuilt on the same buffer
    assert zb._source is buf and repr(zb).startswith("ZClip(20 parameters")
    agc = sst.AGC(buf, clipping=0.01)  # unit-wise: works on the parameters
    agc.clip()


def test_duplicates_and_removed_buffers_fall_back_to_the_parameters() -> None:
    a, b = _many(4, 3), _many(4, 3)
    buf = sst.contiguous_grads(b)
    ref = torch.nn.utils.clip_grad_norm_(a[:3], 0.2)
    torch.nn.utils.clip_grads_with_norm_(a[3:], 0.2, ref)
    got = sst.clip_grad_norm_(buf, 0.2, duplicates=[b[3]], process_group=None)
    torch.testing.assert_close(got, ref)
    _assert_same_grads(a, b)
    buf.remove()
    for params in (a, b):
        params[0].grad = None
        params[0].pow(2).sum().backward()  # a new tensor: no hook copies it in any more
    assert b[0].grad.data_ptr() != buf.buffers[0].data_ptr()
    ref = torch.nn.utils.clip_grad_norm_(a, 0.2)
    torch.testing.assert_close(sst.clip_grad_norm_(buf, 0.2), ref)
    _assert_same_grads(a, b)


def test_bad_parameters_for_a_buffer() -> None:
    params = _many(3, 2)
    buf = sst.contiguous_grads(params)
    with pytest.raises(ValueError, match="already lives in another GradBuffer"):
        sst.contiguous_grads(params[:1])
    buf.remove()
    sst.contiguous_grads(params[:1]).remove()  # free again once removed
    with pytest.raises(TypeError, match="plain dense tensors"):
        sst.contiguous_grads([torch.nn.Parameter(torch.eye(2).to_sparse())])
    with pytest.raises(TypeError, match="must hold tensors"):
        sst.contiguous_grads([1.0])
