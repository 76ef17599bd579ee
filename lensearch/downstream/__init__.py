"""Downstream science: does super-resolution help the measurements astronomers make on lensing images?

``lensearch downstream DATA.h5 --sr EXPORT_DIR ... --out DIR`` trains small CNNs on the HR training images
of a data file — a substructure classifier (``no_sub`` / ``cdm`` / ``vortex``), a lens finder (lens vs
``non_lens``, when the file has non-lenses) and a regressor of lens parameters (``theta_E``, and ``e1``,
``e2``, ``gamma1``, ``gamma2`` where stored) — and scores each on the test split in four versions:

* ``HR``: the HR test images (the upper bound);
* ``bicubic``: the LR test images upsampled bicubically;
* ``SR:<name>``: the LR test images super-resolved by each export (through the export's own normalization,
  exactly as ``lensearch upscale`` applies it);
* ``LR-trained``: the bicubically upsampled LR test images scored by a second network of the same
  architecture trained on bicubically upsampled LR training images — the honest alternative to SR.

Metrics carry percentile bootstrap confidence intervals over test images. The trained HR substructure
classifier is also written as ``feature_net.pt`` for the SRGAN/ESRGAN content loss (``loss.content_weights``).

One module per responsibility: :mod:`.tasks` (which tasks a file supports), :mod:`.nets`, :mod:`.train`,
:mod:`.variants`, :mod:`.metrics`, :mod:`.bootstrap`, :mod:`.figures`, :mod:`.run` (orchestration, table,
MLflow). Nothing else in the package imports this one except the CLI.
"""

from lensearch.downstream.run import DownstreamOptions, run_downstream

__all__ = ["DownstreamOptions", "run_downstream"]
