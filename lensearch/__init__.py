"""lensearch: hyperparameter and architecture search for super-resolution of strong-lensing images.

The package follows the data's way, each stage a sub-package that only imports from the ones before it:

    data (simulate / import -> HDF5, transforms)  ->  metrics
      -> models (one registry)  ->  training (Ray Train DDP loop)
      -> search (YAML schema -> Optuna define-by-run -> Ray Tune, MLflow tracking)
      -> export / upscale / report / downstream

``lensearch.cli`` is the thin command-line edge over all of them.
"""

__version__ = "0.1.0"
