"""steadystep.keras.clipping: global-norm clip and non-finite policy under ``model.fit``.

This process runs Keras's torch backend (conftest); the JAX backend runs in a subprocess.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ._subprocess import run_ok

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import steadystep.keras as ssk  # noqa: E402

BACKEND = keras.backend.backend()

X = np.array([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0], [2.0, 1.0, 0.0], [-1.0, 0.0, 1.5]], "float32")
Y = np.array([[10.0, -4.0], [3.0, 8.0], [-6.0, 2.0], [5.0, 5.0]], "float32")


def _model(opt: Any) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=opt, loss="mse")
    return model


def _fit(model: Any, x: np.ndarray = X) -> None:
    model.fit(x, Y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)


def _weights(model: Any) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


def _opt_state(opt: Any) -> list[np.ndarray]:
    """Keras's own optimizer variables (steadystep's norm and counts left out)."""
    return [
        np.array(keras.ops.convert_to_numpy(v))
        for v in opt.variables
        if "steadystep_" not in v.path
    ]


def _torch_clipped_step(kernel: np.ndarray, bias: np.ndarray, max_norm: float, lr: float) -> Any:
    """One SGD step on a plain torch twin, clipped by torch.nn.utils.clip_grad_norm_."""
    w = torch.tensor(kernel, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    loss = ((torch.tensor(X) @ w + b - torch.tensor(Y)) ** 2).mean()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_([w, b], max_norm)
    assert norm > max_norm  # the clip is active
    with torch.no_grad():
        return (w - lr * w.grad).numpy(), (b - lr * b.grad).numpy()


@pytest.mark.parametrize("nonfinite", ["propagate", "skip"])
def test_clipped_sgd_step_equals_torch_clip_grad_norm(nonfinite: str) -> None:
    model = _model(ssk.clipping(keras.optimizers.SGD(0.1), 0.5, nonfinite=nonfinite))
    kernel, bias = _weights(model)
    _fit(model)
    want_kernel, want_bias = _torch_clipped_step(kernel, bias, 0.5, 0.1)
    got_kernel, got_bias = _weights(model)
    np.testing.assert_allclose(got_kernel, want_kernel, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_bias, want_bias, rtol=1e-6, atol=1e-7)


def test_clip_coefficient_has_torchs_epsilon() -> None:
    # at norm 2e-6 with max_norm 1e-6 the epsilon decides: torch 1/3, TF's formula 1/2
    g = np.array([2e-6, 0.0], "float32")
    opt = ssk.clipping(keras.optimizers.SGD(1.0), 1e-6)
    a = keras.Variable(np.zeros(2, "float32"))
    opt.apply([keras.ops.convert_to_tensor(g)], [a])
    t = torch.zeros(2, requires_grad=True)
    t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_([t], 1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), -t.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a)[0], -2e-6 / 3, rtol=1e-5)


def test_no_clip_below_max_norm_and_none_keeps_keras_clipping() -> None:
    plain = _model(keras.optimizers.Adam(0.01, global_clipnorm=1.0))
    ours = _model(ssk.clipping(keras.optimizers.Adam(0.01, global_clipnorm=1.0), nonfinite="skip"))
    big = _model(ssk.clipping(keras.optimizers.Adam(0.01), 1e6))
    unclipped = _model(keras.optimizers.Adam(0.01))
    for _ in range(3):
        for m in (plain, ours, big, unclipped):
            _fit(m)
    for a, b in zip(_weights(ours), _weights(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for a, b in zip(_weights(big), _weights(unclipped), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_skip_leaves_weights_and_optimizer_state_unchanged(bad: float) -> None:
    # EMA variables are optimizer state too; Keras 3.15's JAX backend fails a second fit()
    # with use_ema=True even without steadystep (TypeError in Variable.value), so torch only.
    ema = keras.backend.backend() != "jax"
    opt = ssk.clipping(keras.optimizers.AdamW(0.01, use_ema=ema), 1.0, nonfinite="skip")
    model = _model(opt)
    twin = _model(ssk.clipping(keras.optimizers.AdamW(0.01, use_ema=ema), 1.0))
    _fit(model)
    _fit(twin)
    weights, state = _weights(model), _opt_state(opt)
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 1
    x = X.copy()
    x[1, 2] = bad
    _fit(model, x)
    for a, b in zip(_weights(model), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_opt_state(opt), state, strict=True):
        np.testing.assert_array_equal(a, b)
    stats = ssk.clip_stats(opt)
    assert stats["grad/skipped_steps"] == 1 and not np.isfinite(stats["grad/norm"])
    # the run goes on as if the bad batch never came
    _fit(model)
    _fit(twin)
    for a, b in zip(_weights(model), _weights(twin), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 2


def test_propagate_matches_keras() -> None:
    x = X.copy()
    x[0, 0] = np.inf
    ours = _model(ssk.clipping(keras.optimizers.Adam(0.01), nonfinite="propagate"))
    plain = _model(keras.optimizers.Adam(0.01))
    _fit(ours, x)
    _fit(plain, x)
    for a, b in zip(_weights(ours), _weights(plain), strict=True):
        assert np.isnan(a).any()
        np.testing.assert_array_equal(a, b)  # NaN at the same places
    assert int(keras.ops.convert_to_numpy(ours.optimizer.iterations)) == 1


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_skip_in_a_custom_loop_before_build_and_with_a_missing_gradient() -> None:
    opt = ssk.clipping(keras.optimizers.Adam(0.1), 1.0, nonfinite="skip")
    a = keras.Variable(np.ones(3, "float32"))
    b = keras.Variable(np.zeros(2, "float32"))
    bad = keras.ops.convert_to_tensor(np.array([1.0, np.nan, 0.0], "float32"))
    opt.apply([bad, None], [a, b])  # the first call builds the optimizer
    assert opt.built and int(keras.ops.convert_to_numpy(opt.iterations)) == 0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), np.ones(3))
    fresh = keras.optimizers.Adam(0.1)
    fresh.build([a, b])
    for got, want in zip(_opt_state(opt), _opt_state(fresh), strict=True):
        np.testing.assert_array_equal(got, want)
    good = keras.ops.convert_to_tensor(np.array([3.0, 0.0, 4.0], "float32"))
    opt.apply([good, None], [a, b])
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 1
    # Adam's first step moves each weight by lr * sign(g) whatever the clip; the moment shows it
    m = next(s for v, s in zip(opt.variables, _opt_state(opt), strict=True) if "momentum" in v.path)
    np.testing.assert_allclose(m, 0.1 * np.array([3.0, 0.0, 4.0]) / (5.0 + 1e-6), rtol=1e-6)


def test_skip_with_gradient_accumulation_drops_only_the_bad_micro_batch() -> None:
    def run(grads: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        opt = ssk.clipping(
            keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), 1.0, nonfinite="skip"
        )
        a = keras.Variable(np.ones(2, "float32"))
        for g in grads:
            opt.apply([keras.ops.convert_to_tensor(g)], [a])
        return keras.ops.convert_to_numpy(a), _opt_state(opt)  # micro-batch count, accumulators

    g1, g2 = np.array([3.0, 0.0], "float32"), np.array([0.0, 1.0], "float32")
    bad = np.array([np.inf, 1.0], "float32")
    got, state = run([g1, bad, g2])
    want, want_state = run([g1, g2])
    np.testing.assert_array_equal(got, want)
    for a, b in zip(state, want_state, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(state[0]) == 2
    mean = (g1 + g2) / 2  # norm 1.58: the averaged gradient is clipped to 1
    np.testing.assert_allclose(want, 1.0 - 0.1 * mean / (np.linalg.norm(mean) + 1e-6), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": "adam"}, TypeError, "`optimizer`"),
        (
            {"optimizer": keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))},
            TypeError,
            "`optimizer` must not be a LossScaleOptimizer",
        ),
        ({"max_norm": -1.0}, ValueError, "`max_norm`"),
        ({"max_norm": float("nan")}, ValueError, "`max_norm`"),
        ({"max_norm": "1"}, TypeError, "`max_norm`"),
        ({"nonfinite": "drop"}, ValueError, "`nonfinite`"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type, match: str) -> None:
    args = {"optimizer": keras.optimizers.SGD(0.1), "max_norm": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        ssk.clipping(**args)


def test_refuses_double_clipping() -> None:
    with pytest.raises(ValueError, match=r"`max_norm`.*global_clipnorm"):
        ssk.clipping(keras.optimizers.SGD(0.1, global_clipnorm=1.0), 1.0)
    opt = ssk.clipping(keras.optimizers.SGD(0.1), 1.0)
    with pytest.raises(ValueError, match="`optimizer` already has steadystep clipping"):
        ssk.clipping(opt, 2.0)


_JAX = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, sys.argv[1])
import keras
import tests.test_keras_clip as t
assert keras.backend.backend() == "jax"
t.test_clipped_sgd_step_equals_torch_clip_grad_norm("skip")
t.test_skip_leaves_weights_and_optimizer_state_unchanged(float("nan"))
t.test_propagate_matches_keras()
print("OK")
"""


def test_jax_backend_in_a_subprocess() -> None:
    if BACKEND == "jax":
        pytest.skip("jax is this process's backend, tested above")
    pytest.importorskip("jax")
    run_ok(_JAX)
