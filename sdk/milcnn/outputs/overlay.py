"""Overlay PNGs for a person to look at: the image, the mask's outlines coloured by class, a legend."""

from __future__ import annotations

import functools
import threading

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from milcnn.io.images import write_atomic
from milcnn.outputs.png import png_chunks

__all__ = ["PALETTE", "composite", "outlines", "render_overlay", "save_overlay", "overlay_png", "overlay_title", "OVERLAY_MAX_PIXELS"]

OVERLAY_MAX_PIXELS = 4096 * 4096

# Distinct colours that read on a dark fluorescence background (Glasbey-like, no greys).
PALETTE = np.array([
    (255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 230, 180), (255, 120, 220), (160, 255, 60),
    (255, 140, 0), (170, 120, 255), (0, 255, 255), (255, 255, 140), (200, 80, 120), (120, 200, 255),
    (230, 170, 120), (90, 255, 150), (255, 90, 170), (180, 180, 40),
], dtype=np.uint8)


def composite(chw: np.ndarray, *, normalized: np.ndarray | None = None, ranges=None) -> np.ndarray:
    """(C, H, W) image -> (H, W, 3) uint8 for display: grey, green+magenta, or RGB for 3 channels.

    ``normalized``: the image already percentile-normalised (the model's input), to skip doing it again;
    or ``ranges``: its normalisation's per-channel (low, scale) (``milcnn.process.preprocess.channel_ranges``).
    """
    rows = _DisplayRows(chw, normalized, ranges)
    x = rows(0, rows.height)
    out = np.empty((*x.shape[1:], 3), dtype=np.uint8)
    _composite_into(out, x, np.empty(x.shape, dtype=np.float32))
    return out


class _DisplayRows:
    """The normalised image a band of rows at a time: ``rows(r0, r1)`` -> float32 (C, r1 - r0, W).

    From ``normalized`` where given (cropped to ``chw``: the model's input may be padded), else from
    ``chw`` and its ``ranges`` (its own, when none are given), normalising only the rows asked for:
    the same float32 operations as ``milcnn.process.preprocess.normalize``, without the whole float image."""

    def __init__(self, chw, normalized, ranges):
        from milcnn.process.preprocess import channel_ranges

        self.x = self.chw = None
        if normalized is not None:
            if chw is not None:
                h, w = chw.shape[1:]
                normalized = normalized[:, :h, :w]
            self.x, self.height = normalized, normalized.shape[1]
            return
        self.chw = np.asarray(chw)
        self.ranges = channel_ranges(self.chw) if ranges is None else ranges
        self.height = self.chw.shape[1]

    def __call__(self, r0: int, r1: int) -> np.ndarray:
        from milcnn.process.preprocess import apply_ranges

        if self.x is not None:
            return self.x[:, r0:r1]
        return apply_ranges(self.chw[:, r0:r1], *self.ranges)


def _composite_into(out: np.ndarray, x: np.ndarray, scratch: np.ndarray) -> None:
    """Write the composite of normalised (C, h, w) ``x`` into the (h, w, 3) uint8 view ``out``,
    using ``scratch`` (float32, at least x's size) for the arithmetic."""
    clipped = scratch.reshape(-1)[: x.size].reshape(x.shape)
    np.clip(x, 0, 1, out=clipped)
    grey = np.empty(x.shape, dtype=np.uint8)
    np.multiply(clipped, np.float32(255), out=grey, casting="unsafe")  # truncates, as astype(uint8) would
    order = (0, 0, 0) if x.shape[0] == 1 else (1, 0, 1) if x.shape[0] == 2 else (0, 1, 2)  # 2: 0 green, 1 magenta
    for plane, i in enumerate(order):
        out[..., plane] = grey[i]


def outlines(mask: np.ndarray) -> np.ndarray:
    """Bool (H, W): labelled pixels with a 4-neighbour of another value."""
    m = np.asarray(mask)
    edge = np.zeros(m.shape, dtype=bool)
    edge[:-1] |= m[:-1] != m[1:]
    edge[1:] |= m[1:] != m[:-1]
    edge[:, :-1] |= m[:, :-1] != m[:, 1:]
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    return edge & (m > 0)


def render_overlay(chw: np.ndarray, mask: np.ndarray, classes, *, title: str = "",
                   normalized: np.ndarray | None = None, ranges=None):
    """A PIL image: the composite with coloured outlines, and a legend panel on the right."""
    return Image.fromarray(_overlay_array(chw, mask, classes, title=title, normalized=normalized, ranges=ranges))


