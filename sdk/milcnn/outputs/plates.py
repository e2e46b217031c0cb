"""Plates: the per-well, per-plate and per-treatment results built from ``predictions.csv`` at the end of a
run (``wells.csv``, ``plate.png``, ``treatments.csv``), and the ``--plate-map`` they join. Where each image
sits is ``milcnn.io.locations``'s job."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from milcnn.process.decision import UNASSIGNED, decide
from milcnn.io.images import write_atomic
from milcnn.process.quality import QC_OK
from milcnn.errors import OutputFolderError, PlateMapError
from milcnn.io.locations import parse_well, split_well, well_name

__all__ = ["well_table", "write_wells", "write_plate_png", "write_treatments", "read_plate_map", "write_plate_outputs"]

# ---------------------------------------------------------------------------------------- wells

def well_table(rows: list[dict], classes: tuple[str, ...], *, threshold: float, multi_label: bool = False) -> list[dict]:
    """Per (plate, well): fields, fields whose qc is ``ok``, cells counted in all its fields (None where the model
    does not count), the mean image probability per class and mean
    area fraction per class over those fields, and the label (``milcnn.process.decision.decide`` on the mean: the
    top class where it reaches ``threshold``; ``unassigned`` below it, or where no field passed qc).

    Args:
        rows: ``predictions.csv`` rows as dicts (with ``plate``, ``well``, ``qc``, ``p_<class>``, ``area_<class>``).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("well"):
            groups.setdefault((row.get("plate", ""), row["well"]), []).append(row)
    table = []
    for (plate, well), members in sorted(groups.items(), key=lambda kv: (kv[0][0], split_well(kv[0][1]))):
        used, qc = _trusted(members)
        ok = used if qc == QC_OK else []
        p = np.array([[float(r[f"p_{c}"]) for c in classes] for r in used]).mean(axis=0)
        area = np.array([[float(r.get(f"area_{c}") or 0.0) for c in classes] for r in used]).mean(axis=0)
        call = decide(p, classes, threshold=threshold, multi_label=multi_label, qc=qc)
        counts = [int(r["n_cells"]) for r in members if r.get("n_cells") not in (None, "")]
        table.append({"plate": plate, "well": well, "fields": len(members), "fields_qc_ok": len(ok),
                      "n_cells": sum(counts) if counts else None,
                      "label": call.label, **({"labels": call.labels} if multi_label else {}), "qc": qc,
                      "max_probability": float(call.probability),
                      **{f"p_{c}": float(v) for c, v in zip(classes, p)},
                      **{f"area_{c}": float(v) for c, v in zip(classes, area)}})
    return table


