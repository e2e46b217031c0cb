"""``report.html``: one self-contained page per run, for a browser with no network (no script, no CDN, no
font or image fetched): what was called, per plate the hit score and each class on heatmaps with their colour
scales, Z' per plate, the hit list with overlay thumbnails, the model's calibration statement and the run's
provenance. Made from the run's own files (``predictions.csv``, ``wells.csv``, ``hits.csv``, ``plate_qc.csv``,
``run.json``, ``overlays/``), so a resumed or distributed run gets the same page."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np

from milcnn.errors import OutputFolderError
from milcnn.io.images import write_atomic
from milcnn.io.locations import well_name
from milcnn.outputs.layout import RunLayout
from milcnn.outputs.plates import plate_shape

__all__ = ["write_report"]

MAX_HIT_ROWS = 200  # the hit list shows its best rows; hits.csv holds them all
MAX_THUMBNAILS = 48  # overlay thumbnails inlined (each about 20 KB)
_VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)
_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f2f2f2}.maps{display:flex;flex-wrap:wrap;gap:14px}.note{color:#555}.hit{background:#fff3c4}
svg text{font:10px sans-serif;fill:#333}img.thumb{height:72px}"""


def write_report(out: Path, rows: list[dict], info, record: dict) -> Path:
    """Write ``out/report.html`` from the run's rows, its model (``ModelInfo``) and its ``run.json`` record.

    Raises:
        OutputFolderError: the page cannot be written (the run's other results stay whole).
    """
    layout = RunLayout(out)
    wells, hits, plates = (_read(p) for p in (layout.wells, layout.hits, layout.plate_qc))
    parts = [f"<h1>milzoo predict: {_e(info.name)} {_e(info.version)}</h1>", _summary(rows, record)]
    qc_by_plate = {p["plate"]: p for p in plates}
    hit_by_well = {(h["plate"], h["well"]): h for h in hits}
    for k, plate in enumerate(sorted({w["plate"] for w in wells})):
        mine = [w for w in wells if w["plate"] == plate]
        parts.append(_plate_section(plate, mine, info.classes, qc_by_plate.get(plate), hit_by_well, k))
    if hits:
        parts.append(_hit_list(hits, rows, layout))
    parts += [_model_section(info), _provenance(record)]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(info.name)} report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
    path = layout.report
    try:
        with write_atomic(path, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as exc:
        raise OutputFolderError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
    return path


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _summary(rows: list[dict], record: dict) -> str:
    counts = record.get("counts") or {}
    labels = Counter(r["label"] for r in rows)
    qc = Counter(r["qc"] for r in rows)
    cells = [int(r["n_cells"]) for r in rows if r.get("n_cells")]
    lines = [f"<p>{len(rows)} images predicted, {counts.get('failed', 0)} failed (errors.csv); finished "
             f"{_e(record.get('finished') or 'not yet')}." + (f" Median cells per image: {np.median(cells):.0f}."
                                                                if cells else "") + "</p>",
             "<table><tr><th>label</th><th>images</th></tr>"
             + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in labels.most_common()) + "</table>",
             "<p class='note'>qc: " + ", ".join(f"{_e(k)} {v}" for k, v in sorted(qc.items())) + "</p>"]
    return "".join(lines)


def _colour(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "#bbbbbb"
    x = min(1.0, max(0.0, float(value))) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    r, g, b = _VIRIDIS[i] + (x - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i])
    return f"#{int(r):02x}{int(g):02x}{int(b):02x}"


