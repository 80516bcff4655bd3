"""BERT's learning rate, as google-research/bert ``optimization.py`` computes it.

``create_optimizer`` builds ``tf.train.polynomial_decay(init_lr, global_step, num_train_steps,
end_learning_rate=0.0, power=1.0, cycle=False)`` and, when ``num_warmup_steps`` is non-zero,
replaces it by ``init_lr * global_step / num_warmup_steps`` while
``global_step < num_warmup_steps``. The decay runs on the absolute step: the warmup is
*included* in ``num_train_steps``, so the LR right after warmup is
``init_lr * (1 - W / T)``, not ``init_lr``. The first update gets LR 0.

>>> s = create_learning_rate(1e-4, num_train_steps=100, num_warmup_steps=10)
>>> s(0), s(5), s(10), s(100)
(0.0, 5e-05, 9e-05, 0.0)

References: google-research/bert ``optimization.py``; the seed write-up ``000``.
"""

from __future__ import annotations

from ..schedules import Schedule, presets

__all__ = ["create_learning_rate"]


def create_learning_rate(init_lr: float, num_train_steps: int, num_warmup_steps: int) -> Schedule:
    """The LR schedule inside BERT's ``create_optimizer`` (same argument names)."""
    return presets.bert(init_lr, num_train_steps, num_warmup_steps)
