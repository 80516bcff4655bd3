"""steadystep.keras: KerasSchedule on the jax and torch backends, config round trip, model.fit."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ssk = pytest.importorskip("steadystep.keras")  # picks jax/torch when TensorFlow is absent
import keras  # noqa: E402

import steadystep as ss  # noqa: E402

BACKEND = keras.backend.backend()
S = ss.warmup(ss.cosine(0.1, 0.01, steps=6), steps=3)


def _weight(model: Any) -> float:
    # not get_weights(): Keras's Variable.__array__ warns under NumPy 2 (copy keyword)
    return float(keras.ops.convert_to_numpy(model.weights[0].value)[0, 0])


def _fit_and_read(schedule: Any, steps: int) -> tuple[list[float], list[float]]:
    """Fit w -> mean(x @ w) with SGD, x = 1: each update lowers w by exactly the LR it used.
    Returns (LR read from the optimizer before each batch, observed weight decrease)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=ssk.KerasSchedule(schedule)),
        loss=lambda y, p: keras.ops.mean(p),
    )
    read, weights = [], [_weight(model)]

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            read.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            weights.append(_weight(self.model))  # self.model syncs JAX state first

    x = np.ones((steps, 1), np.float32)
    model.fit(x, x, batch_size=1, epochs=1, verbose=0, shuffle=False, callbacks=[Probe()])
    return read, [a - b for a, b in itertools.pairwise(weights)]


def test_fit_uses_the_schedule_at_every_step() -> None:
    read, used = _fit_and_read(S, 9)
    want = [S(t) for t in range(9)]
    np.testing.assert_allclose(read, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(used, want, rtol=1e-4, atol=1e-7)  # w is float32


def test_values_on_ints_iterations_and_backend_tensors() -> None:
    lr = ssk.KerasSchedule(S)
    assert float(lr(4)) == pytest.approx(S(4))
    steps = keras.ops.arange(0, 12, dtype="int32")
    got = lr(steps)
    assert keras.backend.standardize_dtype(got.dtype) == keras.backend.floatx()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), S(np.arange(12)), rtol=1e-6)
    opt = keras.optimizers.Adam(learning_rate=lr)
    opt.build([keras.Variable(np.zeros(2, np.float32))])
    opt.iterations.assign(5)
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(S(5), rel=1e-6)


def test_config_round_trip_json_and_spec_text() -> None:
    lr = ssk.KerasSchedule(S)
    config = json.loads(json.dumps(lr.get_config()))
    assert config == {"schedule": S.to_dict()}
    assert ssk.KerasSchedule.from_config(config).schedule == S
    assert ssk.KerasSchedule.from_config({"schedule": repr(S)}).schedule == S
    back = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(lr))
    assert isinstance(back, ssk.KerasSchedule) and back.schedule == S
    opt = keras.optimizers.AdamW.from_config(keras.optimizers.AdamW(learning_rate=lr).get_config())
    assert opt._learning_rate.schedule == S


def test_saved_model_reloads_with_the_schedule(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=ssk.KerasSchedule(S)), loss="mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), batch_size=2, verbose=0)
    with warnings.catch_warnings():  # Keras's Variable.__array__ vs NumPy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(tmp_path / "m.keras")
        loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.optimizer._learning_rate.schedule == S
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations.value)) == 2
    assert float(keras.ops.convert_to_numpy(loaded.optimizer.learning_rate)) == pytest.approx(S(2))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0.1, TypeError, "`schedule`"),
        (lambda t: t, TypeError, "`schedule`"),
        ("cosine(", ValueError, "cosine"),
    ],
)
def test_bad_schedules(value: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ssk.KerasSchedule(value)


def test_bad_steps_and_configs() -> None:
    lr = ssk.KerasSchedule(S)
    with pytest.raises(TypeError, match="`step`"):
        lr(1.5)
    with pytest.raises(TypeError, match="`step` must hold integers"):
        lr(keras.ops.ones((2,), dtype="float32"))
    with pytest.raises(ValueError, match="`config`"):
        ssk.KerasSchedule.from_config({"learning_rate": 0.1})


_OTHER_BACKEND = """
import os, sys
os.environ["KERAS_BACKEND"] = sys.argv[1]
sys.path.insert(0, sys.argv[2])
import keras, numpy as np, steadystep as ss, test_keras as t
assert keras.backend.backend() == sys.argv[1]
read, used = t._fit_and_read(t.S, 6)
want = [t.S(k) for k in range(6)]
np.testing.assert_allclose(read, want, rtol=1e-6, atol=1e-9)
np.testing.assert_allclose(used, want, rtol=1e-4, atol=1e-7)
out = t.ssk.KerasSchedule(t.S)(keras.ops.convert_to_tensor(np.arange(5)))
print("OK", type(out).__module__, out.dtype)
"""


@pytest.mark.parametrize("backend", ["jax", "torch", "tensorflow"])
def test_each_backend_in_a_subprocess(backend: str) -> None:
    # Keras fixes its backend at first import: every backend but this process's runs apart.
    if backend == BACKEND:
        pytest.skip(f"{backend} is this process's backend, tested above")
    import importlib.util

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installable here (no wheel for this platform/Python)")
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND, backend, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    module = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}[backend]
    assert out.stdout.startswith("OK " + module), out.stdout


def test_missing_keras_names_the_extra() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'keras':\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import steadystep.keras\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'steadystep[keras]'" in out.stdout, out.stderr


def test_keras_global_clipnorm_is_steadystep_clip_by_global_norm() -> None:
    # The documented mapping: Keras's global_clipnorm uses TF's formula, as steadystep.clip does.
    from steadystep.clip import clip_by_global_norm

    grads = [np.array([3.0, 0.0], np.float32), np.array([[4.0], [12.0]], np.float32)]
    variables = [keras.Variable(np.zeros_like(g)) for g in grads]
    opt = keras.optimizers.SGD(
        learning_rate=ssk.KerasSchedule(ss.constant(1.0)), global_clipnorm=2.0
    )
    opt.apply_gradients(
        zip([keras.ops.convert_to_tensor(g) for g in grads], variables, strict=True)
    )
    want, norm = clip_by_global_norm(grads, 2.0)
    assert float(norm) == pytest.approx(13.0)
    for v, w in zip(variables, want, strict=True):
        np.testing.assert_allclose(-keras.ops.convert_to_numpy(v.value), w, rtol=1e-6)
