"""Non-finite gradients injected at chosen steps of a training loop, under each policy.

``nonfinite="skip"``: the update is skipped (parameters and optimizer state unchanged), the
clippers' statistics ignore the bad norm, the skips are counted, and training carries on exactly
as if the bad batch had never been seen. ``"raise"``: a clear ``RuntimeError`` before anything
is touched, after which training can carry on. ``"propagate"``: torch's behaviour, bit for bit.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402

STEPS = 12
BAD = {3: float("nan"), 7: float("inf")}  # step -> value written into one input


def _model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _optimizer(kind: str, model: Any) -> Any:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    return torch.optim.AdamW(model.parameters(), lr=0.01, fused=kind == "adamw-fused" or None)


def _batch(t: int, bad: dict[int, float]) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(t)
    x = torch.randn(8, 4, generator=g)
    if t in bad:
        x[2, 1] = bad[t]
    return x, x.sum(dim=1, keepdim=True)


def _snapshot(model: Any, opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


def _loss(model: Any, t: int, bad: dict[int, float]) -> Any:
    x, y = _batch(t, bad)
    return torch.nn.functional.mse_loss(model(x), y)


def _clipper(name: str, model: Any, opt: Any) -> Any:
    params = model.parameters()
    if name == "zclip":
        return ss.torch.ZClip(params, warmup_steps=2, nonfinite="skip", optimizer=opt)
    if name == "autoclip":
        return ss.torch.AutoClip(params, percentile=50.0, nonfinite="skip", optimizer=opt)
    return ss.torch.SpikeSkip(params, window=16, min_history=4, max_norm=1.0, optimizer=opt)


def _train(kind: str, clipper_name: str, bad: dict[int, float]) -> tuple[Any, Any, Any, int]:
    """Train STEPS steps, leaving out nothing; checks each skipped update changed nothing."""
    model = _model()
    opt = _optimizer(kind, model)
    clipper = _clipper(clipper_name, model, opt)
    skips = 0
    for t in range(STEPS):
        if bad is BAD_BATCHES_LEFT_OUT and t in BAD:
            continue
        opt.zero_grad()
        _loss(model, t, bad).backward()
        before, stats = _snapshot(model, opt), clipper.state_dict()
        clipper.clip()
        opt.step()
        skipped = bool(clipper.last.skipped)
        skips += skipped
        if t in bad:
            assert skipped
            assert not torch.isfinite(clipper.last.norm)
            _assert_same(_snapshot(model, opt), before)  # parameters and optimizer state
            _assert_same(clipper.state_dict(), stats)  # the bad norm is not in the statistics
    return model, opt, clipper, skips


BAD_BATCHES_LEFT_OUT: dict[int, float] = {}


@pytest.mark.parametrize("clipper_name", ["zclip", "autoclip", "spikeskip"])
@pytest.mark.parametrize("kind", ["sgd", "adamw", "adamw-fused"])
def test_skip_leaves_everything_untouched_and_training_continues(
    kind: str, clipper_name: str
) -> None:
    model, opt, clipper, skips = _train(kind, clipper_name, BAD)
    assert skips == len(BAD)  # the skip counter (SpikeSkip may add spikes of its own: none here)
    assert int(clipper.state_dict()["count"]) == STEPS - len(BAD)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # ... exactly as if the bad batches had never been seen
    clean_model, clean_opt, clean_clipper, _ = _train(kind, clipper_name, BAD_BATCHES_LEFT_OUT)
    _assert_same(_snapshot(model, opt), _snapshot(clean_model, clean_opt))
    _assert_same(clipper.state_dict(), clean_clipper.state_dict())


@pytest.mark.parametrize("kind", ["sgd", "adamw-fused"])
def test_a_skipped_update_does_not_advance_the_schedule(kind: str) -> None:
    model = _model()
    opt = _optimizer(kind, model)
    sched = ss.torch.Scheduler(opt, ss.linear(0.05, 0.0, steps=STEPS))
    lrs = []
    for t in range(STEPS):
        opt.zero_grad()
        _loss(model, t, BAD).backward()
        ss.torch.clip_grad_norm_(model.parameters(), 1.0, nonfinite="skip", optimizer=opt)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert sched.last_epoch == STEPS - len(BAD)  # as GradScaler's skipped updates
    assert lrs[4] == lrs[3]  # the update after the skipped one uses the same LR


def test_raise_stops_before_touching_anything_and_training_can_continue() -> None:
    model = _model()
    opt = _optimizer("adamw", model)
    raised = []
    for t in range(STEPS):
        opt.zero_grad()
        _loss(model, t, BAD).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        before = _snapshot(model, opt)
        try:
            ss.torch.clip_grad_norm_(model.parameters(), 1.0, nonfinite="raise")
        except RuntimeError as exc:
            assert "non-finite" in str(exc) and "nonfinite='skip'" in str(exc)
            raised.append(t)
            for p, g in zip(model.parameters(), grads, strict=True):
                torch.testing.assert_close(p.grad, g, rtol=0, atol=0, equal_nan=True)
            _assert_same(_snapshot(model, opt), before)
            continue  # the user's loop drops this batch
        opt.step()
    assert raised == sorted(BAD)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_propagate_is_torchs_behaviour_bit_for_bit() -> None:
    ours, theirs = _model(), _model()
    opt_ours, opt_theirs = _optimizer("sgd", ours), _optimizer("sgd", theirs)
    for t in range(STEPS):
        for model, opt, clip in (
            (ours, opt_ours, ss.torch.clip_grad_norm_),
            (theirs, opt_theirs, torch.nn.utils.clip_grad_norm_),
        ):
            opt.zero_grad()
            _loss(model, t, BAD).backward()
            clip(model.parameters(), 1.0)
            opt.step()
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all())
    # the NaN batch at step 3 poisoned the weights, as with torch: that is what propagate means
    assert all(p.isnan().all() for p in ours.parameters())
