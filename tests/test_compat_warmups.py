"""steadystep.compat: pytorch_warmup (parity with the real package), fairseq (not installable
here: references transcribed from its source, cited per function), BERT's recipe, the lazy
package and the compat shapes' spec round trips. DeepSpeed: ``test_compat_deepspeed.py``."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import steadystep as ss
from steadystep.compat import bert, fairseq
from steadystep.compat import pytorch_warmup as pw


def _close(ours, theirs) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


# -- pytorch_warmup ------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(
    period=st.integers(1, 50),
    tau=st.integers(1, 50),
    beta2=st.sampled_from([0.9, 0.95, 0.98, 0.99, 0.999]),
    base=st.floats(1e-4, 1.0),
)
def test_pytorch_warmup_parity(period: int, tau: int, beta2: float, base: float) -> None:
    torch = pytest.importorskip("torch")
    real = pytest.importorskip("pytorch_warmup")
    n = 120

    def stepped(make) -> np.ndarray:
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=base, betas=(0.9, beta2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99)
            warm = make(opt)
            out = []
            for _ in range(n):
                out.append(opt.param_groups[0]["lr"])
                opt.step()
                with warm.dampening():
                    sched.step()
        return np.array(out)

    t = np.arange(n)
    lr = ss.exponential(base, 0.99, 1)
    _close(
        pw.dampen(lr, pw.LinearWarmup(period))(t), stepped(lambda o: real.LinearWarmup(o, period))
    )
    _close(
        pw.dampen(lr, pw.ExponentialWarmup(tau))(t),
        stepped(lambda o: real.ExponentialWarmup(o, tau)),
    )
    _close(pw.dampen(lr, pw.UntunedLinearWarmup(beta2))(t), stepped(real.UntunedLinearWarmup))
    _close(
        pw.dampen(lr, pw.UntunedExponentialWarmup(beta2))(t), stepped(real.UntunedExponentialWarmup)
    )
    _close(pw.dampen(lr, pw.RAdamWarmup(beta2))(t), stepped(real.RAdamWarmup))


# -- fairseq ------------------------------------------------------------------------------------
def fairseq_inverse_sqrt(t: int, lr: float, warmup_updates: int, warmup_init_lr: float) -> float:
    """fairseq/optim/lr_scheduler/inverse_square_root_schedule.py, ``step_update``."""
    if warmup_init_lr < 0:
        warmup_init_lr = 0 if warmup_updates > 0 else lr
    lr_step = (lr - warmup_init_lr) / warmup_updates
    decay_factor = lr * warmup_updates**0.5
    if t < warmup_updates:
        return warmup_init_lr + t * lr_step
    return decay_factor * t**-0.5


def fairseq_tri_stage(t: int, lr: float, w: int, h: int, d: int, init: float, final: float):
    """fairseq/optim/lr_scheduler/tri_stage_lr_scheduler.py, ``_decide_stage``/``step_update``."""
    peak, init_lr, final_lr = lr, init * lr, final * lr
    rate = (peak - init_lr) / w if w != 0 else 0
    decay_factor = -math.log(final) / d
    if t < w:
        return init_lr + rate * t
    if t < w + h:
        return peak
    if t <= w + h + d:
        return peak * math.exp(-decay_factor * (t - w - h))
    return final_lr


@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(1e-4, 1.0),
    w=st.integers(1, 40),
    init=st.one_of(st.just(-1.0), st.floats(0.0, 1e-4)),
    h=st.integers(0, 30),
    d=st.integers(1, 30),
    scales=st.tuples(st.floats(0.001, 1.0), st.floats(0.001, 1.0)),
)
def test_fairseq(lr: float, w: int, init: float, h: int, d: int, scales) -> None:
    t = np.arange(0, 4 * w + 2 * (h + d) + 5)
    ours = fairseq.inverse_sqrt(lr, w, init)(t)
    _close(ours, [fairseq_inverse_sqrt(int(i), lr, w, init) for i in t])
    warm = w % 5  # 0 included
    ours = fairseq.tri_stage(lr, warm, h, d, *scales)(t)
    _close(ours, [fairseq_tri_stage(int(i), lr, warm, h, d, *scales) for i in t])


def test_fairseq_phase_ratio() -> None:
    s = fairseq.tri_stage(1.0, phase_ratio=[0.1, 0.4, 0.5], max_update=100)
    assert s == fairseq.tri_stage(1.0, 10, 40, 50)


# -- BERT ---------------------------------------------------------------------------------------
def bert_lr(step: int, init_lr: float, total: int, warm: int) -> float:
    """google-research/bert optimization.py (create_optimizer): polynomial_decay to 0 over
    num_train_steps, replaced by init_lr * step / warm while step < warm."""
    p = min(step, total) / total
    lr = init_lr * (1 - p)
    if warm and step < warm:
        return init_lr * step / warm
    return lr


@settings(max_examples=20, deadline=None)
@given(init=st.floats(1e-6, 1e-3), total=st.integers(1, 200), data=st.data())
def test_bert_create_learning_rate(init: float, total: int, data) -> None:
    warm = data.draw(st.integers(0, total))
    t = np.arange(total + 10)
    _close(
        bert.create_learning_rate(init, total, warm)(t),
        [bert_lr(int(i), init, total, warm) for i in t],
    )


# -- the package --------------------------------------------------------------------------------
def test_compat_imports_no_framework() -> None:
    code = (
        "import sys, steadystep as ss\n"
        "for name in ss.compat.__all__: getattr(ss.compat, name)\n"
        "bad = [m for m in ('torch', 'jax', 'keras', 'transformers', 'optax', 'timm',"
        " 'pytorch_warmup', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_submodule() -> None:
    with pytest.raises(AttributeError, match="nope"):
        ss.compat.nope  # noqa: B018


@pytest.mark.parametrize(
    "schedule",
    [
        ss.cosine_wave(1.0, 0.1, 10, cycles=1.5, exponent=2.0, offset=1.0),
        ss.cosine_restarts(1.0, 0.0, 12, 3),
        ss.shift(ss.repeat(ss.cosine(1.0, 0.0, 5), decay=0.5), 0.1),
        ss.cycles(1.0, 0.1, 5, "tanh", mul=2.0, limit=3),
        ss.cyclic(0.1, 1.0, 3, 5, "exp_range", 0.99),
        ss.log_ramp(0.0, 1.0, 10),
        ss.exponential_ramp(1.0, 5.0, 1.0),
        ss.radam_warmup(0.99),
        ss.product([ss.linear(0.0, 1.0, 4), ss.constant(2.0)]),
    ],
)
def test_shapes_round_trip_and_backends(schedule: ss.Schedule) -> None:
    assert ss.parse(repr(schedule)) == schedule
    assert ss.parse(schedule.to_dict()) == schedule
    t = np.arange(40)
    values = schedule(t)
    assert np.all(np.isfinite(values))
    assert [schedule(int(i)) for i in t] == pytest.approx(values.tolist(), rel=1e-12)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(schedule(torch.arange(40)).numpy(), values, rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: fairseq.inverse_sqrt(0.1, 0), "warmup_updates"),
        (lambda: fairseq.tri_stage(0.1, final_lr_scale=2.0), "final_lr_scale"),
        (lambda: fairseq.tri_stage(0.1, phase_ratio=[0.5, 0.6, 0.1], max_update=10), "phase_ratio"),
        (lambda: fairseq.tri_stage(0.1, phase_ratio=[0.5, 0.5, 0.0]), "max_update"),
        (lambda: pw.LinearWarmup(0), "warmup_period"),
        (lambda: pw.UntunedLinearWarmup(1.0), "beta2"),
        (lambda: pw.RAdamWarmup(0.5), "beta2"),
        (lambda: bert.create_learning_rate(1e-4, 10, 20), "num_warmup_steps"),
        (lambda: ss.cyclic(0.1, 1.0, 0, 5), "up"),
        (lambda: ss.cycles(1.0, 0.0, 5, "sine"), "curve"),
        (lambda: ss.log_ramp(0.0, 1.0, 1), "steps"),
        (lambda: ss.product([ss.constant(1.0)]), "parts"),
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


@pytest.mark.parametrize(
    "build",
    [
        lambda c: c.transformers.get_scheduler("cosine_with_restarts", 10, 100, {"num_cycles": 3}),
        lambda c: c.transformers.get_wsd_schedule(None, 5, 10, 50, decay_type="1-sqrt"),
        lambda c: c.torch.OneCycleLR(0.1, total_steps=97, three_phase=True),
        lambda c: c.torch.MultiStepLR(0.1, [5, 5, 9]),
        lambda c: c.timm.TanhLRScheduler(0.1, 20, warmup_t=3, cycle_limit=2),
        lambda c: c.optax.linear_onecycle_schedule(100, 1.0),
        lambda c: c.keras.CosineDecayRestarts(0.1, 10, alpha=0.1, m_mul=0.5),
        lambda c: c.keras.InverseTimeDecay(0.1, 10, 0.5, staircase=True),
        lambda c: c.deepspeed.WarmupCosineLR(0.1, 100, warmup_num_steps=10),
        lambda c: c.deepspeed.OneCycle(0.01, 0.1, 0.5, 10, 20, 3, 4, decay_step_size=5),
        lambda c: c.deepspeed.OneCycleMomentum(cycle_first_step_size=10, decay_mom_rate=0.01),
        lambda c: c.deepspeed.LRRangeTest(1e-4, 7, 0.5, lr_range_test_staircase=True),
        lambda c: c.timm.MultiStepLRScheduler(0.1, [1, 5, 5, 9], 0.5, warmup_t=3),
        lambda c: c.timm.CosineLRScheduler(0.1, 50, noise_range_t=(5, 40), noise_seed=7),
        lambda c: c.torch.SWALR(0.1, 0.01, anneal_epochs=7),
        lambda c: c.fairseq.tri_stage(0.1, 10, 20, 30),
    ],
)
def test_compat_results_round_trip(build) -> None:
    s = build(ss.compat)
    assert ss.parse(repr(s)) == s
    assert ss.parse(s.to_dict()) == s
    t = np.arange(150)
    np.testing.assert_array_equal(ss.parse(repr(s))(t), s(t))


# -- pytorch_warmup's own expected values (test/test_base.py) ------------------------------------
def test_pytorch_warmup_test_suite_values() -> None:
    lin, exp = pw.LinearWarmup(warmup_period=5), pw.ExponentialWarmup(warmup_period=5)
    for step in range(1, 11):  # its step k is the k-th update: our t = k - 1
        want = step / 5 if step < 5 else 1.0
        assert 0.5 * lin(step - 1) == pytest.approx(0.5 * want)
        assert 0.1 * exp(step - 1) == pytest.approx(0.1 * (1 - math.exp(-step / 5)))
    for bad in (0, -1, 2.5):
        with pytest.raises((ValueError, TypeError), match="warmup_period"):
            pw.LinearWarmup(bad)
    # Deliberate difference: pytorch_warmup raises TypeError for 5.0; an integral float is
    # accepted here (configs often give one)
    assert pw.LinearWarmup(5.0) == pw.LinearWarmup(5)
