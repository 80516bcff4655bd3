"""Reduce on plateau in Keras 3: the callback's rule against Keras's own, and model.fit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

keras = pytest.importorskip("keras")  # before hypothesis runs: Keras changes the recursion limit

import steadystep as ss  # noqa: E402
from steadystep.compat import keras as ckeras  # noqa: E402

# -- Keras: the callback's rule, and model.fit ----------------------------------------------------
KERAS_METRIC = st.one_of(st.sampled_from([1.0, 0.5, 0.9999, 2.0, math.nan]), st.floats(0, 3))


def _keras_reference(metrics: list[float], **kw: Any) -> list[float]:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    cb = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", **kw)
    cb.set_model(model)
    cb.on_train_begin()
    out = []
    for epoch, m in enumerate(metrics):
        cb.on_epoch_end(epoch, {"val_loss": m})
        out.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    return out


@settings(max_examples=25, deadline=None)
@given(
    st.lists(KERAS_METRIC, max_size=25),
    st.sampled_from([0.5, 0.1]),
    st.integers(0, 3),
    st.sampled_from([0.0, 1e-4, 0.2]),
    st.integers(0, 2),
    st.sampled_from([0.0, 0.01]),
)
def test_keras_callback_rule(
    metrics: list[float],
    factor: float,
    patience: int,
    min_delta: float,
    cooldown: int,
    min_lr: float,
) -> None:
    kw = dict(
        factor=factor, patience=patience, min_delta=min_delta, cooldown=cooldown, min_lr=min_lr
    )
    expected = _keras_reference(metrics, **kw)

    s = ckeras.ReduceLROnPlateau(0.1, **kw)
    rule = ss.find_plateau(s)
    state = rule.initial_state()
    got = []
    for m in metrics:
        state, reduce = rule.update(state, m)
        if reduce:
            new = ss.apply_reduction(s, 0)
            state = rule.settle(state, new != s)
            s, rule = new, ss.find_plateau(new)
        got.append(s(0))
    # Keras keeps the LR in a float32 variable
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_keras_model_fit_reduces_on_val_loss() -> None:
    import steadystep.keras as sk

    lr = sk.KerasSchedule(ckeras.ReduceLROnPlateau(0.05, factor=0.5, patience=1, min_delta=10.0))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    x = np.ones((8, 2), dtype="float32")
    y = np.zeros((8, 1), dtype="float32")
    cb = sk.PlateauCallback("val_loss")
    seen: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(float(lr(int(model.optimizer.iterations))))
    )
    model.fit(
        x, y, validation_data=(x, y), epochs=4, batch_size=4, verbose=0, callbacks=[record, cb]
    )
    # min_delta=10: only the first epoch "improves"; patience 1: every later epoch reduces
    assert cb.state.evaluations == 4 and cb.state.triggered == 3
    np.testing.assert_allclose(seen, [0.05, 0.05, 0.025, 0.0125], rtol=1e-7)  # float32
    with pytest.raises(ValueError, match="for a monitor other than a loss"):
        ckeras.ReduceLROnPlateau(0.1, monitor="val_accuracy")
    with pytest.raises(ValueError, match="needs threshold_mode='abs'"):
        ss.plateau(ss.constant(0.1), semantics="keras")
