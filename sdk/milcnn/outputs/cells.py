"""``--cells``: one row per cell (``cells.csv``). Each field's cells are written beside its mask
(``cells/<stem>.csv``, whole, before the field's row, so a killed run resumes as masks do), and ``cells.csv``
gathers them at the end in the order of ``predictions.csv``, with each field's image, plate, well and field."""

from __future__ import annotations

import csv
import io
from pathlib import Path


from milcnn.errors import OutputFolderError
from milcnn.io.images import write_atomic
from milcnn.outputs.layout import RunLayout
from milcnn.process.cells import cell_table, counting_plane, find_cells

__all__ = ["field_cells", "write_field_cells", "write_cells_csv", "CELL_COLUMNS"]

CELL_COLUMNS = ["cell", "y", "x", "area_px", "class", "probability"]


def field_cells(chw, pred, info) -> list[list]:
    """One image's cells (``milcnn.process.cells.cell_table``): found in the channel and at the size the model's
    ``cells`` block gives, classed by the prediction's class maps. Raises ValueError for a model without one."""
    if info.cells is None:
        raise ValueError(f"{info.name} records no way to find cells (no cells block in its config.json)")
    plane, diameter, skip = counting_plane(chw, info.channels.index(info.cells.channel),
                                           info.cells.diameter / pred.zoom)
    labels, step = find_cells(plane, diameter)
    return cell_table(labels, step * skip, pred.maps, zoom=pred.zoom, stride=pred.stride, classes=info.classes,
                      threshold=pred.threshold)


def write_field_cells(path: Path, rows: list[list]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([CELL_COLUMNS, *rows])
    with write_atomic(path, "w", encoding="utf-8", newline="", durable=False) as fh:
        fh.write(buffer.getvalue())


def write_cells_csv(out: Path, rows: list[dict]) -> int:
    """``cells.csv`` from every predicted field's ``cells/<stem>.csv``, in ``predictions.csv``'s order (``rows``);
    returns the number of cells."""
    layout = RunLayout(out)
    stems = RunLayout.stems(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "plate", "well", "field", *CELL_COLUMNS])
    n = 0
    for row in rows:
        path = layout.cell_file(stems[row["image"]])
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            cells = list(csv.reader(fh))[1:]
        where = [row["image"], row.get("plate", ""), row.get("well", ""), row.get("field", "")]
        writer.writerows([where + cell for cell in cells])
        n += len(cells)
    try:
        with write_atomic(layout.cells_csv, "w", encoding="utf-8", newline="") as fh:
            fh.write(buffer.getvalue())
    except OSError as exc:
        raise OutputFolderError(f"{layout.cells_csv}: cannot write ({exc.strerror or exc})") from None
    return n
