"""The model zoo: one registry (:mod:`lensearch.models.registry`) filled by the architecture modules.

Importing this package imports every module in it, and each architecture module registers its own spec at
import (``register(ModelSpec(...))``): adding an architecture is adding one file, with no list to edit.
Use ``registry.names()``, ``registry.get(name)``, ``registry.build(name, scale=..., **hparams)``.
"""

import importlib
import pkgutil

from lensearch.models import registry

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["registry"]
