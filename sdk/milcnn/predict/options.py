"""``PredictOptions``: the prediction settings, in one frozen object from the CLI through batch, pipeline
and Dask to the network."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from milcnn import constants

__all__ = ["PredictOptions"]


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """How one image is predicted (``Classifier.predict(image, options)``, ``milzoo predict``'s flags).

    Attributes:
        channel_axis: which axis of an array holds the channels, when the shape does not say.
        channel_index: the model's channels, in order, from an image with more (e.g. ``(0, 2)``); OME-TIFFs
            that name their channels are matched by name without it.
        tile_size: run in tiles of this many pixels (a multiple of the output stride); images over
            ``constants.TILE_THRESHOLD_PIXELS`` are tiled without it.
        pixel_size: the image's pixel size in um; the image is resized to the model's before the network,
            and the mask and maps come back at the input's size.
        cell_diameter: instead of ``pixel_size``, the typical cell diameter in px (as Cellpose's
            ``diameter``). With neither, the image's own pixel size is used, else the model's default.
        threshold: the probability the top class needs for a label (else ``unassigned``), and a map
            pixel for the mask.
    """

    channel_axis: int | None = None
    channel_index: tuple[int, ...] | None = None
    tile_size: int | None = None
    pixel_size: float | None = None
    cell_diameter: float | None = None
    threshold: float = constants.DEFAULT_THRESHOLD

    def __post_init__(self):
        if self.channel_index is not None:  # a list from a caller or from JSON: hashable and picklable as given
            object.__setattr__(self, "channel_index", tuple(self.channel_index))

    def replace(self, **changes) -> "PredictOptions":
        """A copy with ``changes`` (TypeError naming an unknown setting)."""
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_index"] = None if self.channel_index is None else list(self.channel_index)
        return d
