"""steadystep.jax schedules: optax optimizers, jit, exact steps past 2**31, LR readback."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import steadystep as ss  # noqa: E402
import steadystep.jax as ssj  # noqa: E402
from steadystep.schedules._base import REGISTRY, Schedule  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import strategies  # noqa: E402


def _close(got: Any, want: Any, scale: float, rtol: float = 2e-5) -> None:
    """float32 vs float64 reference: relative to each value, and to the schedule's scale."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


# -- every registered schedule type is traceable ---------------------------------------------------
def _children(s: Schedule) -> list[Schedule]:
    out = []
    for f in dataclasses.fields(s):  # type: ignore[arg-type]
        value = getattr(s, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, Schedule):
                out.append(v)
    return out


def _examples() -> dict[type, Schedule]:
    """One instance per registered type: hand-written ones, presets, and every schedule that the
    classes' own docstring examples evaluate (so types added later are covered too)."""
    pool: list[Schedule] = [
        ss.warmup(ss.cosine(1e-3, 1e-5, steps=900), steps=100),
        ss.warmup(ss.polynomial(1.0, 0.0, 50, power=2.0, cycle=True), steps=10, overlay=True),
        ss.repeat(ss.linear(1.0, 0.1, 30), times=3, decay=0.5, stretch=2.0),
        ss.minimum([ss.power(1.0, -0.5, offset=1.0), ss.constant(0.5)]),
        ss.clamp(ss.exponential(1.0, 0.9, every=7, staircase=True), lower=0.1) * 2.0,
        ss.sequence([ss.inverse_sqrt(1.0, 10.0), ss.constant(0.1)], boundaries=[40]),
        ss.from_epochs(ss.step(1.0, every=2, rate=0.5), steps_per_epoch=10, discrete=True),
        ss.from_samples(ss.multistep(1.0, [100, 300], 0.1), batch_size=8),
        ss.from_tokens(ss.piecewise([10, 20], [1.0, 0.5, 0.1]), tokens_per_step=2),
        ss.one_minus_sqrt(1.0, 0.0, 100) >> ss.constant(0.0, steps=5),
        ss.presets.bert(1e-4, 1000, 100),
        ss.presets.noam(1.0, 400),
        ss.presets.one_cycle(1e-2, 500),
        ss.presets.sgdr(1e-2, 0.0, 50),
    ]
    seen: list[Schedule] = []
    original = Schedule.__call__

    def spy(self: Schedule, step: Any) -> Any:
        seen.append(self)
        return original(self, step)

    Schedule.__call__ = spy  # type: ignore[method-assign]
    try:
        for cls in set(REGISTRY.values()):
            namespace = {**vars(importlib.import_module(cls.__module__)), **vars(ss)}
            for example in doctest.DocTestParser().get_examples(inspect.getdoc(cls) or ""):
                try:
                    exec(example.source, namespace)
                except Exception:  # docstrings are tested by their own doctests
                    continue
    finally:
        Schedule.__call__ = original  # type: ignore[method-assign]
    found: dict[type, Schedule] = {}
    stack = pool + seen
    while stack:
        s = stack.pop()
        found.setdefault(type(s), s)
        stack.extend(_children(s))
    return found


EXAMPLES = _examples()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_schedule_traces_under_jit(name: str) -> None:
    # No schedule type may be untraceable: branches are `where`/`clip`, never Python `if`s.
    cls = REGISTRY[name]
    assert cls in EXAMPLES, f"no example of {name!r}: give its class a docstring example"
    s = EXAMPLES[cls]
    if getattr(cls, "host_only", False):  # by design (timm's noise, Python callables): says so
        with pytest.raises(TypeError, match="host"):
            jax.make_jaxpr(s)(jnp.int32(3))
        return
    steps = np.array([0, 1, 2, 3, 5, 9, 17, 33, 99, 100, 101, 257, 999, 4097], np.int32)
    want = s(steps.astype(np.int64))
    jaxpr = jax.make_jaxpr(s)(jnp.int32(3))  # traces to a pure jaxpr, no host callbacks
    assert "callback" not in str(jaxpr)
    scale = float(np.max(np.abs(want))) or 1.0
    _close(jax.jit(s)(jnp.asarray(steps)), want, scale)
    _close(jax.jit(lambda n: ssj.evaluate(s, n))(jnp.asarray(steps)), want, scale)


