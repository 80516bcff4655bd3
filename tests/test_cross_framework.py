"""One schedule, every framework: NumPy, torch, optax under jit and Keras give the same values,
and tiny models trained with optax and with Keras use the schedule's LR at every step."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
ssk = pytest.importorskip("steadystep.keras")  # picks jax/torch when TensorFlow is absent
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402

import steadystep as ss  # noqa: E402
import steadystep.jax as ssj  # noqa: E402
from steadystep.schedules._base import Schedule  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import strategies  # noqa: E402
from test_keras import _fit_and_read  # noqa: E402


def _scale(s: Schedule) -> float:
    return float(np.max(np.abs(s(np.arange(0, 5_001, 5))))) or 1.0


# float32 vs the float64 reference. rtol: a few float32 ulps of the formula; atol: relative to the
# schedule's largest value, because constants such as an exponential rate are themselves rounded
# to float32 (0.999 is off by 1.3e-8, which rate**p can amplify up to ~1/(e |ln rate|) times).
RTOL, ATOL = 2e-5, 5e-5


@settings(max_examples=25, deadline=None)
@given(strategies.any_schedule, st.lists(strategies.steps, min_size=1, max_size=16))
def test_same_values_in_numpy_torch_optax_and_keras(s: Schedule, steps: list[int]) -> None:
    t = np.asarray(steps, np.int64)
    want = s(t)
    assert [s(int(k)) for k in steps] == pytest.approx(want.tolist(), rel=1e-12, abs=1e-300)
    got_torch = s(torch.as_tensor(t))
    assert got_torch.dtype == torch.float64
    np.testing.assert_allclose(got_torch.numpy(), want, rtol=1e-12, atol=1e-300)
    atol = ATOL * _scale(s)
    count = jnp.asarray(t, jnp.int32)
    for fn in (s, ssj.as_optax(s)):  # optax's int32 count, under jit
        np.testing.assert_allclose(np.asarray(jax.jit(fn)(count)), want, rtol=RTOL, atol=atol)
    got_keras = ssk.KerasSchedule(s)(keras.ops.convert_to_tensor(t))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got_keras), want, rtol=RTOL, atol=atol)


SCHEDULE = ss.presets.bert(0.1, num_train_steps=10, num_warmup_steps=3)


def _optax_fit(opt: Any, steps: int) -> tuple[list[float], list[float]]:
    """Fit w -> mean(x * w), x = 1, with `opt`: SGD lowers w by exactly the LR it used."""
    w = jnp.array([0.5])
    state = opt.init(w)

    @jax.jit
    def step(w: Any, state: Any) -> Any:
        grads = jax.grad(lambda w: jnp.mean(w * 1.0))(w)
        updates, state = opt.update(grads, state, w)
        return optax.apply_updates(w, updates), state

    read, used = [], []
    for _ in range(steps):
        new_w, state = step(w, state)
        read.append(float(ssj.get_learning_rate(state)))
        used.append(float(w[0] - new_w[0]))
        w = new_w
    return read, used


@pytest.mark.parametrize(
    "make",
    [
        lambda s: optax.inject_hyperparams(optax.sgd)(learning_rate=s),
        lambda s: optax.inject_hyperparams(optax.sgd)(learning_rate=ssj.stateful(s)),
        lambda s: ssj.scale_by_learning_rate(s),
    ],
    ids=["inject", "stateful", "scale_by_learning_rate"],
)
def test_optax_training_reads_back_the_lr_each_step_used(make: Any) -> None:
    read, used = _optax_fit(make(SCHEDULE), 12)
    want = [SCHEDULE(t) for t in range(12)]
    np.testing.assert_allclose(read, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(used, want, rtol=1e-5, atol=1e-7)


def test_optax_and_keras_training_use_the_same_lrs() -> None:
    optax_read, optax_used = _optax_fit(
        optax.inject_hyperparams(optax.sgd)(learning_rate=SCHEDULE), 12
    )
    keras_read, keras_used = _fit_and_read(SCHEDULE, 12)
    want = [SCHEDULE(t) for t in range(12)]
    np.testing.assert_allclose(keras_read, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(keras_read, optax_read, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(keras_used, optax_used, rtol=1e-4, atol=1e-7)
