"""The simulator's parts; :mod:`lensearch.data.simulate` holds the entry points (docs/simulation.md).

* :mod:`~lensearch.data.simulation.instruments`: :class:`Instrument` (sampling, PSF, noise), :class:`Preset`,
  ``PRESETS`` and the file's units;
* :mod:`~lensearch.data.simulation.priors`: cosmology, lens/source/substructure priors, :func:`draw_sky`;
* :mod:`~lensearch.data.simulation.render`: :class:`Renderer` (ray tracing, PSF, pixel integration);
* :mod:`~lensearch.data.simulation.parallel`: the ordered process-pool map the blocks run through.
"""