# -- exact steps past 2**24 and 2**31 --------------------------------------------------------------
BIG = [2**24 - 1, 2**24 + 1, 2**24 + 3, 2**31 - 1, 2**31 + 5, 2**33 + 999, 2**40 + 2, 2**50 + 77]

LONG = [
    ss.repeat(ss.linear(1.0, 0.0, steps=4)),
    ss.repeat(ss.cosine(1.0, 0.1, steps=1_000), decay=0.99999),
    ss.repeat(ss.warmup(ss.cosine(1.0, 0.0, steps=900), steps=100), times=2**32),
    ss.warmup(ss.cosine(1.0, 0.0, steps=2**30 + 3), steps=2**24) >> ss.constant(0.5),
    ss.sequence([ss.constant(1.0), ss.linear(0.5, 0.0, steps=10)], boundaries=[2**33 + 995]),
    ss.polynomial(1.0, 0.0, steps=1_000, power=2.0, cycle=True),
    ss.step(1.0, every=2**24 + 1, rate=0.9),
    ss.exponential(1.0, 0.999, every=1_000_003, staircase=True),
    ss.multistep(1.0, [2**24 + 2, 2**31 + 5], 0.1),
    ss.piecewise([2**24 + 2, 2**33 + 1000], [3.0, 2.0, 1.0]),
    ss.from_epochs(ss.repeat(ss.linear(1.0, 0.0, 3)), steps_per_epoch=1_000, discrete=True),
    ss.from_samples(ss.repeat(ss.linear(1.0, 0.0, 7)), batch_size=3),
    ss.from_tokens(ss.exponential(1.0, 0.5, every=2**30, staircase=True), tokens_per_step=16),
    ss.presets.noam(1.0, 4_000),
    ss.clamp(ss.inverse_sqrt(1.0, 100.0), lower=1e-4) * 3.0,
]


@pytest.mark.parametrize("s", LONG, ids=repr)
def test_exact_evaluation_past_float32_integers(s: Schedule) -> None:
    want = s(np.asarray(BIG, np.float64))  # float64 holds these steps exactly
    hi = jnp.asarray([n >> 24 for n in BIG], jnp.int32)
    lo = jnp.asarray([n % 2**24 for n in BIG], jnp.int32)
    got = jax.jit(lambda hi, lo: ssj.evaluate(s, ssj.StepCount(hi, lo)))(hi, lo)
    _close(got, want, float(np.max(np.abs(want))) or 1.0, rtol=3e-6)
    small = np.asarray([n for n in BIG if n < 2**31])  # optax's int32 count, through as_optax
    got = jax.jit(ssj.as_optax(s))(jnp.asarray(small, jnp.int32))
    _close(got, s(small), float(np.max(np.abs(want))) or 1.0, rtol=3e-6)


def _reducible(s: Schedule) -> bool:
    """Whether evaluate() promises exactness for `s` at any step (see steadystep.jax._step)."""
    if s.length is not None and math.ceil(s.length) <= 2**24:
        return True  # clamped to its length
    if isinstance(s, ss.Repeat):
        period = s.schedule.length
        return s.stretch == 1 and float(period).is_integer() and _reducible(s.schedule)
    if isinstance(s, ss.FromEpochs):
        return s.discrete and float(s.steps_per_epoch).is_integer() and _reducible(s.schedule)
    if isinstance(s, ss.Sequence):
        cuts_ok = all(float(b).is_integer() for b in s.boundaries or ())
        return cuts_ok and all(map(_reducible, s.parts))
    if isinstance(s, ss.Warmup):
        return float(s.steps).is_integer() and _reducible(s.schedule)
    return all(_reducible(child) for child in _children(s))


@settings(max_examples=30, deadline=None)
@given(strategies.any_schedule, st.lists(st.integers(2**24, 2**45), min_size=1, max_size=4))
def test_random_schedules_exact_at_huge_steps(s: Schedule, steps: list[int]) -> None:
    assume(_reducible(s))
    t = np.asarray(steps, np.int64)
    with np.errstate(over="ignore"):
        want = s(t)  # float64 holds these steps exactly
    scale = max(float(np.max(np.abs(s(np.arange(0, 5_001, 5))))), float(np.max(np.abs(want))))
    _close(ssj.evaluate(s, t), want, scale or 1.0, rtol=2e-5)


