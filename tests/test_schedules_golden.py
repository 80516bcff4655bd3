"""Golden values: every primitive, combinator and preset against its formula written out by hand.

The seeds' formulas (``../shared/seeds``) are spelled here exactly as the write-ups give them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import steadystep as ss


def close(a: float, b: float, rel: float = 1e-13) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


# -- seed 000: TensorFlow 1 / BERT -------------------------------------------------------------
def tf_polynomial_decay(lr, global_step, decay_steps, end_lr=0.0, power=1.0, cycle=False):
    """tf.train.polynomial_decay as the seed (and TF's documentation) states it."""
    if cycle:
        multiplier = 1.0 if global_step == 0 else math.ceil(global_step / decay_steps)
        decay_steps = decay_steps * multiplier
    else:
        global_step = min(global_step, decay_steps)
    return (lr - end_lr) * (1 - global_step / decay_steps) ** power + end_lr


def seed_bert(init_lr, global_step, num_train_steps, num_warmup_steps):
    """The seed's TF code: linear warmup blended with polynomial_decay by `is_warmup`."""
    learning_rate = tf_polynomial_decay(init_lr, global_step, num_train_steps, 0.0, 1.0, False)
    warmup_percent_done = global_step / num_warmup_steps
    warmup_learning_rate = init_lr * warmup_percent_done
    is_warmup = float(global_step < num_warmup_steps)
    return (1.0 - is_warmup) * learning_rate + is_warmup * warmup_learning_rate


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("cycle", [False, True])
def test_polynomial_is_tf_polynomial_decay(power: float, cycle: bool) -> None:
    s = ss.polynomial(0.1, 0.001, steps=100, power=power, cycle=cycle)
    for t in [0, 1, 50, 99, 100, 101, 150, 200, 201, 1000, 12_345]:
        assert close(s(t), tf_polynomial_decay(0.1, t, 100, 0.001, power, cycle)), t


def test_polynomial_cycle_step_zero_special_case() -> None:
    # ceil(0 / T) = 0 would divide by zero; TF uses a multiplier of 1 at step 0
    s = ss.polynomial(1.0, 0.0, steps=10, cycle=True)
    assert s(0) == 1.0
    assert s(10) == 0.0  # end of the first cycle
    assert close(s(11), 1.0 - 11 / 20)  # second cycle decays over 20 steps


def test_bert_preset_is_the_seed_recipe() -> None:
    s = ss.presets.bert(5e-5, num_train_steps=1000, num_warmup_steps=100)
    for t in [0, 1, 50, 99, 100, 101, 500, 999, 1000, 1500]:
        assert s(t) == seed_bert(5e-5, t, 1000, 100), t
    assert s(0) == 0.0  # the TF warmup gives 0 on the first update


def test_tf_linear_warmup_from_seed() -> None:
    # seed: warmup_learning_rate = init_lr * global_step / warmup_steps while step < warmup_steps
    s = ss.warmup(ss.constant(0.01), steps=8, overlay=True)
    assert [s(t) for t in range(10)] == [0.01 * t / 8 if t < 8 else 0.01 for t in range(10)]


# -- seed 004: the PyTorch Noam-style adjust_learning_rate -------------------------------------
def seed_noam(max_lr, t, warmup_steps):
    return max_lr * min((t + 1) / warmup_steps, (warmup_steps**0.5) / (t + 1))


def test_noam_preset_is_the_seed_formula() -> None:
    s = ss.presets.noam(0.01, warmup_steps=500)
    ts = [0, 1, 10, 104, 105, 106, 499, 500, 10_000, 10**9]
    for t in ts:
        assert close(s(t), seed_noam(0.01, t, 500)), t
    values = s(np.arange(2000))
    expected = np.array([seed_noam(0.01, t, 500) for t in range(2000)])
    np.testing.assert_allclose(values, expected, rtol=1e-13)
    # the formula peaks at t + 1 = W ** 0.75, at max_lr * W ** -0.25 (see the preset's docstring)
    assert int(np.argmax(values)) + 1 in (math.floor(500**0.75), math.ceil(500**0.75))
    assert math.isclose(values.max(), 0.01 * 500**-0.25, rel_tol=0.01)


def test_noam_per_epoch_mixup_is_explicit() -> None:
    # the seed stepped the per-step formula once per epoch; from_epochs(discrete) reproduces that
    per_epoch = ss.from_epochs(ss.presets.noam(0.01, 500), steps_per_epoch=100, discrete=True)
    assert per_epoch(0) == per_epoch(99) == seed_noam(0.01, 0, 500)
    assert per_epoch(100) == seed_noam(0.01, 1, 500)


def test_vaswani() -> None:
    s = ss.presets.vaswani(512, warmup_steps=4000)
    for t in [0, 100, 3999, 4000, 100_000]:
        n = t + 1
        assert close(s(t), 512**-0.5 * min(n**-0.5, n * 4000**-1.5)), t


# -- primitives --------------------------------------------------------------------------------
def test_constant_and_linear() -> None:
    assert ss.constant(0.3)(10**12) == 0.3
    s = ss.linear(0.1, 0.3, steps=4)
    expected = [0.1, 0.15, 0.2, 0.25, 0.3, 0.3]
    assert all(close(s(t), e) for t, e in enumerate(expected))
    assert s(0) == 0.1 and s(4) == 0.3  # exact at both ends
    assert np.ptp(ss.linear(5.875, 5.875, 106)(np.arange(200))) == 0  # flat means flat


def test_cosine() -> None:
    s = ss.cosine(1e-3, 1e-5, steps=100)
    for t in [0, 1, 25, 50, 99, 100, 1000]:
        c = 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100))
        assert close(s(t), 1e-5 + (1e-3 - 1e-5) * c, rel=1e-12), t
    assert s(0) == 1e-3 and s(100) == 1e-5


