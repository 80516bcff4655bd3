"""`PlateauCallback`: feed a monitored metric to the plateau inside a :class:`KerasSchedule`.

``model.fit`` calls ``on_epoch_end`` with the epoch's logs; the callback feeds
``logs[monitor]`` to the plateau controller (:meth:`steadystep.Plateau.update`) and, on a
reduction, gives the optimizer's :class:`KerasSchedule` the reduced schedule. The LR stays a
pure function of ``(optimizer.iterations, reductions)``; the callback's :attr:`state` and the
schedule's spec text are the whole state to save.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras

from steadystep.schedules._plateau import (
    PlateauState,
    apply_reduction,
    find_plateau,
    metric_value,
)

from ._schedule import KerasSchedule

__all__ = ["PlateauCallback"]


class PlateauCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Reduce on plateau from ``model.fit``: the optimizer's LR must be a plateau schedule.

    Args:
        monitor: the log key to watch (``"val_loss"``: fit with validation data).

    >>> import keras, steadystep as ss
    >>> from steadystep.compat.keras import ReduceLROnPlateau
    >>> lr = ss.keras.KerasSchedule(ReduceLROnPlateau(1e-3, patience=2))
    >>> cb = PlateauCallback("val_loss")  # model.compile(optimizer=keras.optimizers.SGD(lr))
    """

    def __init__(self, monitor: str = "val_loss") -> None:
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(f"Argument `monitor` must be a log key. Received: monitor={monitor!r}")
        self.monitor = monitor
        self.state: PlateauState | None = None

    def _schedule(self) -> KerasSchedule:
        lr = getattr(self.model.optimizer, "_learning_rate", None)
        if not isinstance(lr, KerasSchedule) or find_plateau(lr.schedule) is None:
            raise ValueError(
                "PlateauCallback needs the optimizer's learning_rate to be a "
                "steadystep.keras.KerasSchedule containing a steadystep.plateau(...). "
                f"Received: learning_rate={lr!r}"
            )
        return lr

    def on_train_begin(self, logs: Any = None) -> None:
        plateau = find_plateau(self._schedule().schedule)
        if self.state is None and plateau is not None:
            self.state = plateau.initial_state()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(
                f"PlateauCallback: the metric {self.monitor!r} is not in the logs "
                f"({sorted(logs or {})}); no evaluation counted.",
                stacklevel=2,
            )
            return
        holder = self._schedule()
        plateau = find_plateau(holder.schedule)
        assert plateau is not None and self.state is not None
        self.state, reduce = plateau.update(self.state, metric_value(current))
        if reduce:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            new = apply_reduction(holder.schedule, step)
            self.state = plateau.settle(self.state, new != holder.schedule)
            if new != holder.schedule:
                holder.schedule = new
                # compiled backends (JAX, TensorFlow) traced the old schedule: rebuild
                if keras.backend.backend() != "torch":
                    self.model.make_train_function(force=True)
