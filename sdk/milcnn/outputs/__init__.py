"""What a run writes: the results folder, overlays, PNG encoding, per-well tables and plate maps."""