def test_numpy_int64_steps_and_x64_mode() -> None:
    s = ss.sequence([ss.repeat(ss.linear(1.0, 0.0, steps=10)), ss.constant(2.0)], [2**40])
    steps = np.array([2**31 + 3, 2**40 - 1, 2**40 + 5], np.int64)  # jnp.asarray would wrap
    np.testing.assert_allclose(np.asarray(ssj.evaluate(s, steps)), s(steps), rtol=1e-6)
    with jax.enable_x64(True):  # a context: other tests share the process
        got = ssj.evaluate(s, jnp.asarray(steps))
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got), s(steps), rtol=1e-15)
    assert not jax.config.read("jax_enable_x64")


def test_the_plain_float32_path_does_lose_large_steps() -> None:
    # Why evaluate() exists: float32(2**26 + 2) == 2**26, so a 4-step cycle slips by 2 steps.
    s = ss.repeat(ss.linear(1.0, 0.0, steps=4))
    n = 2**26 + 2
    assert s(n) == 0.5
    assert float(s(jnp.asarray(n, jnp.int32))) == 1.0
    assert float(ssj.evaluate(s, jnp.asarray(n, jnp.int32))) == 0.5


def test_step_count_carries_and_never_saturates() -> None:
    c = ssj.step_count(2**24 - 1)
    assert (int(c.next()), int(c.next().hi), int(c.next().lo)) == (2**24, 1, 0)
    step = jax.jit(lambda c: c.next())
    c = ssj.step_count(2**31 - 2)
    for _ in range(3):
        c = step(c)
    assert int(c) == 2**31 + 1  # an int32 count would be stuck at 2**31 - 1 (optax) or wrap
    assert int(optax.safe_increment(jnp.asarray(2**31 - 1, jnp.int32))) == 2**31 - 1
    assert int(ssj.step_count(2**55 - 1)) == 2**55 - 1
    np.testing.assert_array_equal(
        np.asarray(ssj.evaluate(ss.linear(0.0, 8.0, 8), jnp.arange(10))),
        np.minimum(np.arange(10), 8),
    )


# -- every optax optimizer takes a schedule as learning_rate ------------------------------------
def _optax_optimizers() -> list[str]:
    names = []
    for name in sorted(optax.__all__ if hasattr(optax, "__all__") else dir(optax)):
        with warnings.catch_warnings():  # deprecated aliases warn on attribute access
            warnings.simplefilter("ignore")
            fn = getattr(optax, name, None)
        if not inspect.isfunction(fn):
            continue
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].name != "learning_rate":
            continue
        required = [p for p in params[1:] if p.default is inspect.Parameter.empty]
        if not required and not name.startswith("scale_by"):
            names.append(name)
    return names


# optax's own limits, not steadystep's: these take no schedule (sm3, rprop: a number only;
# lbfgs: a line search; noisy_sgd: warns without a key).
NOT_SCHEDULABLE = {"lbfgs", "noisy_sgd", "rprop", "sm3"}
OPTIMIZERS = [name for name in _optax_optimizers() if name not in NOT_SCHEDULABLE]


def test_optimizer_list_is_the_real_one() -> None:
    assert {"adam", "adamw", "sgd", "lion", "lamb", "rmsprop", "adafactor"} <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_schedule_is_learning_rate_of_every_optax_optimizer(name: str) -> None:
    # Same updates as optax's own linear schedule: the LR really is used, at the same steps.
    params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.array([0.1, -0.2])}
    reference = optax.linear_schedule(0.1, 0.01, transition_steps=3)
    results = []
    for lr in (reference, ss.linear(0.1, 0.01, steps=3)):
        opt = getattr(optax, name)(learning_rate=lr)
        p, state = params, opt.init(params)
        for k in range(3):
            grads = jax.tree.map(lambda x, k=k: jnp.sin(x * (k + 1)) + 0.1, p)
            updates, state = opt.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        results.append(p)
    for got in results[1:]:
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7), got, results[0]
        )


