"""The model zoo: one registry (:mod:`lensearch.models.registry`) filled by the architecture modules.

Importing this package registers every architecture; the list below is the only place that enumerates
them. Use ``registry.names()``, ``registry.get(name)``, ``registry.build(name, scale=..., **hparams)``.
"""

from lensearch.models import registry
from lensearch.models import (  # noqa: F401  (register)
    bicubic, diffusion, discriminators, espcn, rdn, rrdb, span, srresnet, swinir)

__all__ = ["registry"]
