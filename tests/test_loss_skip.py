"""Loss-aware step skipping: the pure rule, LossSpikeSkip in torch (plain and fused optimizers,
resume, schedule advance), and bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
from steadystep.clip import skip_init, skip_step  # noqa: E402
from steadystep.torch import LossSpikeSkip, Scheduler  # noqa: E402


def reference(
    losses: list[float],
    norms: list[float],
    signal: str,
    sigma: float,
    window: int,
    min_history: int,
) -> list[bool]:
    """The rule in plain Python: one-sided z-score over the previous finite values."""
    hist: dict[str, list[float]] = {"loss": [], "norm": []}
    out = []
    for loss, norm in zip(losses, norms, strict=True):
        flags, broken = {}, False
        for name, x in (("loss", loss), ("norm", norm)):
            h = hist[name][-window:]
            if not math.isfinite(x):
                flags[name], broken = True, True
                continue
            if len(h) >= min_history:
                mean = sum(h) / len(h)
                std = math.sqrt(sum((v - mean) ** 2 for v in h) / max(len(h) - 1, 1))
                flags[name] = x - mean > sigma * std
            else:
                flags[name] = False
            hist[name].append(x)
        if signal == "loss":
            out.append(flags["loss"])
        elif signal == "norm":
            out.append(flags["norm"])
        elif signal == "either":
            out.append(flags["loss"] or flags["norm"])
        else:
            out.append((flags["loss"] and flags["norm"]) or broken)
    return out


# eighths: exact in float32 and in sums of a few, so float32 and float64 statistics agree
VALUE = st.one_of(
    st.integers(4, 12).map(lambda k: k / 8), st.sampled_from([20.0, 100.0, math.inf, math.nan])
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(VALUE, VALUE), min_size=1, max_size=30),
    st.sampled_from(["loss", "norm", "either", "both"]),
    st.sampled_from([(4, 2), (8, 3), (16, 5)]),
)
def test_rule_matches_reference(
    pairs: list[tuple[float, float]], signal: str, wm: tuple[int, int]
) -> None:
    window, min_history = wm
    losses, norms = [p[0] for p in pairs], [p[1] for p in pairs]
    expected = reference(losses, norms, signal, 3.0, window, min_history)
    for xp_name in ("numpy", "torch"):
        like = np.zeros(()) if xp_name == "numpy" else torch.zeros(())
        state = skip_init(window, like=like)
        got = []
        for loss, norm in pairs:
            arr = (lambda v: np.float32(v)) if xp_name == "numpy" else (lambda v: torch.tensor(v))
            state, skip = skip_step(
                state, arr(loss), arr(norm), signal=signal, sigma=3.0, min_history=min_history
            )
            got.append(bool(skip))
        assert got == expected


def _train(
    losses: list[float], *, fused: bool = False, advance: bool = False, cut: int | None = None
) -> tuple[list[float], list[bool], int, Any]:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1, fused=fused)
    sched = Scheduler(opt, ss.cosine(0.1, 0.0, steps=20))
    kw = dict(signal="loss", window=8, min_history=3, optimizer=opt, scheduler=sched)
    guard = LossSpikeSkip([w], advance_schedule=advance, **kw)
    skipped = []
    for i, loss in enumerate(losses):
        if cut is not None and i == cut:  # a fresh guard from the saved state
            state = guard.state_dict()
            guard = LossSpikeSkip([w], advance_schedule=advance, **kw)
            guard.load_state_dict(state)
        w.grad = torch.full((3,), 0.5)
        skipped.append(bool(guard.check(torch.tensor(loss))))
        opt.step()
        sched.step()
        opt.zero_grad()
    return w.detach().tolist(), skipped, sched.last_epoch, opt.state_dict()["state"]


LOSSES = [1.0, 1.1, 0.9, 1.0, 30.0, 1.0, float("nan"), 1.05, 0.95]


@pytest.mark.parametrize("fused", [False, True])
def test_skipped_updates_change_nothing(fused: bool) -> None:
    w, skipped, steps, state = _train(LOSSES, fused=fused)
    assert skipped == [False] * 4 + [True, False, True, False, False]
    # the same run with the bad batches removed gives the same weights and optimizer state
    clean = [x for x, s in zip(LOSSES, skipped, strict=True) if not s]
    w2, _, steps2, state2 = _train(clean, fused=fused)
    assert w == w2 and steps == steps2 == 7
    assert float(state[0]["step"]) == float(state2[0]["step"]) == 7


@pytest.mark.parametrize("fused", [False, True])
def test_advance_schedule_counts_skipped_updates(fused: bool) -> None:
    _, _, steps, _ = _train(LOSSES, fused=fused, advance=True)
    assert steps == len(LOSSES)


def test_resume_is_exact() -> None:
    assert _train(LOSSES, cut=3)[:3]  # the spike at 4 needs the saved history == _train(LOSSES)[:3]


def test_bad_input() -> None:
    w = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="Argument `signal` must be one of"):
        LossSpikeSkip([w], signal="grad")
    with pytest.raises(ValueError, match="Argument `sigma` must be > 0"):
        LossSpikeSkip([w], sigma=0)
    with pytest.raises(ValueError, match="advance_schedule=True needs the `scheduler`"):
        LossSpikeSkip([w], advance_schedule=True)
    guard = LossSpikeSkip([w], signal="loss", window=4)
    with pytest.raises(ValueError, match="needs the loss"):
        guard.check()
    with pytest.raises(TypeError, match="Argument `loss`"):
        guard.check("1.0")  # type: ignore[arg-type]
    other = LossSpikeSkip([w], signal="norm", window=4)
    with pytest.raises(ValueError, match="different LossSpikeSkip"):
        other.load_state_dict(guard.state_dict())


def test_optax_matches_torch_decisions() -> None:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    import steadystep.jax as ssj

    for signal in ("loss", "norm", "either", "both"):
        opt = ssj.loss_spike_skip(optax.adam(0.1), signal=signal, window=8, min_history=3)
        state = opt.init(jnp.ones(3))
        update = jax.jit(opt.update)
        w = torch.nn.Parameter(torch.ones(3))
        guard = LossSpikeSkip([w], signal=signal, window=8, min_history=3)
        norms = [0.5, 0.55, 0.45, 0.5, 0.5, 9.0, 0.5, math.inf, 0.5]
        for loss, g in zip([*LOSSES[:5], 1.0, *LOSSES[6:]], norms, strict=True):
            grads = jnp.full(3, g / math.sqrt(3), jnp.float32)
            u, new = update(grads, state, loss=jnp.float32(loss))
            w.grad = torch.full((3,), g / math.sqrt(3))
            skipped = bool(guard.check(torch.tensor(loss)))
            assert skipped == bool(new.skipped - state.skipped), (signal, loss, g)
            if skipped:  # a skipped update is zero and leaves Adam's state alone
                assert float(jnp.abs(u).max()) == 0.0
                assert int(new.inner_state[0].count) == int(state.inner_state[0].count)
            state = new