def _overlay_array(chw, mask: np.ndarray, classes, *, title: str = "", normalized=None, ranges=None) -> np.ndarray:
    """``render_overlay`` as an (H, W + legend, 3) uint8 array."""
    bands = [rows.copy() for rows in _overlay_bands(chw, mask, classes, title=title, normalized=normalized,
                                                    ranges=ranges)]
    rows = np.concatenate(bands)
    return rows[:, 1:].reshape(rows.shape[0], -1, 3)


_BAND = 64  # scanlines drawn and deflated at a time: the working set stays in the core's cache


def _overlay_bands(chw, mask: np.ndarray, classes, *, title: str = "", normalized=None, ranges=None):
    """The overlay as PNG scanlines, ``_BAND`` rows at a time: (n, 1 + 3 * (W + legend)) uint8
    arrays, each row a filter byte (0, none) then its RGB pixels. Every band is the same
    buffer, overwritten by the next: use (or copy) it before asking for the next one."""
    mask = np.asarray(mask)
    h, w = mask.shape
    image_rows = _DisplayRows(chw, normalized, ranges)
    edge = np.flatnonzero(outlines(mask))  # row-major, so each band's outline pixels are a slice
    labels = mask.ravel()[edge]
    # the outlines hold every label in the mask, unless it is one value throughout
    legend = _legend(tuple(classes), _present(labels if labels.size else mask[:1, :1], len(classes)), title)
    scale = legend_scale(h)
    if scale > 1:  # large images: the legend grows with them, so it reads at the same zoom
        legend = np.repeat(np.repeat(legend, scale, axis=0), scale, axis=1)
    colours = _OUTLINE_COLOURS[labels]
    height, width = max(h, legend.shape[0]), w + legend.shape[1]
    buffer = np.empty((_BAND, 1 + 3 * width), dtype=np.uint8)
    buffer[:, 0] = 0
    scratch = np.empty(0, np.float32)  # grown to the first band's size
    for r0 in range(0, height, _BAND):
        n = min(_BAND, height - r0)
        rows = buffer[:n]
        sheet = rows[:, 1:].reshape(n, width, 3)
        m = max(0, min(n, h - r0))  # image rows in this band
        if m:
            rgb = sheet[:m, :w]
            x = image_rows(r0, r0 + m)
            if scratch.size < x.size:
                scratch = np.empty(x.size, np.float32)
            _composite_into(rgb, x, scratch)
            lo, hi = np.searchsorted(edge, (r0 * w, (r0 + m) * w))
            rr, cc = np.divmod(edge[lo:hi] - r0 * w, w)
            rgb[rr, cc] = colours[lo:hi]
        sheet[m:, :w] = _BACKGROUND
        k = max(0, min(n, legend.shape[0] - r0))  # legend rows in this band
        sheet[:k, w:] = legend[r0:r0 + k]
        sheet[k:, w:] = _BACKGROUND
        yield rows


