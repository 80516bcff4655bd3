"""The demo corpus: Python's own help texts (``pydoc_data.topics``), as characters.

``pydoc_data.topics.topics`` ships with CPython (about 465k characters of reference prose and
code), so the experiments need no download. Everything here is deterministic for a given Python
version: the text is the topics joined in sorted-key order, the vocabulary is the sorted set of its
characters, the split is contiguous (first ``1 - val_fraction`` for training, the rest for
validation) and batches come from a seeded :class:`torch.Generator`.

>>> corpus = load_corpus()
>>> corpus.vocab.decode(corpus.vocab.encode("def f(x):"))
'def f(x):'
>>> len(corpus.train) > 8 * len(corpus.val) > 0
True
>>> sampler = BatchSampler(corpus.train, batch_size=4, context=16, seed=0)
>>> x, y = sampler.sample()
>>> tuple(x.shape), bool((x[:, 1:] == y[:, :-1]).all())
((4, 16), True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["BatchSampler", "Corpus", "Vocab", "load_corpus", "load_text"]


def load_text() -> str:
    """The whole corpus: every ``pydoc_data.topics`` entry, joined in sorted-key order.

    >>> text = load_text()
    >>> len(text) > 100_000
    True
    """
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A character vocabulary: ``chars[i]`` is token ``i``; sorted, so it is deterministic.

    >>> v = Vocab.from_text("abca")
    >>> v.chars, v.encode("cab").tolist(), v.decode([2, 0, 1])
    ('abc', [2, 0, 1], 'cab')
    """

    chars: str

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Token ids (int64) of ``text``; a character outside the vocabulary is a ValueError."""
        index = {c: i for i, c in enumerate(self.chars)}
        try:
            return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as exc:
            raise ValueError(
                f"Argument `text` has a character outside the vocabulary. Received: {exc.args[0]!r}"
            ) from None

    def decode(self, ids: Any) -> str:
        """The text of token ids (a sequence, NumPy array or 1-D tensor)."""
        return "".join(self.chars[int(i)] for i in ids)


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenised corpus: ``train`` and ``val`` are 1-D int64 NumPy arrays of token ids."""

    vocab: Vocab
    train: np.ndarray[Any, np.dtype[np.int64]]
    val: np.ndarray[Any, np.dtype[np.int64]]


def load_corpus(val_fraction: float = 0.1) -> Corpus:
    """The ``pydoc_data.topics`` corpus, tokenised and split contiguously (last part: validation).

    Args:
        val_fraction: share of the text held out for validation, in ``(0, 1)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"Argument `val_fraction` must be in (0, 1). Received: val_fraction={val_fraction!r}"
        )
    text = load_text()
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    cut = int(len(ids) * (1.0 - val_fraction))
    return Corpus(vocab=vocab, train=ids[:cut], val=ids[cut:])


class BatchSampler:
    """Random windows of ``context + 1`` tokens, as (inputs, next-token targets), reproducibly.

    Windows start at uniformly drawn offsets from a :class:`torch.Generator` seeded with ``seed``
    (always on the CPU, so a seed gives the same batches on every device); the batch is then
    moved to ``device``. Iterating yields batches forever; :meth:`sample` gives the next one.

    Args:
        tokens: 1-D int64 token ids (NumPy array or tensor), longer than ``context``.
        batch_size: windows per batch, > 0.
        context: tokens per input window, > 0.
        seed: seed of the sampler's generator.
        device: where the batches go (``"cpu"``, ``"cuda"``, a :class:`torch.device`).
    """

    def __init__(
        self,
        tokens: Any,
        batch_size: int,
        context: int,
        *,
        seed: int = 0,
        device: Any = "cpu",
    ) -> None:
        import torch

        for name, value in (("batch_size", batch_size), ("context", context)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Argument `{name}` must be an int. Received: {name}={value!r}")
            if value <= 0:
                raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value!r}")
        data = torch.as_tensor(np.asarray(tokens), dtype=torch.int64)
        if data.ndim != 1 or data.numel() <= context:
            raise ValueError(
                "Argument `tokens` must be 1-D and longer than `context`. "
                f"Received: shape {tuple(data.shape)} with context={context}"
            )
        self.tokens = data
        self.batch_size = batch_size
        self.context = context
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(context + 1)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch ``(x, y)``, each ``(batch_size, context)`` int64; ``y`` is ``x`` + 1."""
        import torch

        starts = torch.randint(
            0,
            self.tokens.numel() - self.context,
            (self.batch_size,),
            generator=self.generator,
        )
        windows = self.tokens[starts[:, None] + self._offsets]
        windows = windows.to(self.device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.sample()