def test_one_minus_sqrt() -> None:
    s = ss.one_minus_sqrt(2.0, 0.5, steps=16)
    assert [s(t) for t in (0, 4, 16, 20)] == [2.0, 1.25, 0.5, 0.5]


def test_exponential() -> None:
    s = ss.exponential(0.1, rate=0.96, every=100)
    assert close(s(250), 0.1 * 0.96**2.5)
    st = ss.exponential(0.1, rate=0.96, every=100, staircase=True)
    assert st(250) == 0.1 * 0.96**2
    floored = ss.exponential(1.0, rate=0.5, every=1, end=0.1)
    assert floored(3) == 0.125 and floored(4) == 0.1
    ceiling = ss.exponential(1.0, rate=2.0, every=1, end=10.0)
    assert ceiling(3) == 8.0 and ceiling(4) == 10.0


def test_inverse_sqrt_and_power() -> None:
    s = ss.inverse_sqrt(1e-3, timescale=4000)
    for t in [0, 1000, 4000, 12_000]:
        assert close(s(t), 1e-3 * math.sqrt(4000 / (t + 4000))), t
    assert close(ss.power(3.0, exponent=-0.5, offset=1.0)(3), 1.5)


def test_piecewise() -> None:
    s = ss.piecewise([100, 200], [1.0, 0.5, 0.1])
    assert [s(t) for t in (0, 99, 100, 199, 200, 10**9)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    i = ss.piecewise([10, 20, 40], [0.0, 1.0, 0.5], interpolate=True)
    assert [i(t) for t in (0, 10, 15, 20, 30, 40, 50)] == [0.0, 0.0, 0.5, 1.0, 0.75, 0.5, 0.5]


def test_step_and_multistep() -> None:
    s = ss.step(1.0, every=30, rate=0.1)
    assert [s(t) for t in (0, 29, 30, 60)] == [1.0, 1.0, 0.1, 1.0 * 0.1**2]
    m = ss.multistep(1.0, milestones=[30, 80], rate=0.1)
    assert [m(t) for t in (0, 29, 30, 79, 80, 1000)] == [1.0, 1.0, 0.1, 0.1, 0.1**2, 0.1**2]


# -- warmup --------------------------------------------------------------------------------------
def test_warmup_prefix_restarts_the_clock() -> None:
    decay = ss.cosine(1e-3, 1e-5, steps=9000)
    s = ss.warmup(decay, steps=1000)
    assert s(0) == 0.0
    assert s(500) == 0.5e-3
    for t in [1000, 1001, 5000, 10_000, 20_000]:
        assert s(t) == decay(t - 1000), t
    assert s.length == 10_000


def test_warmup_overlay_keeps_the_clock() -> None:
    decay = ss.linear(1.0, 0.0, steps=100)
    s = ss.warmup(decay, steps=10, overlay=True)
    assert s(5) == 0.5  # ramps to decay(0) = 1.0
    assert s(10) == decay(10) == 0.9
    assert s.length == 100


def test_warmup_shapes() -> None:
    base = ss.constant(1.0)
    lin = ss.warmup(base, 10, start=0.1)
    cos = ss.warmup(base, 10, start=0.1, shape="cosine")
    exp = ss.warmup(base, 10, start=0.01, shape="exponential")
    assert close(lin(5), 0.55)
    assert close(cos(5), 0.1 + 0.9 * (1 - math.cos(math.pi / 2)) / 2)
    assert close(exp(5), 0.01 * 100**0.5)
    assert lin(10) == cos(10) == exp(10) == 1.0
    assert ss.warmup(base, steps=0)(0) == 1.0  # zero steps means no warmup


def test_untuned_warmup_rule() -> None:
    assert ss.untuned_warmup(ss.constant(1.0), beta2=0.999).steps == 2000
    assert ss.untuned_warmup(ss.constant(1.0), beta2=0.98).steps == 100


# -- combinators ---------------------------------------------------------------------------------
def test_sequence_clocks_and_boundaries() -> None:
    a, b, c = ss.linear(0.0, 1.0, 10), ss.cosine(1.0, 0.1, 20), ss.constant(0.1)
    s = a >> b >> c
    assert s.boundaries == (10, 30)
    assert s(10) == b(0) and s(25) == b(15) and s(30) == 0.1 and s(10**12) == 0.1
    explicit = ss.sequence([ss.exponential(1.0, 0.5, every=1), ss.constant(0.01)], boundaries=[5])
    assert explicit(4) == 0.5**4 and explicit(5) == 0.01


def test_scale_minimum_clamp() -> None:
    s = ss.linear(1.0, 0.0, 10)
    assert (s * 0.5)(2) == 0.4 and (2 * s)(2) == 1.6
    assert ss.minimum([s, ss.constant(0.5)])(2) == 0.5
    assert ss.clamp(s, lower=0.25)(9) == 0.25
    assert ss.clamp(s, upper=0.5)(0) == 0.5


def test_repeat_sgdr_restarts() -> None:
    s = ss.repeat(ss.cosine(1.0, 0.0, 10), stretch=2.0, decay=0.5)
    # cycles of 10, 20, 40 steps starting at 0, 10, 30, 70
    assert s(0) == 1.0 and s(10) == 0.5 and s(30) == 0.25 and s(70) == 0.125
    assert close(s(20), 0.5 * 0.5)  # halfway through the 20-step cycle
    assert close(s(29), 0.5 * (0.5 * (1 + math.cos(math.pi * 19 / 20))))
    limited = ss.repeat(ss.linear(1.0, 0.0, 4), times=2)
    assert limited(7) == 0.25 and limited(8) == 0.0 and limited(100) == 0.0
    assert limited.length == 8


def test_sgdr_warms_up_first_cycle_only() -> None:
    s = ss.presets.sgdr(1.0, 0.0, period=10, warmup_steps=5)
    assert s(0) == 0.0 and s(5) == 1.0
    assert s(15) == 1.0  # restart: no second warmup


def test_clocks() -> None:
    inner = ss.linear(0.0, 1.0, steps=4)  # written in epochs
    s = ss.from_epochs(inner, steps_per_epoch=100)
    assert s(200) == 0.5 and s.length == 400
    assert ss.from_epochs(inner, 100, discrete=True)(299) == 0.5
    assert ss.from_samples(ss.linear(0.0, 1.0, 640), batch_size=32)(10) == 0.5
    assert ss.from_tokens(ss.linear(0.0, 1.0, 4096), tokens_per_step=512)(4) == 0.5


# -- presets -------------------------------------------------------------------------------------
def test_wsd_and_cooldowns() -> None:
    for name, at_half in [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5))]:
        s = ss.presets.wsd(1.0, warmup_steps=10, stable_steps=20, decay_steps=10, cooldown=name)
        assert s(5) == 0.5 and s(10) == 1.0 and s(29) == 1.0
        assert close(s(35), at_half, rel=1e-12), name
        assert s(40) == 0.0
    open_ended = ss.presets.wsd(1.0, warmup_steps=10)
    cooled = ss.presets.append_cooldown(open_ended, at_step=100, steps=50, cooldown="linear")
    assert all(open_ended(t) == cooled(t) for t in range(100))
    assert cooled(125) == 0.5 and cooled(150) == 0.0


