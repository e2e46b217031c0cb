"""Array steps with no I/O and no model runtime: normalisation, scale, tiling, class maps to masks,
calibration, qc and the label rule."""
