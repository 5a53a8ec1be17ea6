"""`edgekit.profile(...)` and `edgekit.inspect(...)` are public functions (edgekit.api) whose names are also
those of subpackages (edgekit/profile/, edgekit/inspect.py). Importing a subpackage sets the package's attribute
to the module, so after the first call (which imports it), or any `import edgekit.profile.devices`,
`edgekit.profile(...)` was "TypeError: 'module' object is not callable". Such a module calls its api function
instead: it stays a module for imports and attributes, and is callable as the README shows."""

from __future__ import annotations

import sys
import types
from typing import Any


class _ApiModule(types.ModuleType):
    _api_name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from edgekit import api

        return getattr(api, type(self)._api_name)(*args, **kwargs)


def call_api(module_name: str, api_name: str) -> None:
    """Make the module `module_name` callable as edgekit.api.<api_name>."""
    cls = type(f"ApiModule_{api_name}", (_ApiModule,), {"_api_name": api_name})
    sys.modules[module_name].__class__ = cls
