"""Overlay PNGs for a person to look at: the image, the mask's outlines coloured by class, a legend."""

from __future__ import annotations

import numpy as np

from milcnn.io import write_atomic

__all__ = ["PALETTE", "composite", "outlines", "render_overlay", "save_overlay", "encode_png", "OVERLAY_MAX_PIXELS"]

OVERLAY_MAX_PIXELS = 4096 * 4096

# Distinct colours that read on a dark fluorescence background (Glasbey-like, no greys).
PALETTE = np.array([
    (255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 230, 180), (255, 120, 220), (160, 255, 60),
    (255, 140, 0), (170, 120, 255), (0, 255, 255), (255, 255, 140), (200, 80, 120), (120, 200, 255),
    (230, 170, 120), (90, 255, 150), (255, 90, 170), (180, 180, 40),
], dtype=np.uint8)


def composite(chw: np.ndarray, *, normalized: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) image -> (H, W, 3) uint8 for display: grey, green+magenta, or RGB for 3 channels.

    ``normalized``: the image already percentile-normalised (the model's input), to skip doing it again.
    """
    from milcnn.preprocess import normalize

    h, w = np.asarray(chw).shape[1:] if chw is not None else normalized.shape[1:]
    x = normalize(np.asarray(chw)) if normalized is None else normalized[:, :h, :w]
    u = (np.clip(x, 0, 1) * 255).astype(np.uint8)  # 8 bits first: the channel shuffle then moves 1/4 the bytes
    c = u.shape[0]
    if c == 1:
        order = (0, 0, 0)
    elif c == 2:
        order = (1, 0, 1)  # channel 0 green, channel 1 magenta
    else:
        order = (0, 1, 2)
    return np.stack([u[i] for i in order], axis=-1)


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
                   normalized: np.ndarray | None = None):
    """A PIL image: the composite with coloured outlines, and a legend panel on the right."""
    from PIL import Image

    return Image.fromarray(_overlay_array(chw, mask, classes, title=title, normalized=normalized))


def _overlay_array(chw, mask: np.ndarray, classes, *, title: str = "", normalized=None) -> np.ndarray:
    """``render_overlay`` as an (H, W + legend, 3) uint8 array (what save_overlay encodes)."""
    from PIL import Image, ImageDraw

    rgb = composite(chw, normalized=normalized)[: mask.shape[0], : mask.shape[1]]
    edge = outlines(mask)
    rgb[edge] = PALETTE[(mask[edge].astype(np.int64) - 1) % len(PALETTE)]
    h, w = mask.shape
    counts = np.bincount(np.asarray(mask, dtype=np.intp).ravel(), minlength=len(classes) + 1)
    present = [k for k in range(len(classes)) if counts[k + 1]]
    panel_w = 190
    sheet = np.full((max(h, 40 + 16 * len(classes)), w + panel_w, 3), 20, dtype=np.uint8)
    sheet[:h, :w] = rgb
    panel = Image.new("RGB", (panel_w, sheet.shape[0]), (20, 20, 20))  # only the legend goes through PIL
    draw = ImageDraw.Draw(panel)
    y = 6
    for line in title.split("\n"):
        draw.text((8, y), line, fill=(255, 255, 255))
        y += 14
    y += 6
    for k, name in enumerate(classes):
        colour = tuple(int(v) for v in PALETTE[k % len(PALETTE)])
        draw.rectangle((8, y + 2, 18, y + 12), fill=colour if k in present else None, outline=colour)
        draw.text((24, y), name, fill=(255, 255, 255) if k in present else (130, 130, 130))
        y += 16
    sheet[:, w:] = np.asarray(panel)
    return sheet


def save_overlay(path, chw: np.ndarray, mask: np.ndarray, classes, *, title: str = "",
                 normalized: np.ndarray | None = None) -> None:
    """Write the overlay PNG atomically (fast zlib level: overlays are for looking at, not archiving).

    Images over ``OVERLAY_MAX_PIXELS`` are drawn at a reduced scale (every f-th pixel), so an
    overlay never costs more memory than the prediction itself.
    """
    if mask.size > OVERLAY_MAX_PIXELS:
        f = int(np.ceil(np.sqrt(mask.size / OVERLAY_MAX_PIXELS)))
        chw, mask, normalized = np.asarray(chw)[:, ::f, ::f], mask[::f, ::f], None
        title = f"{title}\n(shown at 1/{f} scale)"
    image = _overlay_array(chw, mask, classes, title=title, normalized=normalized)
    with write_atomic(path, "wb") as fh:
        fh.write(encode_png(image))


def encode_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (H, W, 3), unfiltered and deflated at level 1 with run-length
    matching: about 3x faster than Pillow's encoder at any level, for files ~15 % larger."""
    import struct
    import zlib

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_png expects (H, W, 3) uint8, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    rows = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # each row starts with its filter type: 0, none
    rows[:, 1:] = rgb.reshape(h, 3 * w)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = deflate.compress(rows) + deflate.flush()  # numpy's buffer directly: no copy

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, truecolour, deflate, no filter, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
