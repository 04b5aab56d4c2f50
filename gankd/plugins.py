"""Imports of the user's own modules named in a run config (`imports:`), which register their parts.

An entry is a module name (`my_package.distill_terms`, importable from the environment) or a path to a
.py file. A file already imported (under any name) is reused; otherwise it is loaded once per process under
a module name derived from its path, so loading a config twice does not register its classes twice.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType


def import_plugins(entries: Iterable[str]) -> list[ModuleType]:
    """Import every entry (module name or .py path); ImportError naming the entry when one fails."""
    return [_import(entry) for entry in entries]


def _import(entry: str) -> ModuleType:
    if not isinstance(entry, str) or not entry:
        raise ImportError(f"an import is a module name or a .py file path, got {entry!r}")
    if entry.endswith(".py"):
        return _import_file(Path(entry))
    try:
        return importlib.import_module(entry)
    except ImportError as error:
        raise ImportError(f"cannot import module {entry!r} ({type(error).__name__}: {error}); install it, put "
                          "it on PYTHONPATH, or name its .py file instead") from error  # fmt: skip
    except Exception as error:  # the module was found but failed while it ran
        raise ImportError(f"cannot import module {entry!r}: {type(error).__name__}: {error}") from error


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise ImportError(f"cannot import {path}: the file does not exist")
    for module in list(sys.modules.values()):  # already imported, under its own name or by an earlier config
        source = getattr(module, "__file__", None)
        if source and Path(source).resolve() == path:
            return module
    name = f"gankd_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ImportError(f"cannot import {path}: {type(error).__name__}: {error}") from error
    return module