def _trusted(members: list[dict]) -> tuple[list[dict], str]:
    """The members (fields of a well, wells of a treatment) whose qc is ``ok`` and qc ``ok``; where none is,
    all of them (their means, for the record) and their most common qc, which makes the label ``unassigned``."""
    ok = [m for m in members if m.get("qc", QC_OK) == QC_OK]
    if ok:
        return ok, QC_OK
    reasons = [m.get("qc") for m in members]
    return members, max(set(reasons), key=reasons.count)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    with write_atomic(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(buffer.getvalue())


def write_wells(path: Path, table: list[dict], classes: tuple[str, ...], *, multi_label: bool = False) -> None:
    header = ["plate", "well", "fields", "fields_qc_ok", "n_cells", "label", *(["labels"] if multi_label else []),
              "qc", "max_probability", *[f"p_{c}" for c in classes], *[f"area_{c}" for c in classes]]
    _write_csv(path, header, [[_cell(row[h]) for h in header] for row in table])


def _fmt(value) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------- plate map

def read_plate_map(path: Path) -> dict[tuple[str, str], dict]:
    """``well,compound,concentration[,moa][,plate][,role]`` -> {(plate or "", well): {compound, concentration,
    moa, role}}; ``role`` (``milcnn.outputs.hits.ROLES``) is "" where the map has no such column.

    Raises:
        PlateMapError: unreadable, a missing column or value, a bad well name, concentration or role, a cell over
            the CSV field limit, or one well given twice with different treatments (with the line and the field).
    """
    from milcnn.outputs.hits import ROLES

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlateMapError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    need = {"well", "compound", "concentration"}
    out, where = {}, {}
    try:
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise PlateMapError(f"{path}: needs columns well, compound, concentration (has {reader.fieldnames})")
        for line, row in enumerate(reader, 2):
            has_role = "role" in reader.fieldnames
            missing = [c for c in ("well", "compound", "concentration", *(["role"] if has_role else []))
                       if not (row.get(c) or "").strip()]
            if missing:
                raise PlateMapError(f"{path}, line {line}: no {', '.join(missing)}")
            well = parse_well(row["well"])
            if well is None:
                raise PlateMapError(f"{path}, line {line}: well {row['well']!r} is not like B03")
            try:
                concentration = float(row["concentration"])
            except ValueError:
                raise PlateMapError(f"{path}, line {line}: concentration {row['concentration']!r} is not a "
                                    "number") from None
            role = (row.get("role") or "").strip().lower()
            if has_role and role not in ROLES:
                raise PlateMapError(f"{path}, line {line}, column role: {row['role']!r} is not one of "
                                    f"{', '.join(ROLES)}")
            key = (row.get("plate") or "", well)
            entry = {"compound": row["compound"], "concentration": concentration, "moa": row.get("moa") or "",
                     "role": role}
            if key in out and out[key] != entry:
                raise PlateMapError(f"{path}, line {line}: well {well} is given again with another treatment "
                                    f"(line {where[key]}: {out[key]['compound']} at {out[key]['concentration']:g})")
            out[key], where[key] = entry, line
    except csv.Error as exc:
        raise PlateMapError(f"{path}, line {reader.line_num + 1}: {exc}") from None
    return out


def write_treatments(path: Path, table: list[dict], plate_map: dict, classes: tuple[str, ...], *,
                     threshold: float, multi_label: bool = False) -> int:
    """``treatments.csv``: per (compound, concentration), the mean of its wells' probabilities (as the
    treatment evaluation of ``training.treatments`` averages images) over the wells with a field that
    passed qc, its label (``milcnn.process.decision.decide``) and, when the plate map gives one, its MOA.
    Returns the number of treatments."""
    groups: dict[tuple[str, float], list[dict]] = {}
    moa: dict[tuple[str, float], str] = {}
    for row in table:
        entry = plate_map.get((row["plate"], row["well"])) or plate_map.get(("", row["well"]))
        if entry is None:
            continue
        key = (entry["compound"], entry["concentration"])
        groups.setdefault(key, []).append(row)
        moa[key] = entry["moa"]
    header = ["compound", "concentration", "moa", "wells", "fields", "label", *(["labels"] if multi_label else []),
              "max_probability", *[f"p_{c}" for c in classes]]
    rows = []
    for (compound, concentration), members in sorted(groups.items()):
        used, qc = _trusted(members)
        p = np.array([[m[f"p_{c}"] for c in classes] for m in used]).mean(axis=0)
        call = decide(p, classes, threshold=threshold, multi_label=multi_label, qc=qc)
        rows.append([compound, f"{concentration:g}", moa[(compound, concentration)], len(members),
                     sum(m["fields"] for m in members), call.label, *([call.labels] if multi_label else []),
                     f"{call.probability:.6f}", *[f"{v:.6f}" for v in p]])
    _write_csv(path, header, rows)
    return len(rows)


def write_hits(layout, table: list[dict], plate_map: dict, classes: tuple[str, ...], rows: list[dict]) -> list[str]:
    """``hits.csv`` and ``plate_qc.csv`` (``milcnn.outputs.hits``) where the plate map gives roles; the lines to
    tell the user (a map without roles: one notice, nothing written)."""
    from milcnn.outputs.hits import HIT_Q, call_hits, hits_header, plate_qc_header

    if not any(entry.get("role") for entry in plate_map.values()):
        return ["milzoo: the plate map has no role column (negative_control, positive_control, sample, empty): "
                "no hit list"]
    found = call_hits(table, plate_map, classes, fields=rows)
    def cell(key, value):  # p and q: three significant digits, as small as they come
        return f"{value:.3g}" if key in ("p_value", "q_value") and value is not None else _cell(value)

    _write_csv(layout.hits, hits_header(), [[cell(k, h[k]) for k in hits_header()] for h in found.hits])
    _write_csv(layout.plate_qc, plate_qc_header(), [[_cell(p[k]) for k in plate_qc_header()] for p in found.plates])
    n_hits = sum(1 for h in found.hits if h["hit"])
    return [*found.notices, f"milzoo: {n_hits} hit(s) at q <= {HIT_Q:g} among {len(found.hits)} sample wells: "
                            f"{layout.hits}, {layout.plate_qc}"]


def _cell(value) -> str:
    return "" if value is None else _fmt(value)


# ---------------------------------------------------------------------------------------- plate.png

_CELL = 22  # px per well in the main map
_SMALL = 7  # px per well in the per-class maps
_GREY = (70, 70, 70)
_BACKGROUND = (20, 20, 20)


def plate_shape(table: list[dict]) -> tuple[int, int]:
    """(rows, columns) of the plate format (96, 384 or 1536 wells) that holds every well of ``table``."""
    rows = max((split_well(t["well"])[0] for t in table), default=0) + 1
    cols = max((split_well(t["well"])[1] + 1 for t in table), default=1)
    return (8, 12) if rows <= 8 and cols <= 12 else (16, 24) if rows <= 16 and cols <= 24 else (32, 48)


def render_plate(table: list[dict], classes: tuple[str, ...], *, title: str) -> np.ndarray:
    """One plate as an RGB array: the called class per well (empty wells grey, unassigned outlined),
    a legend, and one small map per class of its mean probability (black 0 to white 1)."""
    from PIL import Image, ImageDraw

    from milcnn.outputs.overlay import PALETTE, _drawable, _font

    n_rows, n_cols = plate_shape(table)
    by_well = {t["well"]: t for t in table}
    font = _font()
    margin, legend_w = 24, 220
    main_w, main_h = margin + n_cols * _CELL, margin + n_rows * _CELL
    per_row = max(1, (main_w + legend_w) // (n_cols * _SMALL + 12))
    small_h = n_rows * _SMALL + 18
    grid_rows = -(-len(classes) // per_row)
    width = main_w + legend_w
    maps_top = 20 + max(main_h, margin + 16 * (len(classes) + 2) + 4 + _SCALE_H) + 16  # below the map and legend
    height = maps_top + grid_rows * small_h + 8
    img = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((8, 4), _drawable(title), fill=(255, 255, 255), font=font)
    top = 20
    for c in range(n_cols):
        draw.text((margin + c * _CELL + 4, top + 4), f"{c + 1}", fill=(180, 180, 180), font=font)
    for r in range(n_rows):
        draw.text((6, top + margin + r * _CELL + 5), well_name(r, 0)[:-2], fill=(180, 180, 180), font=font)
        for c in range(n_cols):
            well = well_name(r, c)
            x0, y0 = margin + c * _CELL, top + margin + r * _CELL
            box = (x0 + 1, y0 + 1, x0 + _CELL - 2, y0 + _CELL - 2)
            entry = by_well.get(well)
            if entry is None:
                draw.rectangle(box, fill=_GREY)
            elif entry["label"] in classes:
                draw.rectangle(box, fill=tuple(int(v) for v in PALETTE[classes.index(entry["label"]) % len(PALETTE)]))
            else:  # unassigned
                draw.rectangle(box, fill=_BACKGROUND, outline=(230, 230, 230))
    lx = main_w + 12
    called = {t["label"] for t in table}
    for k, name in enumerate(classes):
        y = top + margin + 16 * k
        colour = tuple(int(v) for v in PALETTE[k % len(PALETTE)])
        draw.rectangle((lx, y + 2, lx + 10, y + 12), fill=colour if name in called else None, outline=colour)
        draw.text((lx + 16, y), _drawable(name), fill=(255, 255, 255) if name in called else (130, 130, 130),
                  font=font)
    y = top + margin + 16 * len(classes)
    draw.rectangle((lx, y + 2, lx + 10, y + 12), outline=(230, 230, 230))
    draw.text((lx + 16, y), UNASSIGNED, fill=(200, 200, 200), font=font)
    draw.rectangle((lx, y + 18, lx + 10, y + 28), fill=_GREY)
    draw.text((lx + 16, y + 16), "no image", fill=(200, 200, 200), font=font)
    _colour_scale(draw, font, (lx, y + 40), "mean probability")
    oy = maps_top
    fits = max(4, (n_cols * _SMALL + 6) // 6)  # characters of the bitmap font above one small map
    for k, name in enumerate(classes):
        gx = 8 + (k % per_row) * (n_cols * _SMALL + 12)
        gy = oy + (k // per_row) * small_h
        label = name if len(name) <= fits else name[:fits - 1] + "~"
        draw.text((gx, gy), _drawable(label), fill=(220, 220, 220), font=font)
        for r in range(n_rows):
            for c in range(n_cols):
                entry = by_well.get(well_name(r, c))
                x0, y0 = gx + c * _SMALL, gy + 14 + r * _SMALL
                if entry is None:
                    fill = _GREY
                else:
                    v = int(round(255 * min(1.0, max(0.0, entry[f"p_{name}"]))))
                    fill = (v, v, v)
                draw.rectangle((x0, y0, x0 + _SMALL - 2, y0 + _SMALL - 2), fill=fill)
    return np.asarray(img)


_SCALE_H = 44  # the colour scale under the legend: its title, the bar and its ticks


def _colour_scale(draw, font, at: tuple[int, int], title: str, width: int = 120) -> None:
    """The per-class maps' colour scale: ``title``, a bar from black (0) to white (1), ticks 0, 0.5 and 1."""
    x, y = at
    draw.text((x, y), title, fill=(200, 200, 200), font=font)
    for i in range(width):
        v = int(round(255 * i / (width - 1)))
        draw.line((x + i, y + 16, x + i, y + 26), fill=(v, v, v))
    draw.rectangle((x - 1, y + 15, x + width, y + 27), outline=(120, 120, 120))
    for value in (0.0, 0.5, 1.0):
        tx = x + int(round(value * (width - 1)))
        draw.line((tx, y + 27, tx, y + 30), fill=(200, 200, 200))
        draw.text((tx - 6 if value else tx - 2, y + 31), f"{value:g}", fill=(200, 200, 200), font=font)


def write_plate_png(path: Path, table: list[dict], classes: tuple[str, ...]) -> list[str]:
    """``plate.png``: every plate of ``table``, one above the other. Returns the plates drawn."""
    from milcnn.outputs.png import encode_png

    plates = sorted({t["plate"] for t in table})
    panels = [render_plate([t for t in table if t["plate"] == p], classes, title=f"plate {p or '(unnamed)'}: "
                           f"called class per well") for p in plates]
    width = max(p.shape[1] for p in panels)
    stacked = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=20)
                              for p in panels])
    with write_atomic(path, "wb") as fh:
        fh.write(encode_png(np.ascontiguousarray(stacked)))
    return plates


def write_plate_outputs(out: Path, rows: list[dict], classes: tuple[str, ...], *, threshold: float, plate_map=None,
                        multi_label: bool = False) -> list[str]:
    """``wells.csv`` and ``plate.png`` (and ``treatments.csv`` with a plate map) from a finished run's
    ``predictions.csv`` ``rows``, when its images have wells; the lines to tell the user.

    Raises:
        OutputFolderError: a file cannot be written.
    """
    from milcnn.outputs.layout import RunLayout

    layout = RunLayout(out)
    table = well_table(rows, classes, threshold=threshold, multi_label=multi_label)
    if not table:
        return []
    try:
        write_wells(layout.wells, table, classes, multi_label=multi_label)
        plates = write_plate_png(layout.plate_png, table, classes)
        lines = [f"milzoo: {len(table)} wells of {len(plates)} plate(s): {layout.wells}, {layout.plate_png}"]
        if plate_map is not None:
            n = write_treatments(layout.treatments, table, plate_map, classes, threshold=threshold,
                                 multi_label=multi_label)
            lines.append(f"milzoo: {n} treatments: {layout.treatments}")
            lines += write_hits(layout, table, plate_map, classes, rows)
    except OSError as exc:
        raise OutputFolderError(f"{out}: cannot write the plate results ({exc.strerror or exc})") from None
    return lines