def test_one_cycle() -> None:
    s = ss.presets.one_cycle(0.1, total_steps=1000)
    initial, final = 0.1 / 25, 0.1 / 25 / 1e4
    assert close(s(0), initial) and s(300) == 0.1 and close(s(1000), final)
    three = ss.presets.one_cycle(0.1, total_steps=1000, three_phase=True, anneal="linear")
    assert three(300) == 0.1 and close(three(600), initial) and close(three(1000), final)
    m = ss.presets.one_cycle_momentum(1000)
    assert m(0) == 0.95 and m(300) == 0.85 and m(1000) == 0.95


# -- evaluation ------------------------------------------------------------------------------------
def test_huge_steps_float64() -> None:
    s = ss.warmup(ss.cosine(1.0, 0.1, steps=10**12), steps=10)
    assert s(10**12 + 10) == 0.1
    assert close(s(5 * 10**11 + 10), 0.55, rel=1e-12)
    assert ss.inverse_sqrt(1.0, timescale=1)(10**12 - 1) == 1e-6
    assert np.isfinite(ss.presets.noam(1.0, 10)(np.array([0, 10**12]))).all()


def test_scalar_and_vector_results() -> None:
    s = ss.linear(1.0, 0.0, 10)
    assert type(s(3)) is float and type(s(np.int64(3))) is float and type(s(3.0)) is float
    out = s(np.arange(12).reshape(3, 4))
    assert out.shape == (3, 4) and out.dtype == np.float64
    assert s(np.array([], dtype=np.int64)).shape == (0,)