# -- reading the LR back from the optimizer state ---------------------------------------------
def _run(opt: Any, n: int) -> list[float]:
    params = jnp.ones(3)
    state = opt.init(params)
    update = jax.jit(opt.update)
    lrs = []
    for _ in range(n):
        _, state = update(jnp.ones(3), state, params)
        lrs.append(float(ssj.get_learning_rate(state)))
    return lrs


def test_learning_rate_readback_is_the_lr_each_update_used() -> None:
    s = ss.warmup(ss.cosine(0.1, 0.0, steps=6), steps=3)
    want = [s(t) for t in range(8)]
    inject = optax.inject_hyperparams(optax.adam)
    for opt in (
        inject(learning_rate=s),
        inject(learning_rate=ssj.stateful(s)),
        optax.chain(optax.clip_by_global_norm(1.0), inject(learning_rate=ssj.as_optax(s))),
        optax.chain(optax.scale_by_adam(), ssj.scale_by_learning_rate(s)),
    ):
        np.testing.assert_allclose(_run(opt, 8), want, rtol=1e-6, atol=1e-9)


def test_stateful_schedule_runs_past_2_31_under_jit() -> None:
    s = ss.repeat(ss.linear(1.0, 0.0, steps=10))
    start = 2**31 - 3
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=ssj.stateful(s, start=start))
    got = _run(opt, 6)
    np.testing.assert_allclose(got, [s(start + k) for k in range(6)], rtol=1e-6)
    plain = optax.inject_hyperparams(optax.sgd)(learning_rate=s)
    params = jnp.ones(1)
    state = plain.init(params)._replace(count=jnp.asarray(2**31 - 1, jnp.int32))
    _, state = plain.update(jnp.ones(1), state, params)
    assert int(state.count) == 2**31 - 1  # optax's count saturates: the schedule would freeze


def test_scale_by_learning_rate_scales_and_counts() -> None:
    tx = ssj.scale_by_learning_rate(ss.linear(2.0, 0.0, steps=2), flip_sign=False)
    state = tx.init(None)
    out = []
    for _ in range(3):
        u, state = tx.update({"a": jnp.ones(2, jnp.bfloat16)}, state)
        out.append(float(u["a"][0]))
        assert u["a"].dtype == jnp.bfloat16
    assert out == [2.0, 1.0, 0.0] and int(state.count) == 3
    u, _ = ssj.scale_by_learning_rate(ss.constant(0.5)).update(jnp.ones(1), tx.init(None))
    assert float(u[0]) == -0.5


def test_get_learning_rate_names_the_fix_when_absent() -> None:
    state = optax.adam(1e-3).init(jnp.ones(2))
    with pytest.raises(KeyError, match="inject_hyperparams"):
        ssj.get_learning_rate(state)
    opt = optax.inject_hyperparams(optax.adamw)(learning_rate=0.1, weight_decay=ss.constant(0.01))
    state = opt.init(jnp.ones(2))
    assert float(ssj.get_learning_rate(state, "weight_decay")) == pytest.approx(0.01)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("step", "error", "match"),
    [
        (1.5, TypeError, "`step`"),
        (2.0, TypeError, "integer step count"),
        (jnp.asarray([1.0, 2.0]), TypeError, "float step is ambiguous"),
        (-1, ValueError, r"step=-1"),
        (jnp.asarray([3, -2]), ValueError, "`step` must be >= 0"),
        (True, TypeError, "`step`"),
        ("3", TypeError, "`step`"),
    ],
)
def test_bad_steps(step: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ssj.evaluate(ss.constant(1.0), step)


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(TypeError, match="`schedule`"):
        ssj.evaluate(lambda t: t, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`schedule`"):
        ssj.as_optax(0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`schedule`"):
        ssj.stateful("cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`n` must be in \[0, 2\*\*55\). Received: n=-1"):
        ssj.step_count(-1)
    with pytest.raises(TypeError, match="`flip_sign`"):
        ssj.scale_by_learning_rate(ss.constant(1.0), flip_sign=1)  # type: ignore[arg-type]


def test_import_is_lazy_and_missing_jax_names_the_extra() -> None:
    code = (
        "import sys\n"
        "import steadystep, steadystep.clip\n"
        "assert not {'jax', 'optax', 'keras', 'torch'} & set(sys.modules), sys.modules.keys()\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('jax', 'optax'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import steadystep.jax\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'steadystep[jax]'" in out.stdout
