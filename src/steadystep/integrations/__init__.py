"""Adapters for training frameworks: ``steadystep.integrations.transformers`` (Hugging Face
Trainer), ``.lightning`` (Lightning) and ``.keras`` (``model.fit``).

Each module imports its framework when it is imported itself, never before; ``import steadystep``
does not load any of them. Guide: ``docs/integrations.md``.
"""
