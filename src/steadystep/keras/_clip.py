"""steadystep's clipping, adaptive rules and skipping on a Keras 3 optimizer, for ``model.fit``.

``clipping(optimizer, max_norm, rule=..., nonfinite=...)`` turns the optimizer, in place, into a
subclass of its own class (``isinstance`` checks still hold) that

* clips the gradients with the PyTorch formula ``g * min(1, threshold / (norm + 1e-6))``
  (``torch.nn.utils.clip_grad_norm_``; the global L2 norm in at least float32, overflow-safe:
  ``steadystep.clip.global_norm``), the threshold being ``max_norm`` or an adaptive rule's
  (AutoClip, ZClip; ``max_norm`` then caps it), or clips unit-wise (AGC);
* with ``nonfinite="skip"`` or the ``SpikeSkip`` rule, leaves the weights and every optimizer
  variable (``iterations``, moments, EMA, accumulators) exactly as they were on a step whose
  norm is inf or NaN, or a spike;
* keeps the rules' state, the last norm and counts of clipped and skipped steps in optimizer
  variables created in ``build``, so all of it works in JAX's stateless jitted ``fit`` and is
  saved and restored by ``model.save`` / ``keras.models.load_model`` (its config names the
  inner optimizer's and the clipping's).

The subclass overrides ``build``, ``apply``, ``get_config``/``from_config`` and two private
methods of Keras's ``BaseOptimizer`` that every backend calls in Keras 3:
``_backend_apply_gradients`` (to see the variables the gradients belong to) and
``_clip_gradients`` (the clip, on the averaged gradient when accumulating). A skip computes
the step and then selects, per variable, the new or the old value with ``keras.ops.where``: no
branch on a value, so it traces under ``jax.jit``. Read in ``keras/src/optimizers/
base_optimizer.py`` and ``keras/src/backend/jax/optimizer.py`` (Keras 3.15); nothing copied.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from .. import _check as check
from ..clip import _rules as rules
from ..clip import global_norm
from ._adaptive import AGC, check_rule, rule_from_config

__all__ = ["clip_stats", "clipping"]

_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s epsilon
#: the optimizer variables every clipping keeps, besides its rule's
_OWN = {"norm": ((), "float32"), "clipped": ((), "int32"), "skipped": ((), "int32")}


def _norm(grads: list[Any]) -> Any:
    """Global L2 norm in float32; on JAX the overflow-safe second pass runs under ``lax.cond``
    only when needed (elsewhere both passes run and one is selected: a branch on a torch
    tensor would read it back to the host every step)."""
    cond = keras.ops.cond if keras.backend.backend() == "jax" else None
    return keras.ops.cast(global_norm(grads, cond=cond), "float32")


class Clipping:
    """Put in front of a Keras optimizer's class by :func:`clipping`; not built directly."""

    _steadystep_base: type  # the optimizer's own class

    @property
    def steadystep_clipping(self) -> dict[str, Any]:
        """The clipping's settings: ``max_norm``, ``nonfinite`` and ``rule``."""
        return dict(self.__dict__["_steadystep"])

    def _steadystep_vars(self) -> dict[str, Any]:
        found: dict[str, Any] | None = self.__dict__.get("_steadystep_variables")
        if found is None:
            raise ValueError(
                "This optimizer's steadystep clipping has no variables yet: build the optimizer "
                f"first (optimizer.build(model.trainable_variables)). Received: optimizer={self!r}"
            )
        return found

    def build(self, variables: Any) -> None:
        if self.built:  # type: ignore[attr-defined]
            return
        super().build(variables)  # type: ignore[misc]
        rule = self.__dict__["_steadystep"]["rule"]

        def add(spec: dict[str, tuple[tuple[int, ...], str]], prefix: str) -> dict[str, Any]:
            return {
                name: self.add_variable(shape, dtype=dtype, name=f"{prefix}{name}")  # type: ignore[attr-defined]
                for name, (shape, dtype) in spec.items()
            }

        self.__dict__["_steadystep_variables"] = add(_OWN, "steadystep_")
        # the rule's state, after the clipping's own variables (the order they are saved in)
        self.__dict__["_steadystep_rule_variables"] = add(
            {} if rule is None else rule.state_spec(), "steadystep_rule_"
        )

    def _backend_apply_gradients(self, grads: list[Any], trainable_variables: list[Any]) -> Any:
        # AGC needs the weights; Keras hands them here, not to _clip_gradients
        self.__dict__["_steadystep_params"] = list(trainable_variables)
        try:
            return super()._backend_apply_gradients(grads, trainable_variables)  # type: ignore[misc]
        finally:
            self.__dict__.pop("_steadystep_params", None)

    def _clip_gradients(self, grads: list[Any]) -> list[Any]:
        settings = self.__dict__["_steadystep"]
        rule, max_norm = settings["rule"], settings["max_norm"]
        present = [g for g in grads if g is not None]
        if not present:
            return super()._clip_gradients(grads)  # type: ignore[misc, no-any-return]
        own = self._steadystep_vars()
        norm = _norm(present)
        own["norm"].assign(norm)
        # a non-finite norm of the gradient applied (an accumulated sum can overflow) is skipped
        bad = keras.ops.logical_not(keras.ops.isfinite(norm))
        if isinstance(rule, AGC):
            grads, coefficient = self._steadystep_agc(grads, rule)
        elif rule is None and max_norm is None:
            grads, coefficient = super()._clip_gradients(grads), None  # type: ignore[misc]
        else:
            threshold = keras.ops.convert_to_tensor(math.inf if max_norm is None else max_norm)
            if rule is not None:
                state = self.__dict__["_steadystep_rule_variables"]
                new, rule_threshold, spike = rule.step({k: v.value for k, v in state.items()}, norm)
                for k, v in state.items():
                    v.assign(new[k])
                if rule_threshold is not None:
                    threshold = keras.ops.minimum(threshold, rule_threshold)
                if spike is not None:
                    bad = keras.ops.logical_or(bad, spike)
            coefficient = keras.ops.where(
                threshold == math.inf, 1.0, keras.ops.minimum(threshold / (norm + _EPS), 1.0)
            )
            grads = [None if g is None else g * keras.ops.cast(coefficient, g.dtype) for g in grads]
        if coefficient is not None:
            clipped = keras.ops.cast(coefficient < 1.0, "int32")
            own["clipped"].assign(own["clipped"].value + clipped)
        if settings["nonfinite"] == "skip":  # apply() reads it once the step is computed
            self.__dict__["_steadystep_bad"] = bad
        return grads

    def _steadystep_agc(self, grads: list[Any], rule: AGC) -> tuple[list[Any], Any]:
        params = self.__dict__.get("_steadystep_params")
        if params is None or len(params) != len(grads):
            raise ValueError(
                "steadystep AGC clips inside optimizer.apply(), where Keras pairs each gradient "
                "with its weight; _clip_gradients() was called on its own. "
                f"Received: {len(grads)} gradients"
            )
        out, smallest = [], keras.ops.convert_to_tensor(1.0, "float32")
        for g, p in zip(grads, params, strict=True):
            if g is None:
                out.append(g)
                continue
            weight = keras.ops.stop_gradient(p.value)
            factor = rules.agc_scale(
                g, weight, clipping=rule.clipping, eps=rule.eps, output_axis=rule.output_axis
            )
            out.append(g * keras.ops.cast(factor, g.dtype))
            smallest = keras.ops.minimum(smallest, keras.ops.cast(keras.ops.min(factor), "float32"))
        return out, smallest

    def apply(self, grads: list[Any], trainable_variables: Any = None) -> Any:
        settings = self.__dict__["_steadystep"]
        grads = list(grads)
        present = [g for g in grads if g is not None]
        if settings["nonfinite"] != "skip" or not present:
            return super().apply(grads, trainable_variables)  # type: ignore[misc]
        if not self.built:  # type: ignore[attr-defined]
            if trainable_variables is None:
                return super().apply(grads, trainable_variables)  # type: ignore[misc]  # Keras's error
            trainable_variables = list(trainable_variables)
            with keras.name_scope(self.name, caller=self):  # type: ignore[attr-defined]
                self.build(trainable_variables)
            self.built = True
        own = self._steadystep_vars()
        # statistics see every step, skipped or not
        kept = [v for k, v in own.items() if k != "clipped"]
        keep = {id(v) for v in [*kept, *self.__dict__["_steadystep_rule_variables"].values()]}
        model_vars = (
            list(self._trainable_variables)  # type: ignore[attr-defined]
            if trainable_variables is None
            else list(trainable_variables)
        )
        state = model_vars + [v for v in self.variables if id(v) not in keep]  # type: ignore[attr-defined]
        old = [keras.ops.copy(v.value) for v in state]
        iterations = self._iterations  # type: ignore[attr-defined]
        steps = self.gradient_accumulation_steps  # type: ignore[attr-defined]
        # accumulating, each micro-batch's own gradient is checked; otherwise it is the one
        # _clip_gradients measures
        finite = keras.ops.isfinite(_norm(present)) if steps else True
        # an accumulated gradient is judged on an update step only (JAX clips every micro-batch)
        update = (iterations.value + 1) % steps == 0 if steps else True
        self.__dict__.pop("_steadystep_bad", None)
        out = super().apply(grads, trainable_variables)  # type: ignore[misc]
        bad = self.__dict__.pop("_steadystep_bad", None)  # the applied gradient: spike, overflow
        drop_batch = keras.ops.logical_not(finite)
        skip = drop_batch
        if bad is not None:
            skip = keras.ops.logical_or(skip, keras.ops.logical_and(bad, update))
        accumulators = {id(v) for v in getattr(self, "_accumulated_gradients", None) or ()}
        for v, before in zip(state, old, strict=True):
            if steps and v is iterations:
                # a skipped update drops its whole window: the micro-batch count restarts
                window = keras.ops.logical_and(skip, keras.ops.logical_not(drop_batch))
                before = keras.ops.where(window, before - (steps - 1), before)
            elif id(v) in accumulators:
                # a skipped update keeps Keras's reset; a bad micro-batch is not accumulated
                v.assign(keras.ops.where(drop_batch, before, v.value))
                continue
            v.assign(keras.ops.where(skip, before, v.value))
        own["skipped"].assign(own["skipped"].value + keras.ops.cast(skip, "int32"))
        return out

    def get_config(self) -> dict[str, Any]:
        settings = self.__dict__["_steadystep"]
        inner = self._steadystep_base.from_config(super().get_config())  # type: ignore[misc]
        rule = settings["rule"]
        return {
            "optimizer": keras.optimizers.serialize(inner),
            "max_norm": settings["max_norm"],
            "nonfinite": settings["nonfinite"],
            "rule": None if rule is None else rule.get_config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Any:
        config = dict(config)
        inner = keras.optimizers.deserialize(config.pop("optimizer"), custom_objects=custom_objects)
        return clipping(inner, rule=rule_from_config(config.pop("rule", None)), **config)


keras.saving.register_keras_serializable("steadystep", "Clipping")(Clipping)
_CLASSES: dict[type, type] = {}


def _clipped_class(base: type) -> type:
    cls = _CLASSES.get(base)
    if cls is None:
        cls = type(f"Clipped{base.__name__}", (Clipping, base), {"_steadystep_base": base})
        cls.__module__ = __name__
        # every such class saves and loads as "steadystep>Clipping" (from_config is shared)
        keras.saving.register_keras_serializable("steadystep", "Clipping")(cls)
        _CLASSES[base] = cls
    return cls


def clipping(
    optimizer: keras.optimizers.Optimizer,
    max_norm: float | None = None,
    *,
    rule: Any = None,
    nonfinite: str | None = None,
) -> keras.optimizers.Optimizer:
    """Give a Keras 3 optimizer steadystep's clipping, an adaptive rule and a non-finite policy.

    Call it before the optimizer is built (before the first ``fit`` or ``apply``). The
    optimizer is changed in place (its class becomes a subclass of its own) and returned.

    Args:
        optimizer: a ``keras.optimizers.Optimizer``, not yet built.
        max_norm: clip the global L2 norm of the gradients to this value with
            ``g * min(1, max_norm / (norm + 1e-6))`` (PyTorch's formula). With ``AutoClip``,
            ``ZClip`` or ``SpikeSkip`` it caps the rule's threshold. ``None`` keeps the
            optimizer's own ``clipnorm`` / ``global_clipnorm`` / ``clipvalue`` (if any).
        rule: ``AGC(...)``, ``AutoClip(...)``, ``ZClip(...)`` or ``SpikeSkip(...)`` from
            ``steadystep.keras``, or ``None``.
        nonfinite: ``"propagate"`` applies a step whose gradient norm is inf or NaN as Keras
            does (the weights become NaN); ``"skip"`` makes that step change neither the
            weights nor any optimizer variable (``iterations`` included). Default
            ``"propagate"``, and ``"skip"`` with ``SpikeSkip`` (which skips non-finite norms
            as spikes and cannot propagate them).

    Examples:
        >>> import keras
        >>> from steadystep.keras import AutoClip, clipping
        >>> opt = clipping(keras.optimizers.SGD(0.1), 1.0, nonfinite="skip")
        >>> opt.steadystep_clipping
        {'max_norm': 1.0, 'nonfinite': 'skip', 'rule': None}
        >>> isinstance(opt, keras.optimizers.SGD)
        True
        >>> opt = clipping(keras.optimizers.Adam(1e-3), rule=AutoClip(percentile=10))
        >>> opt.steadystep_clipping["rule"]
        AutoClip(percentile=10.0, history=1000)
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
    if isinstance(optimizer, Clipping):
        raise ValueError(
            "Argument `optimizer` already has steadystep clipping. "
            f"Received: optimizer={optimizer!r} with {optimizer.steadystep_clipping}"
        )
    if optimizer.built:
        raise ValueError(
            "Argument `optimizer` is already built: call clipping() before its first fit() or "
            "apply() (a compiled training step would not see the change, and the clipping's "
            "state variables must be created with the optimizer's). A saved model keeps its "
            f"clipping: load_model restores it. Received: optimizer={optimizer!r}"
        )
    if max_norm is not None:
        max_norm = check.positive("max_norm", max_norm)
    rule = check_rule(rule)
    if nonfinite is None:
        nonfinite = "skip" if rule is not None and rule.skips else "propagate"
    nonfinite = check.choice("nonfinite", nonfinite, ("propagate", "skip"))
    if rule is not None and rule.skips and nonfinite != "skip":
        raise ValueError(
            "Argument `nonfinite` must be 'skip' with SpikeSkip (a non-finite norm is a spike, "
            f"and spikes are skipped). Received: nonfinite={nonfinite!r}"
        )
    if isinstance(rule, AGC) and max_norm is not None:
        raise ValueError(
            "Argument `max_norm` cannot be combined with AGC (AGC clips each unit against its "
            f"own weights; pass one of them). Received: max_norm={max_norm}, rule={rule!r}"
        )
    own = {k: getattr(optimizer, k) for k in ("clipnorm", "global_clipnorm", "clipvalue")}
    own = {k: v for k, v in own.items() if v}
    if own and (max_norm is not None or rule is not None):
        given = f"max_norm={max_norm}" if rule is None else f"rule={rule!r}"
        raise ValueError(
            "Arguments `max_norm` and `rule` cannot be combined with the optimizer's own "
            f"clipping ({own}): pass one of them. Received: {given}"
        )
    optimizer.__dict__["_steadystep"] = {"max_norm": max_norm, "nonfinite": nonfinite, "rule": rule}
    optimizer.__class__ = _clipped_class(type(optimizer))
    return optimizer


def clip_stats(optimizer: keras.optimizers.Optimizer) -> dict[str, float]:
    """The clipping's loggable scalars, read from the optimizer's variables (one host read).

    ``grad/norm``: the global L2 norm, before clipping, of the last gradient applied;
    ``grad/clipped_steps`` and ``grad/skipped_steps``: how many update steps so far were
    clipped (by steadystep: a coefficient below 1; Keras's own ``clipnorm`` is not counted) and
    skipped (non-finite, or a spike). They are saved with
    the optimizer. Read them at a logging interval, e.g. in a callback's ``on_train_batch_end``.
    A ``LossScaleOptimizer`` is read through its inner optimizer (its own skips of overflowing
    steps are not counted: they never reach the clipping).

    Examples:
        >>> import keras, numpy as np
        >>> from steadystep.keras import clip_stats, clipping
        >>> opt = clipping(keras.optimizers.SGD(0.1), 1.0)
        >>> w = keras.Variable(np.zeros(2, "float32"))
        >>> opt.apply([keras.ops.convert_to_tensor(np.array([3.0, 4.0], "float32"))], [w])
        >>> clip_stats(opt)
        {'grad/norm': 5.0, 'grad/clipped_steps': 1, 'grad/skipped_steps': 0}
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer  # where the clipping is
    if not isinstance(optimizer, Clipping):
        raise TypeError(
            "Argument `optimizer` must have steadystep clipping (steadystep.keras.clipping), "
            "or be a LossScaleOptimizer around one. "
            f"Received: optimizer={optimizer!r}"
        )
    own = optimizer._steadystep_vars()
    values = {k: keras.ops.convert_to_numpy(own[k].value) for k in _OWN}
    return {
        "grad/norm": float(values["norm"]),
        "grad/clipped_steps": int(values["clipped"]),
        "grad/skipped_steps": int(values["skipped"]),
    }