def _heatmap(values: dict[str, float | None], shape: tuple[int, int], title: str, cell: int) -> str:
    """An SVG plate map: one square per well coloured by its value on 0..1 (grey: no value), a tooltip each."""
    n_rows, n_cols = shape
    label = 14 if cell >= 10 else 0
    width, height = label + n_cols * cell + 2, label + n_rows * cell + 18
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>",
             f"<text x='0' y='11'>{_e(title)}</text>"]
    if label:
        parts += [f"<text x='{label + c * cell + 2}' y='27'>{c + 1}</text>" for c in range(0, n_cols, 2 if cell < 14 else 1)]
        parts += [f"<text x='0' y='{18 + label + r * cell + cell * 0.7:.0f}'>{well_name(r, 0)[:-2]}</text>"
                  for r in range(n_rows)]
    for r in range(n_rows):
        for c in range(n_cols):
            well = well_name(r, c)
            value = values.get(well)
            tip = f"{well}: {'no value' if value is None else f'{value:.3f}'}"
            parts.append(f"<rect x='{label + c * cell}' y='{18 + label + r * cell}' width='{cell - 1}' "
                         f"height='{cell - 1}' fill='{_colour(value)}'><title>{_e(tip)}</title></rect>")
    return "".join(parts) + "</svg>"


def _colour_scale(title: str, ident: str) -> str:
    stops = "".join(f"<stop offset='{k / (len(_VIRIDIS) - 1):.2f}' stop-color='{_colour(k / (len(_VIRIDIS) - 1))}'/>"
                    for k in range(len(_VIRIDIS)))
    ticks = "".join(f"<text x='{10 + 180 * v - (6 if v else 0):.0f}' y='44'>{v:g}</text>" for v in (0, 0.5, 1))
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='210' height='50' role='img'><defs><linearGradient "
            f"id='{ident}'>{stops}</linearGradient></defs><text x='10' y='11'>{_e(title)}</text><rect x='10' y='16' "
            f"width='180' height='14' fill='url(#{ident})' stroke='#777'/>{ticks}</svg>")


