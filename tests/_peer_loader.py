"""Load a peer library's scheduler modules from its installed files without its ``__init__``.

timm's ``__init__`` imports torchvision (no build beside this torch) and DeepSpeed's imports its
whole runtime (hjson, ninja, ...): both are installed with ``pip install --no-deps`` and only the
scheduler files are run, so the parity tests compare against the peers' own code.

How: the package directories on the way to the modules are registered in ``sys.modules`` as
empty packages under their real names (so relative *and* absolute imports inside the files
resolve to the real files), the modules are imported, and every name this added is removed
again afterwards, so nothing later in the process sees a half-made ``timm`` or ``deepspeed``.
``stubs`` gives stand-ins for the few package-level helpers a file imports (DeepSpeed's
``deepspeed.utils.logger``); each stub is listed in the test that uses it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
from collections.abc import Iterable
from pathlib import Path

import pytest

_PEERS = Path(os.environ.get("STEADYSTEP_PEERS", Path(__file__).resolve().parent.parent / ".peers"))


def _package_dir(package: str) -> str | None:
    local = _PEERS / package
    if (local / "__init__.py").is_file():
        return str(local)
    spec = importlib.util.find_spec(package)  # a top-level find runs no package code
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(spec.submodule_search_locations))


def load(
    package: str,
    modules: Iterable[str],
    stubs: dict[str, dict[str, object]] | None = None,
) -> dict[str, types.ModuleType]:
    """``{name: module}`` for each dotted ``modules`` name under the installed ``package``.

    Skips the calling test (with the reason) when the package is not installed.
    """
    root = _package_dir(package)
    if root is None:
        pytest.skip(f"{package} is not installed (README's test command installs it in .peers/)")
    modules = list(modules)
    added: list[str] = []

    def register(name: str, module: types.ModuleType) -> None:
        if name not in sys.modules:
            sys.modules[name] = module
            added.append(name)

    try:
        for full in modules:
            parts = full.split(".")
            for depth in range(1, len(parts)):
                name = ".".join(parts[:depth])
                path = os.path.join(root, *parts[1:depth])
                pkg = types.ModuleType(name)
                pkg.__path__ = [path]
                pkg.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
                register(name, pkg)
        for name, attrs in (stubs or {}).items():
            stub = types.ModuleType(name)
            stub.__dict__.update(attrs)
            register(name, stub)
        before = set(sys.modules)
        try:
            loaded = {name: importlib.import_module(name) for name in modules}
        except ImportError as error:
            pytest.skip(f"{package}'s modules {modules} did not load: {error!r}")
        added.extend(n for n in set(sys.modules) - before if n.split(".")[0] == package)
        return loaded
    finally:
        for name in added:
            sys.modules.pop(name, None)


def timm_schedulers() -> types.SimpleNamespace:
    """The installed timm's scheduler classes, from ``timm/scheduler/*.py``."""
    names = ["cosine_lr", "multistep_lr", "poly_lr", "step_lr", "tanh_lr", "scheduler"]
    mods = load("timm", [f"timm.scheduler.{n}" for n in names])
    out = types.SimpleNamespace()
    for module in mods.values():
        for attr, value in vars(module).items():
            if attr.endswith("Scheduler") and isinstance(value, type):
                setattr(out, attr, value)
    return out


def deepspeed_lr_schedules() -> types.ModuleType:
    """The installed DeepSpeed's ``deepspeed/runtime/lr_schedules.py``.

    Stub: ``deepspeed.utils`` (whose ``__init__`` pulls in the comm and accelerator stack) is
    replaced by a module holding only ``logger``, a standard ``logging`` logger; the file uses
    it for warnings only.
    """
    stubs = {"deepspeed.utils": {"logger": logging.getLogger("deepspeed")}}
    name = "deepspeed.runtime.lr_schedules"
    return load("deepspeed", [name], stubs)[name]
