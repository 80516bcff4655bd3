"""``KerasSchedule``: any steadystep schedule as a Keras 3 ``LearningRateSchedule``.

Keras calls the schedule with ``optimizer.iterations``, a backend variable holding the number of
updates done so far, which is exactly steadystep's step ``t`` (0 for the first update). The
value is computed on that backend's own tensor (a torch tensor on its device, a JAX array under
``jit``), never read back to the host. On JAX the step is evaluated exactly
(:func:`steadystep.jax.evaluate`); on torch it is int64 and evaluated in float64. The result is
cast to Keras's ``floatx`` (float32 by default).

Keras's schedule interface was read in ``keras/src/optimizers/schedules/learning_rate_schedule.py``
and ``keras/src/optimizers/base_optimizer.py`` (``_get_current_learning_rate``); nothing copied.
"""

from __future__ import annotations

from typing import Any

import keras

from steadystep.schedules._base import Schedule
from steadystep.schedules._spec import parse

__all__ = ["KerasSchedule"]


@keras.saving.register_keras_serializable(package="steadystep")
class KerasSchedule(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
    """A steadystep schedule as a Keras learning-rate schedule.

    ``get_config()`` is ``{"schedule": schedule.to_dict()}`` (JSON-safe); ``from_config`` also
    accepts spec text, so ``KerasSchedule.from_config(s.get_config()).schedule == s.schedule``
    and a model saved with ``model.save`` reloads with the same schedule.

    Args:
        schedule: a steadystep schedule, or its spec text / dict form.

    Examples:
        >>> import keras, steadystep as ss
        >>> lr = KerasSchedule(ss.warmup(ss.cosine(1e-3, 1e-5, steps=900), steps=100))
        >>> opt = keras.optimizers.AdamW(learning_rate=lr)
        >>> round(float(lr(50)), 9)
        0.0005
        >>> KerasSchedule.from_config(lr.get_config()).schedule == lr.schedule
        True
    """

    def __init__(self, schedule: Schedule | str | dict[str, Any]) -> None:
        super().__init__()
        if isinstance(schedule, (str, dict)):
            schedule = parse(schedule)
        if not isinstance(schedule, Schedule):
            raise TypeError(
                "Argument `schedule` must be a steadystep schedule, spec text or dict. "
                f"Received: schedule={schedule!r} of type {type(schedule).__name__}"
            )
        self.schedule = schedule

    def __call__(self, step: Any) -> Any:
        if isinstance(step, (bool, float)):
            raise TypeError(
                f"Argument `step` must be an integer step count. Received: step={step!r}"
            )
        backend = keras.backend.backend()
        if isinstance(step, int):
            value: Any = self.schedule(step)
        else:
            tensor = keras.ops.convert_to_tensor(step)
            if "int" not in keras.backend.standardize_dtype(tensor.dtype):
                raise TypeError(
                    "Argument `step` must hold integers (optimizer.iterations). "
                    f"Received dtype {tensor.dtype}"
                )
            if backend == "jax":
                from steadystep.jax import evaluate

                value = evaluate(self.schedule, tensor)
            else:
                value = self.schedule(tensor)
        return keras.ops.cast(value, keras.backend.floatx())

    def get_config(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KerasSchedule:
        if not isinstance(config, dict) or "schedule" not in config:
            raise ValueError(
                "Argument `config` must be a dict with a 'schedule' entry (spec text or dict), "
                f"as get_config() returns. Received: config={config!r}"
            )
        return cls(config["schedule"])

    def __repr__(self) -> str:
        return f"KerasSchedule({self.schedule!r})"
