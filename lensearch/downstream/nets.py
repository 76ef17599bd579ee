"""The downstream networks (FeatureNet for every task) and their input scaling.

They live in :mod:`lensearch.training.classifier`, shared with the search's downstream objective (one
implementation); this module re-exports them.
"""

from lensearch.training.classifier import DEFAULT_NET, Standardizer, build_net, unit_scale_images

__all__ = ["DEFAULT_NET", "Standardizer", "build_net", "unit_scale_images"]
