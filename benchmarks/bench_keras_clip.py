"""The price of steadystep's clipping in Keras 3 ``model.fit``, against plain Keras.

An MLP (64-256-256-10) on 2048 random samples labelled by a random linear teacher; every arm
trains the same model with AdamW for ``--epochs`` timed epochs after one untimed epoch (JAX
compiles the step there). Arms: Keras's
own ``global_clipnorm`` and ``steadystep.keras.clipping`` with a max norm, with the non-finite
skip, and with each adaptive rule. The anchor is plain AdamW in the same run; the table shows
the median epoch time over ``--repeat`` rounds (arms interleaved) and its ratio to the anchor
(lower is faster; 1.00 = free).

    python benchmarks/bench_keras_clip.py [--backend jax|torch] [--epochs 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="jax", choices=["jax", "torch"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if "keras" in sys.modules:
        raise SystemExit("run this file as a script: Keras fixes its backend when imported")
    os.environ["KERAS_BACKEND"] = args.backend

    import keras
    import numpy as np

    import steadystep.keras as ssk

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 64)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(64, 10)), axis=1).astype("int32")

    arms: dict[str, Any] = {
        "keras AdamW (anchor)": lambda: keras.optimizers.AdamW(1e-3),
        "keras global_clipnorm=1": lambda: keras.optimizers.AdamW(1e-3, global_clipnorm=1.0),
        "clipping(max_norm=1)": lambda: ssk.clipping(keras.optimizers.AdamW(1e-3), 1.0),
        "clipping(1, nonfinite=skip)": lambda: ssk.clipping(
            keras.optimizers.AdamW(1e-3), 1.0, nonfinite="skip"
        ),
        "AutoClip(10, 1000)": lambda: ssk.clipping(
            keras.optimizers.AdamW(1e-3), rule=ssk.AutoClip(10, 1000)
        ),
        "ZClip()": lambda: ssk.clipping(keras.optimizers.AdamW(1e-3), rule=ssk.ZClip()),
        "SpikeSkip(128)": lambda: ssk.clipping(
            keras.optimizers.AdamW(1e-3), rule=ssk.SpikeSkip(128)
        ),
        "AGC(0.01)": lambda: ssk.clipping(keras.optimizers.AdamW(1e-3), rule=ssk.AGC(0.01)),
    }
    models = {}
    for name, make in arms.items():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            optimizer=make(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)  # compile, warm up
        models[name] = model

    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeat):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
            times[name].append((time.perf_counter() - start) / args.epochs)

    steps = -(-len(x) // args.batch_size)
    anchor = statistics.median(times["keras AdamW (anchor)"])
    print(
        f"backend={args.backend} keras={keras.__version__} steps/epoch={steps} repeat={args.repeat}"
    )
    print(f"{'arm':32s} {'ms/epoch':>9s} {'ratio':>6s}")
    for name, t in times.items():
        median = statistics.median(t)
        print(f"{name:32s} {1000 * median:9.1f} {median / anchor:6.2f}")


if __name__ == "__main__":
    main()