def legend_scale(height: int) -> int:
    """The legend's magnification for an image ``height`` px tall: 1 up to 1,024 px, then one more per
    1,024 px, so that it keeps about the same share of the picture."""
    return max(1, int(height) // 1024)


_BACKGROUND = 20
# Text is drawn by one thread at a time: milzoo predict's writer threads draw overlays side by side, and a
# first-image overlay once differed between two identical runs under load (text and fonts are the only
# Pillow state the overlays share; Pillow does not promise it is thread-safe)
_DRAW_LOCK = threading.Lock()
_PANEL_WIDTH = 190
_LEGEND_ROWS = 256  # at least the legend's height at scale 1 (224 px for 11 classes and a two-line title)
_LINE = 14  # pixels per title line
# label -> outline colour (label 0, background, is never drawn); labels cycle through the palette
_OUTLINE_COLOURS = np.concatenate([np.zeros((1, 3), np.uint8), PALETTE[np.arange(255) % len(PALETTE)]])


def _present(labels: np.ndarray, n_classes: int) -> tuple[bool, ...]:
    counts = np.bincount(labels.ravel(), minlength=n_classes + 1)
    return tuple(bool(c) for c in counts[1: n_classes + 1])


def _legend(classes: tuple[str, ...], present: tuple[bool, ...], title: str) -> np.ndarray:
    """The (rows, panel width, 3) legend: the title's lines, then one swatch per class, filled when
    the class is in the mask. The class list is drawn once per model and kept; only the title is
    drawn per image."""
    lines = title.split("\n")
    head = Image.new("RGB", (_PANEL_WIDTH, 6 + _LINE * len(lines) + 6), (_BACKGROUND,) * 3)
    with _DRAW_LOCK:
        draw = ImageDraw.Draw(head)
        for i, line in enumerate(lines):
            draw.text((8, 6 + _LINE * i), _drawable(line), fill=(255, 255, 255), font=_font())
    return np.concatenate([np.asarray(head), _class_list(classes, present)])


def _drawable(text: str) -> str:
    """``text`` in what the bitmap font can draw (Latin-1): other characters as ``\\uXXXX`` escapes,
    so a file or class name in any script still reads unambiguously."""
    return text.encode("latin-1", "backslashreplace").decode("latin-1")


@functools.lru_cache(maxsize=1)
def _font():
    """Pillow's built-in bitmap font: a tenth of the time of its default TrueType one per line,
    and the same on every machine."""
    return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()  # Pillow < 10.1: load_default


@functools.lru_cache(maxsize=64)
def _class_list(classes: tuple[str, ...], present: tuple[bool, ...]) -> np.ndarray:
    panel = Image.new("RGB", (_PANEL_WIDTH, 16 * len(classes) + 8), (_BACKGROUND,) * 3)
    with _DRAW_LOCK:
        draw = ImageDraw.Draw(panel)
        for k, name in enumerate(classes):
            colour = tuple(int(v) for v in PALETTE[k % len(PALETTE)])
            y = 16 * k
            draw.rectangle((8, y + 2, 18, y + 12), fill=colour if present[k] else None, outline=colour)
            draw.text((24, y), _drawable(name), fill=(255, 255, 255) if present[k] else (130, 130, 130),
                      font=_font())
    out = np.asarray(panel)
    out.setflags(write=False)  # shared between calls
    return out


def overlay_title(name: str, pred) -> str:
    """The legend's title of a prediction's overlay: the file (or field) name, the label and the top class's
    probability (and, for an ``unassigned`` field, its top class or why qc refused it)."""
    p = pred.probabilities.get(pred.top, 0)
    if pred.label == pred.top:
        return f"{name}\n{pred.label} (p={p:.2f})"
    why = f"qc {pred.qc}" if pred.qc != "ok" else f"top {pred.top}"
    return f"{name}\n{pred.label} ({why}, p={p:.2f})"


def overlay_png(chw, mask: np.ndarray, classes, *, title: str = "", normalized: np.ndarray | None = None,
                ranges=None):
    """The overlay as PNG pieces to write (``milcnn.outputs.png.png_chunks``). Images over ``OVERLAY_MAX_PIXELS``
    are drawn at a reduced scale (every f-th pixel), so an overlay never costs more memory than the
    prediction itself; an image read a tile at a time (``milcnn.io.lazy``) is read at that scale only.

    ``normalized`` (``chw`` normalised) or ``ranges`` (its normalisation's per-channel low and scale)
    save normalising it again; with neither, it is normalised by its own percentiles."""
    h, w = mask.shape
    # the picture is at least the legend's height: a thin image (1 x 4,000,000) is scaled down for it too
    canvas = max(h, _LEGEND_ROWS) * w
    f = max(int(np.ceil(np.sqrt(mask.size / OVERLAY_MAX_PIXELS))), int(np.ceil(canvas / OVERLAY_MAX_PIXELS))) \
        if canvas > OVERLAY_MAX_PIXELS else 1
    if hasattr(chw, "strided"):  # an image read a tile at a time (milcnn.io.lazy): read every f-th pixel only
        chw, normalized = chw.strided(f), None
    elif f > 1:
        chw, normalized = np.asarray(chw)[:, ::f, ::f], None
    if f > 1:
        mask = mask[::f, ::f]
        title = f"{title}\n(shown at 1/{f} scale)"
    return png_chunks(_overlay_bands(chw, mask, classes, title=title, normalized=normalized, ranges=ranges))


def save_overlay(path, chw: np.ndarray, mask: np.ndarray, classes, *, title: str = "",
                 normalized: np.ndarray | None = None, ranges=None, durable: bool = True) -> None:
    """Write the overlay PNG (``overlay_png``) atomically (fast deflate: overlays are for looking at,
    not archiving). ``durable=False`` skips the fsync (see ``write_atomic``)."""
    pieces = overlay_png(chw, mask, classes, title=title, normalized=normalized, ranges=ranges)
    with write_atomic(path, "wb", durable=durable) as fh:
        fh.writelines(pieces)