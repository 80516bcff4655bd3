"""steadystep.keras's adaptive rules under ``model.fit``: the same steps as steadystep.torch's
clippers on a plain PyTorch twin, exact skips, saving and loading, bad arguments.

This process runs Keras's torch backend (conftest); the JAX backend, whose ``fit`` is
stateless and jitted, runs the same checks in a subprocess.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ._subprocess import run_ok

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
import steadystep.keras as ssk  # noqa: E402
import steadystep.torch as sst  # noqa: E402
from steadystep.keras._adaptive import rule_from_config  # noqa: E402

LR = 0.1


def _batches(n: int, spikes: tuple[int, ...] = (), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` batches of 4 samples; the targets of the ``spikes`` batches are 40x larger."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 3)).astype("float32")
    y = (3 * rng.normal(size=(n, 4, 2))).astype("float32")
    for i in spikes:
        y[i] *= 40
    return x, y


def _model(opt: Any) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=opt, loss="mse")
    return model


def _weights(model: Any) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


def _fit(model: Any, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model.fit(x.reshape(-1, 3), y.reshape(-1, 2), batch_size=4, shuffle=False, verbose=0)


def _torch_twin(
    kernel: np.ndarray, bias: np.ndarray, make: Callable[..., Any], data: Any
) -> tuple[list[np.ndarray], int, int]:
    """The same SGD run in plain PyTorch, each step clipped by ``make(params, optimizer)``.
    Returns the final weights in Keras's layout and the counts of clipped and skipped steps."""
    w = torch.nn.Parameter(torch.tensor(kernel.T.copy()))  # torch's [out, in]
    b = torch.nn.Parameter(torch.tensor(bias.copy()))
    opt = torch.optim.SGD([w, b], lr=LR)
    clipper = make([w, b], opt)
    clipped = skipped = 0
    for x, y in zip(*data, strict=True):
        opt.zero_grad()
        ((torch.tensor(x) @ w.T + b - torch.tensor(y)) ** 2).mean().backward()
        clipper.clip()
        clipped += int(clipper.last.clipped and not clipper.last.skipped)
        skipped += int(clipper.last.skipped)
        opt.step()
    return [w.detach().numpy().T, b.detach().numpy()], clipped, skipped