def _number(text) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _plate_section(plate: str, wells: list[dict], classes, qc: dict | None, hits: dict, index: int) -> str:
    shape = plate_shape(wells)
    big = 22 if shape[1] <= 12 else 12 if shape[1] <= 24 else 7
    small = max(4, big // 2)
    name = plate or "(unnamed)"
    parts = [f"<h2>Plate {_e(name)}</h2>"]
    if qc is not None:
        parts.append(_plate_qc_line(qc))
    score = {w["well"]: _number(hits[(plate, w["well"])]["score"]) for w in wells if (plate, w["well"]) in hits}
    maps = []
    if score:
        maps.append(_heatmap(score, shape, "hit score (probability gained over the negative controls)", big))
    maps.append(_heatmap({w["well"]: _number(w["max_probability"]) if w["label"] != "unassigned" else 0.0
                          for w in wells}, shape, "probability of the called class (unassigned: 0)", big))
    scale = _colour_scale("hit score, probability", f"scale-{index}-a")
    parts.append(f"<div class='maps'>{''.join(maps)}{scale}</div>")
    parts.append("<h3>Mean probability of each class</h3><div class='maps'>"
                 + "".join(_heatmap({w["well"]: _number(w[f"p_{c}"]) for w in wells}, shape, c, small)
                           for c in classes) + f"{_colour_scale('mean probability', f'scale-{index}-b')}</div>")
    return "".join(parts)


def _plate_qc_line(qc: dict) -> str:
    z, zr, ssmd = (_number(qc.get(k)) for k in ("z_prime", "z_prime_robust", "ssmd"))
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    verdict = "" if z is None else (" (an excellent assay window)" if z >= 0.5 else " (controls overlap: check the "
                                                                                     "plate)")
    return (f"<p><b>Z' {fmt(z)}</b>{verdict}, robust Z' {fmt(zr)}, SSMD {fmt(ssmd)}; {qc['negative_controls']} "
            f"negative and {qc['positive_controls']} positive control wells, {qc['samples']} samples; "
            f"{qc['fields_qc_not_ok']} of {qc['fields']} fields with qc not ok; hit calling: "
            f"{_e(qc['hit_calling'])}.</p>")


def _hit_list(hits: list[dict], rows: list[dict], layout: RunLayout) -> str:
    stems = RunLayout.stems(rows)
    first_image = {}
    for r in rows:
        first_image.setdefault((r.get("plate", ""), r.get("well", "")), r["image"])
    called = sum(1 for h in hits if h["hit"] == "True")
    head = ["plate", "well", "compound", "concentration", "class", "score", "robust_z", "q_value", "n_cells"]
    out = [f"<h2>Hit list</h2><p>{called} hit(s) at q &le; 0.05 of {len(hits)} sample wells; the best "
           f"{min(len(hits), MAX_HIT_ROWS)} below (all in hits.csv).</p><table><tr>"
           + "".join(f"<th>{h}</th>" for h in head) + "<th>overlay</th></tr>"]
    for k, h in enumerate(hits[:MAX_HIT_ROWS]):
        image = first_image.get((h["plate"], h["well"]))
        thumb = _thumbnail(layout.overlay(stems[image])) if image in stems and k < MAX_THUMBNAILS else ""
        cells = "".join(f"<td>{_e(_short(h[c]))}</td>" for c in head)
        out.append(f"<tr class='{'hit' if h['hit'] == 'True' else ''}'>{cells}<td>{thumb}</td></tr>")
    return "".join(out) + "</table>"


def _short(value: str) -> str:
    number = _number(value)
    return value if number is None or ("." not in value and "e" not in value) else f"{number:.3g}"


def _thumbnail(path: Path) -> str:
    if not path.is_file():
        return ""
    from PIL import Image

    with Image.open(path) as im:
        im.thumbnail((240, 120))
        buffer = io.BytesIO()
        im.convert("RGB").save(buffer, format="PNG", optimize=True)
    return f"<img class='thumb' alt='overlay' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _model_section(info) -> str:
    parts = [f"<h2>Model</h2><p>{_e(info.name)} {_e(info.version)}: {_e(info.summary)}</p>"]
    cal = info.calibration
    if cal is None:
        parts.append("<p>Probabilities are the network's own (no calibration recorded): read them as scores.</p>")
    else:
        fitted = cal.fitted_on or {}
        parts.append(f"<p>Probabilities are calibrated ({_e(cal.method)}, fitted on {_e(fitted.get('images', '?'))} "
                     "held-out images); a label is given where the called class reaches the threshold and qc is ok, "
                     "else <code>unassigned</code>.</p>")
    trust = info.trust or {}
    if trust.get("sets"):
        parts.append("<table><tr><th>measured on</th><th>images</th><th>ECE</th><th>label accuracy</th></tr>"
                     + "".join(f"<tr><td>{_e(k)}</td><td>{v.get('n', '')}</td><td>{v['ece']:.3f}</td>"
                               f"<td>{100 * v['label_accuracy']:.1f} %</td></tr>" for k, v in trust["sets"].items())
                     + f"</table><p class='note'>{_e(trust.get('command', ''))}</p>")
    if info.cells is not None:
        parts.append(f"<p>n_cells counts {_e(info.cells.objects)} in {_e(info.cells.channel)} "
                     f"(median ratio to the simulator's count {info.cells.validated.get('median_ratio', '?')}).</p>")
    return "".join(parts)


def _provenance(record: dict) -> str:
    model = record.get("model") or {}
    items = [("model", f"{model.get('name')} {model.get('version')} ({model.get('origin')})"),
             ("model file sha256", model.get("sha256")), ("precision, backend",
                                                           f"{record.get('precision')}, {record.get('backend')}"),
             ("threshold", record.get("threshold")), ("calibration", record.get("calibration")),
             ("milcnn-sdk", record.get("sdk_version")), ("command", " ".join(record.get("command") or [])),
             ("started", record.get("first_started")), ("finished", record.get("finished")),
             ("counts", json.dumps(record.get("counts")))]
    return ("<h2>Provenance</h2><table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
            + "</table>")
