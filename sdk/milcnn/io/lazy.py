"""Large TIFFs read a window at a time: only the tiles or strips a window overlaps are decoded, so an
image too large to read whole is predicted with the input's memory bounded by a tile row.

``LazyTiff`` serves the tiled path of ``Classifier`` (``milcnn.process.tiling``): ``image[:, y0:y1, x0:x1]``
decodes that window, ``channel_ranges`` computes the normalisation's whole-image percentiles from
histograms accumulated segment by segment (exactly those of the whole image), and ``strided``
gives every f-th pixel for overlays. Supported: one 8- or 16-bit unsigned sample per page, one page
per channel, tiled or stripped, with a compression tifffile decodes itself (none, deflate,
PackBits, ...); anything else is read whole, within the budget of ``milcnn.io.images.read_image``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from milcnn.errors import NotLazy

__all__ = ["LazyTiff"]


class LazyTiff:
    """A (C, H, W) view of a TIFF whose pixels are read on demand.

    Args:
        path: the file.

    Raises:
        NotLazy: the layout is not one this reader serves (see the module docstring).
    """

    def __init__(self, path):
        import tifffile

        self.path = Path(path)
        self._tif = tifffile.TiffFile(self.path)
        try:
            series = self._tif.series[0]
            pages = [p.aspage() if p is not None else None for p in series.pages]  # TiffFrame -> TiffPage
            first = pages[0]
            if any(p is None for p in pages):
                raise NotLazy("pages without their own headers")
            if first.samplesperpixel != 1 or first.dtype is None or first.dtype.kind != "u" or first.dtype.itemsize > 2:
                raise NotLazy(f"{first.samplesperpixel} samples per pixel of {first.dtype}")
            if any(p.shape != first.shape or p.dtype != first.dtype for p in pages) or len(first.shape) != 2:
                raise NotLazy("pages of different shapes")
            if int(np.prod(series.shape)) != len(pages) * first.shape[0] * first.shape[1]:
                raise NotLazy(f"series {series.shape} is not one page per channel")
            if first.compression != 1:  # check that tifffile can decode it here (no optional codec)
                first.decode  # noqa: B018 - raises for a codec that is not installed
                self._decode(first, 0)
        except NotLazy:
            self._tif.close()
            raise
        except Exception as exc:
            self._tif.close()
            raise NotLazy(f"{type(exc).__name__}: {exc}") from None
        self._pages = pages
        # uncompressed pages stored in one piece are memory-mapped (tifffile writes them as one strip)
        self._maps = [np.memmap(self.path, dtype=p.dtype.newbyteorder(self._tif.byteorder), mode="r",
                                offset=p.dataoffsets[0], shape=p.shape)
                      if p.compression == 1 and p.is_contiguous and p.databytecounts[0] else None for p in pages]
        self.dtype = first.dtype
        self.shape = (len(pages), *first.shape)
        self.ndim = 3
        self.size = int(np.prod(self.shape))

    # ------------------------------------------------------------------ reading

    def __getitem__(self, key) -> np.ndarray:
        """``image[:, y0:y1, x0:x1]`` (step 1), decoded from the segments it overlaps."""
        if not (isinstance(key, tuple) and len(key) == 3 and key[0] == slice(None)):
            raise TypeError("a LazyTiff is read as image[:, y0:y1, x0:x1]")
        _, h, w = self.shape
        y0, y1, _ = key[1].indices(h)
        x0, x1, _ = key[2].indices(w)
        out = np.zeros((self.shape[0], max(0, y1 - y0), max(0, x1 - x0)), dtype=self.dtype)
        for c, page in enumerate(self._pages):
            if self._maps[c] is not None:
                out[c] = self._maps[c][y0:y1, x0:x1]
                continue
            for index, (ty, tx) in self._segments(page, y0, y1, x0, x1):
                seg = self._decode(page, index)
                sy0, sx0 = max(y0, ty), max(x0, tx)
                sy1, sx1 = min(y1, ty + seg.shape[0]), min(x1, tx + seg.shape[1])
                if sy1 > sy0 and sx1 > sx0:
                    out[c, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = seg[sy0 - ty:sy1 - ty, sx0 - tx:sx1 - tx]
        return out

    def strided(self, f: int) -> np.ndarray:
        """Every ``f``-th pixel in both directions, (C, ceil(H / f), ceil(W / f)), read a band at a time."""
        _, h, w = self.shape
        rows = []
        band = max(f, (self._band_rows() // f) * f)
        for y0 in range(0, h, band):
            rows.append(self[:, y0:min(h, y0 + band), :][:, ::f, ::f])
        return np.concatenate(rows, axis=1)

    def channel_ranges(self, config) -> tuple[np.ndarray, np.ndarray]:
        """``milcnn.process.preprocess.channel_ranges`` of the whole image, from per-segment histograms."""
        low = np.zeros(self.shape[0], dtype=np.float32)
        scale = np.zeros(self.shape[0], dtype=np.float32)
        _, h, w = self.shape
        for c, page in enumerate(self._pages):
            counts = np.zeros(1 << (8 * self.dtype.itemsize), dtype=np.int64)
            if self._maps[c] is not None:
                for y0 in range(0, h, 256):
                    counts += np.bincount(np.asarray(self._maps[c][y0:y0 + 256]).ravel(), minlength=counts.size)
                self._set_range(c, counts, config, low, scale)
                continue
            for index, (ty, tx) in self._segments(page, 0, h, 0, w):
                seg = self._decode(page, index)
                seg = seg[: max(0, min(seg.shape[0], h - ty)), : max(0, min(seg.shape[1], w - tx))]
                counts += np.bincount(seg.ravel(), minlength=counts.size)
            self._set_range(c, counts, config, low, scale)
        return low, scale

    @staticmethod
    def _set_range(c: int, counts: np.ndarray, config, low: np.ndarray, scale: np.ndarray) -> None:
        from milcnn.process.preprocess import percentiles_from_counts, range_of

        low[c], scale[c] = range_of(percentiles_from_counts(counts, 0, (config.low, config.high)), config)

    def close(self) -> None:
        self._maps = [None] * len(self._maps)
        self._tif.close()

    def __del__(self):
        try:
            self._tif.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ------------------------------------------------------------------ segments

    def _band_rows(self) -> int:
        page = self._pages[0]
        return page.tilelength if page.is_tiled else (page.rowsperstrip or page.shape[0])

    def _segments(self, page, y0: int, y1: int, x0: int, x1: int):
        """(segment index, (top, left)) of the segments overlapping rows y0:y1 and columns x0:x1."""
        if y1 <= y0 or x1 <= x0:
            return
        if page.is_tiled:
            tl, tw = page.tilelength, page.tilewidth
            across = -(-page.shape[1] // tw)
            for ty in range(y0 // tl, (y1 - 1) // tl + 1):
                for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                    yield ty * across + tx, (ty * tl, tx * tw)
        else:
            rps = min(page.rowsperstrip or page.shape[0], page.shape[0])
            for s in range(y0 // rps, (y1 - 1) // rps + 1):
                yield s, (s * rps, 0)

    def _decode(self, page, index: int) -> np.ndarray:
        """One segment as a 2-D array (tiles at the edges as stored: padded to the tile size)."""
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        data = None
        if count:
            fh = self._tif.filehandle
            fh.seek(offset)
            data = fh.read(count)
        seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        if seg is None:  # a sparse segment: nothing stored, zeros
            length = page.tilelength if page.is_tiled else min(page.rowsperstrip or page.shape[0], page.shape[0])
            width = page.tilewidth if page.is_tiled else page.shape[1]
            return np.zeros((length, width), dtype=page.dtype)
        return seg.reshape(seg.shape[-3], seg.shape[-2])