CASES: dict[str, tuple[dict[str, Any], Callable[..., Any]]] = {
    "autoclip": (
        {"rule": ssk.AutoClip(percentile=25, history=8)},
        lambda p, opt: sst.AutoClip(p, percentile=25, history=8),
    ),
    "zclip": (
        {"rule": ssk.ZClip(warmup_steps=5)},
        lambda p, opt: sst.ZClip(p, warmup_steps=5),
    ),
    "zclip-capped": (
        {"rule": ssk.ZClip(warmup_steps=5, clip_option="mean"), "max_norm": 4.0},
        lambda p, opt: sst.ZClip(p, warmup_steps=5, clip_option="mean", max_norm=4.0),
    ),
    "spike-skip": (
        {"rule": ssk.SpikeSkip(window=8, sigma=3.0, min_history=4)},
        lambda p, opt: sst.SpikeSkip(p, window=8, sigma=3.0, min_history=4, optimizer=opt),
    ),
    "spike-skip-capped": (
        {"rule": ssk.SpikeSkip(window=8, sigma=3.0, min_history=4), "max_norm": 6.0},
        lambda p, opt: sst.SpikeSkip(
            p, window=8, sigma=3.0, min_history=4, max_norm=6.0, optimizer=opt
        ),
    ),
    "agc": ({"rule": ssk.AGC(0.05)}, lambda p, opt: sst.AGC(p, 0.05)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_takes_the_steps_of_the_torch_clipper_on_a_plain_twin(case: str) -> None:
    kwargs, make = CASES[case]
    data = _batches(24, spikes=(10, 17))
    opt = ssk.clipping(keras.optimizers.SGD(LR), **kwargs)
    model = _model(opt)
    kernel, bias = _weights(model)
    _fit(model, data)
    want, clipped, skipped = _torch_twin(kernel, bias, make, data)
    for got, expected in zip(_weights(model), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    stats = ssk.clip_stats(opt)
    assert clipped + skipped > 0  # the rule acted
    assert (stats["grad/clipped_steps"], stats["grad/skipped_steps"]) == (clipped, skipped)
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 24 - skipped


def test_steps_per_execution_takes_the_same_steps() -> None:
    """Several steps in one compiled call (JAX: one jitted loop) carry the rule's state."""
    if keras.backend.backend() == "torch":
        pytest.skip("Keras's torch backend takes steps_per_execution=1 only (JAX: subprocess)")
    runs = []
    for steps in (1, 4):
        rule = ssk.SpikeSkip(window=8, sigma=3.0, min_history=4)
        opt = ssk.clipping(keras.optimizers.AdamW(0.01), 5.0, rule=rule)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer=opt, loss="mse", steps_per_execution=steps)
        _fit(model, _batches(24, spikes=(10, 17)))
        runs.append((_weights(model), ssk.clip_stats(opt)))
    (one, stats_one), (four, stats_four) = runs
    assert stats_one == stats_four and stats_one["grad/skipped_steps"] == 2
    for a, b in zip(one, four, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo on array_api_compat's lru_cache
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile internals
def test_compiled_train_step_takes_the_same_steps() -> None:
    """``jit_compile=True``: torch.compile on the torch backend (XLA on JAX) equals eager."""
    runs = []
    for jit in (False, True):
        rule = ssk.SpikeSkip(window=8, sigma=3.0, min_history=4)
        opt = ssk.clipping(keras.optimizers.AdamW(0.01), 5.0, rule=rule)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer=opt, loss="mse", jit_compile=jit)
        _fit(model, _batches(12, spikes=(9,)))
        runs.append((_weights(model), ssk.clip_stats(opt)))
    (eager, stats_eager), (compiled, stats_compiled) = runs
    assert stats_eager["grad/skipped_steps"] == stats_compiled["grad/skipped_steps"] == 1
    assert stats_eager["grad/clipped_steps"] == stats_compiled["grad/clipped_steps"]
    for a, b in zip(eager, compiled, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_clip_stats_reads_through_a_loss_scale_optimizer() -> None:
    lso = keras.optimizers.LossScaleOptimizer(ssk.clipping(keras.optimizers.SGD(LR), 1.0))
    _fit(_model(lso), _batches(3))
    assert ssk.clip_stats(lso) == ssk.clip_stats(lso.inner_optimizer)
    assert ssk.clip_stats(lso)["grad/clipped_steps"] == 3


def test_freezing_a_layer_between_fits_keeps_agc_on_the_right_weights() -> None:
    """The trainable set shrinks after the optimizer was built (torch backend; Keras's JAX
    backend refuses that even without steadystep): AGC pairs each gradient with its own
    weight and the frozen layer stays put. A torch twin freezes the same layer."""
    if keras.backend.backend() == "jax":
        pytest.skip("Keras's JAX backend cannot shrink the trainable set of a built optimizer")
    opt = ssk.clipping(keras.optimizers.SGD(LR), rule=ssk.AGC(0.05), nonfinite="skip")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.compile(optimizer=opt, loss="mse")
    start = [torch.nn.Parameter(torch.tensor(w.T.copy())) for w in _weights(model)]
    x, y = _batches(10, spikes=(7,))
    _fit(model, (x[:4], y[:4]))
    model.layers[0].trainable = False
    frozen = _weights(model)[:2]
    model.compile(optimizer=opt, loss="mse")
    _fit(model, (x[4:], y[4:]))
    for a, b in zip(_weights(model)[:2], frozen, strict=True):
        np.testing.assert_array_equal(a, b)

    w1, b1, w2, b2 = start
    sgd = torch.optim.SGD(start, lr=LR)
    every, last = sst.AGC(start, 0.05), sst.AGC([w2, b2], 0.05)
    for i, (xb, yb) in enumerate(zip(x, y, strict=True)):
        sgd.zero_grad()
        if i == 4:
            w1.requires_grad_(False)
            b1.requires_grad_(False)
        out = (torch.tensor(xb) @ w1.T + b1) @ w2.T + b2
        ((out - torch.tensor(yb)) ** 2).mean().backward()
        (every if i < 4 else last).clip()
        sgd.step()
    want = [t.detach().numpy().T for t in start]
    for got, expected in zip(_weights(model), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def _values(opt: Any) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in opt.variables]


def test_saved_model_reloads_with_its_clipping_and_state(tmp_path: Path) -> None:
    rule = ssk.AutoClip(percentile=30, history=6)
    lr = ssk.KerasSchedule(ss.warmup(ss.cosine(0.01, 0.001, steps=20), steps=4))
    opt = ssk.clipping(keras.optimizers.AdamW(lr), 5.0, rule=rule, nonfinite="skip")
    model = _model(opt)
    _fit(model, _batches(9, spikes=(4,)))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    again = loaded.optimizer
    assert isinstance(again, keras.optimizers.AdamW) and isinstance(again, ssk._clip.Clipping)
    assert again.steadystep_clipping == opt.steadystep_clipping
    assert again._learning_rate.schedule == opt._learning_rate.schedule  # the KerasSchedule
    assert ssk.clip_stats(again) == ssk.clip_stats(opt)
    for a, b in zip(_values(again), _values(opt), strict=True):
        np.testing.assert_array_equal(a, b)  # history, count, moments, iterations
    more = _batches(7, spikes=(3,), seed=1)
    _fit(model, more)
    _fit(loaded, more)
    for a, b in zip(_weights(loaded), _weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert ssk.clip_stats(again) == ssk.clip_stats(opt)


def test_config_round_trip_keeps_settings_and_the_inner_optimizer() -> None:
    opt = ssk.clipping(
        keras.optimizers.Adam(3e-4, beta_1=0.8),
        rule=ssk.SpikeSkip(window=16, sigma=4.0),
        max_norm=2.0,
    )
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is type(opt) and not again.built
    assert again.steadystep_clipping == opt.steadystep_clipping
    assert again.steadystep_clipping["nonfinite"] == "skip"
    assert again.beta_1 == pytest.approx(0.8)
    assert float(keras.ops.convert_to_numpy(again.learning_rate)) == pytest.approx(3e-4)
    for rule in (ssk.AGC(0.02, output_axis=0), ssk.AutoClip(5, 50), ssk.ZClip(0.9, 3.0, 7)):
        assert rule_from_config(rule.get_config()) == rule


def test_non_finite_batch_leaves_the_rule_state_and_is_counted() -> None:
    opt = ssk.clipping(keras.optimizers.SGD(LR), rule=ssk.AutoClip(history=4), nonfinite="skip")
    model = _model(opt)
    x, y = _batches(3)
    _fit(model, (x, y))
    weights, state = _weights(model), _values(opt)
    x = x.copy()
    x[1, 0, 0] = np.nan
    _fit(model, (x[1:2], y[1:2]))
    for a, b in zip(_weights(model), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    names = [v.path for v in opt.variables]
    for name, a, b in zip(names, _values(opt), state, strict=True):
        if name.endswith(("steadystep_norm", "steadystep_skipped")):
            continue
        np.testing.assert_array_equal(a, b, err_msg=name)  # history and count included
    stats = ssk.clip_stats(opt)
    assert stats["grad/skipped_steps"] == 1 and np.isnan(stats["grad/norm"])


def test_spike_skip_with_accumulation_drops_the_whole_window() -> None:
    """A spike in the averaged gradient skips that update and forgets its micro-batches;
    the run then goes on as if that window had never come."""

    def run(grads: list[float]) -> tuple[Any, Any]:
        rule = ssk.SpikeSkip(window=8, sigma=3.0, min_history=3)
        opt = ssk.clipping(keras.optimizers.SGD(LR, gradient_accumulation_steps=2), rule=rule)
        a = keras.Variable(np.zeros(2, "float32"))
        for g in grads:
            opt.apply([keras.ops.convert_to_tensor(np.array([g, -g], "float32"))], [a])
        return a, opt

    normal = [1.0, 1.2, 0.9, 1.1, 1.0, 0.8, 1.1, 1.0]  # four windows, averaged norms ~1.5
    after = [0.9, 1.1, 1.2, 1.0]
    spiky, opt = run([*normal, 50.0, 1.0, *after])
    plain, ref = run([*normal, *after])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(spiky), keras.ops.convert_to_numpy(plain))
    assert (
        int(keras.ops.convert_to_numpy(opt.iterations))
        == 6
        == int(keras.ops.convert_to_numpy(ref.iterations))
    )
    assert ssk.clip_stats(opt)["grad/skipped_steps"] == 1
    for acc in opt._accumulated_gradients:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(acc), 0.0)


def test_agc_clips_each_output_unit_of_a_keras_kernel() -> None:
    opt = ssk.clipping(keras.optimizers.SGD(1.0), rule=ssk.AGC(0.1))
    kernel = keras.Variable(np.array([[1.0, 10.0], [0.0, 0.0]], "float32"))  # [in, out]
    g = np.array([[1.0, 1.0], [0.0, 0.0]], "float32")
    opt.apply([keras.ops.convert_to_tensor(g)], [kernel])
    # unit 0 (column 0): ||W|| = 1, max 0.1 -> g scaled to 0.1; unit 1: ||W|| = 10, max 1: kept
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(kernel), [[0.9, 9.0], [0.0, 0.0]], rtol=1e-6
    )
    assert ssk.clip_stats(opt)["grad/clipped_steps"] == 1


def _build(opt: Any) -> Any:
    opt.build([keras.Variable(np.zeros(2, "float32"))])
    return opt


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: ssk.AutoClip(percentile=101), ValueError, "`percentile`"),
        (lambda: ssk.AutoClip(history=0), ValueError, "`size`|`history`"),
        (lambda: ssk.ZClip(alpha=1.5), ValueError, "`alpha`"),
        (lambda: ssk.ZClip(mode="median"), ValueError, "`mode`"),
        (lambda: ssk.ZClip(skip_update_on_spike="yes"), TypeError, "`skip_update_on_spike`"),
        (lambda: ssk.SpikeSkip(window=1), ValueError, "`window`"),
        (lambda: ssk.SpikeSkip(window=8, min_history=9), ValueError, "`min_history`"),
        (lambda: ssk.AGC(clipping=0.0), ValueError, "`clipping`"),
        (lambda: ssk.AGC(output_axis=1.5), TypeError, "`output_axis`"),
        (lambda: ssk.clipping(keras.optimizers.SGD(0.1), rule="autoclip"), TypeError, "`rule`"),
        (
            lambda: ssk.clipping(
                keras.optimizers.SGD(0.1), rule=ssk.SpikeSkip(), nonfinite="propagate"
            ),
            ValueError,
            "`nonfinite` must be 'skip' with SpikeSkip",
        ),
        (
            lambda: ssk.clipping(keras.optimizers.SGD(0.1), 1.0, rule=ssk.AGC()),
            ValueError,
            "`max_norm` cannot be combined with AGC",
        ),
        (
            lambda: ssk.clipping(keras.optimizers.SGD(0.1, clipnorm=1.0), rule=ssk.ZClip()),
            ValueError,
            "optimizer's own clipping",
        ),
        (
            lambda: ssk.clipping(_build(keras.optimizers.SGD(0.1)), 1.0),
            ValueError,
            "`optimizer` is already built",
        ),
        (lambda: ssk.clip_stats(keras.optimizers.SGD(0.1)), TypeError, "`optimizer`"),
        (lambda: rule_from_config({"class_name": "Clip"}), ValueError, "`rule`"),
        (
            lambda: rule_from_config({"class_name": "ZClip", "config": {"beta": 0.9}}),
            ValueError,
            "`rule` has settings ZClip does not take",
        ),
        (
            lambda: rule_from_config({"class_name": "ZClip", "config": {"alpha": 2.0}}),
            ValueError,
            "`alpha`",
        ),
    ],
)
def test_bad_arguments(make: Callable[[], Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make()


_JAX = """
import os, sys, tempfile
from pathlib import Path
os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, sys.argv[1])
import keras
import tests.test_keras_adaptive as t
assert keras.backend.backend() == "jax"
for case in sorted(t.CASES):
    t.test_fit_takes_the_steps_of_the_torch_clipper_on_a_plain_twin(case)
with tempfile.TemporaryDirectory() as d:
    t.test_saved_model_reloads_with_its_clipping_and_state(Path(d))
t.test_non_finite_batch_leaves_the_rule_state_and_is_counted()
t.test_steps_per_execution_takes_the_same_steps()
t.test_compiled_train_step_takes_the_same_steps()
t.test_clip_stats_reads_through_a_loss_scale_optimizer()
t.test_spike_skip_with_accumulation_drops_the_whole_window()
t.test_agc_clips_each_output_unit_of_a_keras_kernel()
print("OK")
"""


def test_jax_backend_in_a_subprocess() -> None:
    if keras.backend.backend() == "jax":
        pytest.skip("jax is this process's backend, tested above")
    pytest.importorskip("jax")
    run_ok(_JAX)


_DATA_PARALLEL = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, sys.argv[1])
import jax, keras, numpy as np
import steadystep.keras as ssk
import tests.test_keras_adaptive as t
assert len(jax.devices()) == 2
runs = []
for parallel in (False, True):
    if parallel:  # each device computes half of every batch; Keras all-reduces the gradients
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    opt = ssk.clipping(keras.optimizers.SGD(t.LR), rule=ssk.AutoClip(25, 8))
    model = t._model(opt)
    t._fit(model, t._batches(12, spikes=(5,)))
    runs.append((t._weights(model), ssk.clip_stats(opt)))
(one, s1), (two, s2) = runs
assert s1["grad/clipped_steps"] == s2["grad/clipped_steps"] > 0, (s1, s2)
assert abs(s1["grad/norm"] - s2["grad/norm"]) <= 1e-5 * s1["grad/norm"], (s1, s2)
for a, b in zip(one, two):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("OK")
"""


def test_jax_data_parallel_clips_by_the_global_batch_norm() -> None:
    """Under keras.distribution.DataParallel on two devices the rule sees the norm of the
    whole batch's gradient: the run equals the one-device run."""
    pytest.importorskip("jax")
    run_ok(_DATA_PARALLEL)
