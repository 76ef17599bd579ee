"""Plain, seeded PyTorch training of the downstream networks.

It lives in :mod:`lensearch.training.classifier`, shared with the search's downstream objective (the frozen
classifier of :mod:`lensearch.training.frozen_classifier`: one implementation); this module re-exports it.
"""

from lensearch.training.classifier import Trained, augment_batch, predict, train_task

__all__ = ["Trained", "augment_batch", "predict", "train_task"]
