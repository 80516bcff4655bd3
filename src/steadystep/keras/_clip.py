"""steadystep's global-norm clip and non-finite policy on a Keras 3 optimizer.

``clipping(optimizer, max_norm, nonfinite="skip")`` changes the optimizer in place so that
``model.fit`` (any backend, JAX's stateless path included) clips the gradients with the
PyTorch formula ``g * min(1, max_norm / (norm + 1e-6))`` (``torch.nn.utils.clip_grad_norm_``,
norm in at least float32, overflow-safe: ``steadystep.clip.global_norm``) and, with
``nonfinite="skip"``, leaves weights and every optimizer variable (iterations, moments, EMA)
unchanged on a step whose gradient norm is inf or NaN.

It overrides two methods of Keras's ``BaseOptimizer`` on the instance: ``_clip_gradients``
(private; called by ``apply`` on every backend in Keras 3) and ``apply`` (public). The skip
computes the step and then selects, per variable, the new or the old value with
``keras.ops.where``: no branch on a value, so it traces under ``jax.jit``.
"""

from __future__ import annotations

from typing import Any

import keras

from .. import _check as check
from ..clip import global_norm

__all__ = ["clipping"]

_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s epsilon
_MARK = "steadystep_clipping"


def _clip(grads: list[Any], max_norm: float) -> list[Any]:
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    norm = keras.ops.cast(global_norm(present), "float32")
    coef = keras.ops.minimum(1.0, max_norm / (norm + _EPS))
    return [None if g is None else g * keras.ops.cast(coef, g.dtype) for g in grads]


def clipping(
    optimizer: keras.optimizers.Optimizer,
    max_norm: float | None = None,
    *,
    nonfinite: str = "propagate",
) -> keras.optimizers.Optimizer:
    """Give a Keras 3 optimizer steadystep's global-norm clip and a non-finite policy.

    Args:
        optimizer: a ``keras.optimizers.Optimizer``; changed in place and returned.
        max_norm: clip the global L2 norm of the gradients to this value with
            ``g * min(1, max_norm / (norm + 1e-6))`` (PyTorch's formula); ``None`` keeps
            the optimizer's own ``clipnorm`` / ``global_clipnorm`` / ``clipvalue`` (if any).
        nonfinite: ``"propagate"`` applies a step whose gradient norm is inf or NaN as Keras
            does (the weights become NaN); ``"skip"`` makes that step change neither the
            weights nor any optimizer variable (``iterations`` included).

    Examples:
        >>> import keras
        >>> from steadystep.keras import clipping
        >>> opt = clipping(keras.optimizers.SGD(0.1), 1.0, nonfinite="skip")
        >>> opt.steadystep_clipping
        {'max_norm': 1.0, 'nonfinite': 'skip'}
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "Argument `optimizer` must be a keras.optimizers.Optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # it hands unscaled gradients to its inner optimizer, which does the clipping
        raise TypeError(
            "Argument `optimizer` must not be a LossScaleOptimizer (it already skips "
            "non-finite steps; give clipping() its inner optimizer before wrapping it). "
            f"Received: optimizer={optimizer!r}"
        )
    if max_norm is not None:
        max_norm = check.positive("max_norm", max_norm)
    nonfinite = check.choice("nonfinite", nonfinite, ("propagate", "skip"))
    if getattr(optimizer, _MARK, None) is not None:
        raise ValueError(
            "Argument `optimizer` already has steadystep clipping. "
            f"Received: optimizer={optimizer!r} with {getattr(optimizer, _MARK)}"
        )
    if max_norm is not None:
        own = {k: getattr(optimizer, k) for k in ("clipnorm", "global_clipnorm", "clipvalue")}
        own = {k: v for k, v in own.items() if v}
        if own:
            raise ValueError(
                "Argument `max_norm` cannot be combined with the optimizer's own clipping "
                f"({own}): pass one of them. Received: max_norm={max_norm}"
            )

    keras_clip = optimizer._clip_gradients
    keras_apply = optimizer.apply

    def _clip_gradients(grads: list[Any]) -> list[Any]:
        return keras_clip(grads) if max_norm is None else _clip(list(grads), max_norm)

    def apply(grads: list[Any], trainable_variables: Any = None) -> Any:
        grads = list(grads)
        present = [g for g in grads if g is not None]
        if nonfinite == "propagate" or not present:
            return keras_apply(grads, trainable_variables)
        if not optimizer.built:
            if trainable_variables is None:
                return keras_apply(grads, trainable_variables)  # Keras raises its own error
            trainable_variables = list(trainable_variables)
            with keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(trainable_variables)
            optimizer.built = True
        finite = keras.ops.isfinite(global_norm(present))
        model_vars = (
            list(optimizer._trainable_variables)
            if trainable_variables is None
            else list(trainable_variables)
        )
        state = model_vars + list(optimizer.variables)
        old = [keras.ops.copy(v.value) for v in state]
        out = keras_apply(grads, trainable_variables)
        for v, before in zip(state, old, strict=True):
            v.assign(keras.ops.where(finite, v.value, before))
        return out

    optimizer._clip_gradients = _clip_gradients
    optimizer.apply = apply
    setattr(optimizer, _MARK, {"max_norm": max_norm, "nonfinite": nonfinite})
    return optimizer
