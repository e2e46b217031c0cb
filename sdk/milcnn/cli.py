"""``milzoo``: the command line of milcnn.

    milzoo predict plate/*.tif --out results/      classify and segment images
    milzoo models                                  list the zoo
    milzoo info yeast-loc                          summarise a model card
    milzoo download my-lab/model@v1.0.0            fetch a model into the cache (for offline nodes)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from milcnn import constants
from milcnn.errors import one_line
from milcnn.logs import log_to_stderr

def _load(model: str, device: str, precision: str = "auto", backend: str = "auto"):
    from milcnn.predict.classifier import Classifier

    try:
        return Classifier.from_hub(model, device=device, precision=precision, backend=backend)
    except Exception as exc:  # noqa: BLE001 - every failure to load is reported as one line
        raise click.UsageError(one_line(exc)) from None


def _resolve(model: str, revision: str | None = None, **kwargs):
    from milcnn.model.hub import resolve

    try:
        return resolve(model, revision=revision, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise click.UsageError(one_line(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="milcnn-sdk")
def main() -> None:
    """Classify and segment high-content-screening images with MIL-CNN models."""
    log_to_stderr(logging.INFO)
    import warnings

    from milcnn.errors import DeviceFallbackWarning

    warnings.simplefilter("ignore", DeviceFallbackWarning)  # its log line says it, once


@main.command()
@click.argument("inputs", nargs=-1)
@click.option("--model", "model_name", default=constants.DEFAULT_MODEL, show_default=True,
              help="zoo name, Hub repo 'org/name[@revision]', or a model folder")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("milzoo-out"), show_default=True,
              help="output folder")
@click.option("--channel-axis", type=int, default=None, help="axis holding the channels, if the shape is ambiguous")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "int8", "bf16"]), default="auto",
              show_default=True,
              help="auto: fp16 on a GPU where the model ships that variant, else fp32; int8: the quantised variant "
                   "(fastest on CPUs with VNNI); bf16: on OpenVINO, CPUs with bf16; see the model card")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto", show_default=True,
              help="runtime: auto picks the fastest installed for the precision (OpenVINO for int8 and bf16, "
                   "onnxruntime for fp32 and GPUs); openvino needs pip install 'milcnn-sdk[openvino]'")
@click.option("--threshold", type=click.FloatRange(0, 1), default=constants.DEFAULT_THRESHOLD, show_default=True,
              help="class-map probability for a pixel to join the mask, and the image probability a class needs "
                   "to be the label (else 'unassigned')")
@click.option("--argmax", is_flag=True, help="label every image with its most probable class, even below --threshold")
@click.option("--tile-size", type=click.IntRange(4), default=None,
              help=f"run every image in overlapping tiles of this size (default: only images over "
                   f"{constants.TILE_THRESHOLD_PIXELS:,} pixels, in {constants.DEFAULT_TILE_SIZE} px tiles)")
@click.option("--pixel-size", type=click.FloatRange(0, min_open=True), default=None,
              help="the images' pixel size in um: resized to the model's (milzoo info shows it)")
@click.option("--cell-diameter", type=click.FloatRange(0, min_open=True), default=None,
              help="instead of --pixel-size: typical cell diameter in px, matched to the model's")
@click.option("--workers", type=click.IntRange(1, 64), default=constants.DEFAULT_WORKERS, show_default=True,
              help="threads that read and decode images, and write outputs, while the network runs")
@click.option("--streams", type=click.IntRange(1, 64), default=None,
              help="images in the network at once, sharing the cores (default: 2 on a CPU, 1 on a GPU)")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="same-size images per network call (for GPUs)")
@click.option("--overlays/--no-overlays", default=True, show_default=True, help="write OUT/overlays/<stem>.png")
@click.option("--recursive", "-r", is_flag=True, help="walk folders: images in subfolders too")
@click.option("--channel", "channels", multiple=True, metavar="NAME=GLOB",
              help="one file per channel: files whose names match GLOB (one *) are channel NAME of the field the * "
                   "names, e.g. --channel gfp='*_w1.tif' --channel rfp='*_w2.tif'; with --layout, NAME=<number>")
@click.option("--layout", type=click.Choice(["imagexpress", "operetta"]), default=None,
              help="one file per channel, named as this microscope does (_w<n> / -ch<n>); channels in order, or as "
                   "--channel NAME=<n> maps them")
@click.option("--well-pattern", default=None, metavar="REGEX",
              help="where plate, well and field are in the path below the input folder: named groups well (or "
                   "row and col), field, plate (default: ImageXpress, Operetta/Opera and BBBC021 names, well folders)")
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="inputs from a CSV with a path column (or path_<channel> columns, one file per model channel); "
                   "its other columns are carried into predictions.csv")
@click.option("--channel-index", default=None, metavar="I,J,...",
              help="the model's channels, in order, from images with more channels (e.g. 0,2)")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="predict on this Dask cluster (pip install 'milcnn-sdk[dask]'); files are written here")
@click.option("--dask-workers", type=click.IntRange(1, 1024), default=None,
              help="predict on a local Dask cluster of this many single-threaded worker processes (with --cluster "
                   "slurm: this many SLURM jobs, one worker per node)")
@click.option("--dask-write", type=click.Choice(["workers", "client"]), default="workers", show_default=True,
              help="who writes masks and overlays on a Dask cluster: the workers (the output folder must be on a "
                   "file system they share) or this client (results are sent back)")
@click.option("--cluster", "cluster_kind", type=click.Choice(["local", "slurm"]), default=None,
              help="slurm: submit Dask workers as SLURM jobs (pip install 'milcnn-sdk[slurm]'; needs sbatch)")
@click.option("--cores", type=click.IntRange(1), default=None, help="with --cluster slurm: cores per job")
@click.option("--memory", default=None, help="with --cluster slurm: memory per job, e.g. 16GB")
@click.option("--walltime", default=None, help="with --cluster slurm: time limit per job, e.g. 04:00:00")
@click.option("--write-labels", is_flag=True,
              help="OME-Zarr plates: also write each field's mask into the plate, as the label image labels/milcnn")
@click.option("--plate-map", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CSV of well,compound,concentration[,moa][,plate][,role]: also write OUT/treatments.csv (and with "
                   "roles, OUT/hits.csv and OUT/plate_qc.csv)")
@click.option("--cells", is_flag=True,
              help="also write one row per cell (OUT/cells.csv: centroid, area, class, probability), found in the "
                   "channel the model's cells block names")
@click.option("--resume", is_flag=True, help="keep OUT's results and predict only the images it lacks")
@click.option("--overwrite", is_flag=True, help="replace the results already in OUT")
@click.option("--debug", is_flag=True, help="print the traceback of each failure")
def predict(inputs, model_name, out_dir, channel_axis, device, precision, backend, threshold, argmax, tile_size, pixel_size,
            cell_diameter, workers, streams, batch_size, overlays, recursive, channels, layout, well_pattern,
            manifest, channel_index, scheduler, dask_workers, dask_write, cluster_kind, cores, memory, walltime,
            write_labels, plate_map, cells, resume, overwrite, debug) -> None:
    """Classify and segment images: INPUTS are files, folders, globs or OME-Zarr HCS plates.

    Writes OUT/predictions.csv (image, label, max_probability, p_<class>...; label 'unassigned' where no
    class reaches --threshold), OUT/masks/<stem>.tif (0 background, k+1 class k), OUT/overlays/<stem>.png
    and OUT/run.json (model, weights' sha256, settings, times, counts); where images have wells,
    OUT/wells.csv and OUT/plate.png (and OUT/treatments.csv with --plate-map); inputs sharing a file name in
    different folders get <folder>__<stem>. Rows are added as images finish, so an interrupted run
    continues with --resume, which also retries the images in OUT/errors.csv. Exit code 0 when every
    image succeeded, 1 when some failed (listed in OUT/errors.csv), 2 for usage errors or an unusable
    output folder, 130 when interrupted.
    """
    from milcnn.batch.run import BatchOptions, run_batch
    from milcnn.errors import OutputFolderError, ResultsFolderError
    from milcnn.predict.options import PredictOptions

    if not inputs and manifest is None:
        raise click.UsageError("give INPUTS (files, folders, globs, OME-Zarr plates) or --manifest FILE.csv")
    index = None
    if channel_index is not None:
        try:
            index = tuple(int(v) for v in channel_index.split(","))
        except ValueError:
            raise click.UsageError(f"--channel-index {channel_index!r}: expected integers like 0,2") from None
    clf = _load(model_name, device, precision, backend)
    if index is not None and len(index) != len(clf.channels):
        raise click.UsageError(f"--channel-index {channel_index}: {clf.name} needs {len(clf.channels)} channels "
                               f"({', '.join(clf.channels)})")
    try:
        clf.zoom_for(pixel_size=pixel_size, cell_diameter=cell_diameter)
    except ValueError as exc:
        raise click.UsageError(one_line(exc)) from None
    settings = PredictOptions(channel_axis=channel_axis, channel_index=index, tile_size=tile_size,
                              pixel_size=pixel_size, cell_diameter=cell_diameter, threshold=threshold)
    opts = BatchOptions(predict=settings, argmax=argmax, workers=workers, streams=streams, batch_size=batch_size,
                        overlays=overlays, resume=resume, overwrite=overwrite, debug=debug, recursive=recursive,
                        channels=tuple(channels), layout=layout, well_pattern=well_pattern, plate_map=plate_map,
                        write_labels=write_labels, manifest=manifest, cells=cells, command=["milzoo", *sys.argv[1:]])
    runner = None
    try:
        if cluster_kind == "slurm":
            from milcnn.batch.distributed import DaskRunner, slurm_cluster

            if not (cores and memory and walltime):
                raise click.UsageError("--cluster slurm needs --cores, --memory and --walltime")
            runner = DaskRunner(model=model_name, classes=clf.classes, precision=clf.precision, backend=backend,
                                workers=dask_workers, cluster=slurm_cluster(cores=cores, memory=memory, walltime=walltime),
                                write=dask_write)
        elif scheduler or dask_workers or cluster_kind == "local":
            from milcnn.batch.distributed import DaskRunner

            runner = DaskRunner(model=model_name, classes=clf.classes, precision=clf.precision, backend=backend,
                                scheduler=scheduler, workers=dask_workers, write=dask_write)
        code = run_batch(clf, inputs, out_dir, opts, echo=lambda line: click.echo(line, err=True), runner=runner)
    except ResultsFolderError as exc:
        raise click.UsageError(str(exc)) from None
    except OutputFolderError as exc:
        _output_failed(exc)
    except ValueError as exc:  # nothing to do
        raise click.UsageError(one_line(exc)) from None
    except (RuntimeError, ImportError) as exc:  # the cluster (or its extra) is not usable
        _output_failed(exc)
    finally:
        if runner is not None:
            runner.close()
    sys.exit(code)


def _output_failed(exc: BaseException):
    """The output folder itself failed: one line, exit 2 (results written so far stay whole)."""
    click.echo(f"milzoo: {one_line(exc)}", err=True)
    sys.exit(2)


@main.command()
def models() -> None:
    """List the zoo: name, version, channels, classes and key metrics."""
    from milcnn.model.config import ModelInfo
    from milcnn.model.registry import zoo

    click.echo(f"{'name':16s} {'version':8s} {'channels':18s} {'classes':>7s}  {'simulated':>9s}  {'real':>6s}  "
               f"{'IoU':>5s}  summary")
    for name, entry in sorted(zoo().items()):
        folder = entry.bundled_dir
        if folder is None:
            click.echo(f"{name:16s} (not bundled; Hub repo {entry.repo_id}@{entry.revision})")
            continue
        info = ModelInfo.from_file(folder / constants.CONFIG_FILE)
        acc, iou, real = info.metrics.get("accuracy"), info.metrics.get("mean_iou"), _real_label_accuracy(info)
        click.echo(f"{name:16s} {info.version:8s} {','.join(info.channels):18s} {len(info.classes):7d}  "
                   f"{'' if acc is None else f'{acc:9.4f}'}  {'-' if real is None else f'{real:6.4f}':>6s}  "
                   f"{'' if iou is None else f'{iou:5.3f}'}  {entry.summary}")
    click.echo("simulated: test accuracy on simulated images; real: label accuracy, as milzoo predict writes it, on "
               "the test half of real labelled cells (benchmarks/results/calibration.md); -: not measured")


def _real_label_accuracy(info) -> float | None:
    """The label accuracy measured on a real test half (``config.json`` trust), if any was."""
    for name, row in ((info.trust or {}).get("sets") or {}).items():
        if name.startswith("real") and row.get("label_accuracy") is not None:
            return float(row["label_accuracy"])
    return None


@main.command()
@click.argument("model")
def info(model: str) -> None:
    """Summarise MODEL's card: what it expects, what it predicts, how well, and on what data."""
    from milcnn.model.config import ModelInfo
    from milcnn.errors import MilcnnError

    origin = _resolve(model)
    folder, sha = origin.folder, origin.sha256
    try:
        cfg = ModelInfo.from_file(folder / constants.CONFIG_FILE)
    except MilcnnError as exc:
        raise click.UsageError(one_line(exc)) from None
    m, data = cfg.metrics, cfg.training_data
    click.echo(f"{cfg.name} v{cfg.version}  ({folder})")
    if cfg.summary:
        click.echo(cfg.summary)
    click.echo(f"channels   {', '.join(cfg.channels)} (in this order); images >= {cfg.min_size} px")
    click.echo(f"classes    {', '.join(cfg.classes)}")
    if cfg.pixel_size or cfg.cell_diameter:
        scale = [f"{cfg.pixel_size:g} um per pixel" if cfg.pixel_size else "",
                 f"cells about {cfg.cell_diameter:g} px across" if cfg.cell_diameter else ""]
        click.echo(f"scale      trained at {', '.join(x for x in scale if x)} (--pixel-size / --cell-diameter rescale)")
        if cfg.input_cell_diameter and cfg.cell_diameter:
            click.echo(f"           given no scale, images are taken to have cells about {cfg.input_cell_diameter:g} px "
                       f"across and resized by {cfg.cell_diameter / cfg.input_cell_diameter:.2f}")
    click.echo(f"pooling    {cfg.pooling.get('name')} {cfg.pooling.get('params', {})}; maps at 1/{cfg.output_stride}")
    if cfg.calibration is not None:
        click.echo(f"calibrated {cfg.calibration.method.replace('_', ' ')} on {cfg.calibration.fitted_on.get('images', '?')} "
                   "held-out images; label: the top class at p >= --threshold (0.5) and qc ok, else unassigned")
    else:
        click.echo("calibrated no: probabilities are the network's raw outputs")
    if cfg.qc is not None:
        click.echo(f"qc         objects {cfg.qc.diameter[0]:g}-{cfg.qc.diameter[1]:g} px at the model's scale, texture >= "
                   f"{cfg.qc.texture_min:g}, coverage <= {cfg.qc.coverage_max:g}"
                   + (", a feature distance" if cfg.qc.distance is not None else "")
                   + " (else too_small, no_cells, off_scale, out_of_distribution)")
    trust = cfg.trust or {}
    for name, row in trust.get("sets", {}).items():
        click.echo(f"trust      {name}: label accuracy {100 * row['label_accuracy']:.1f} %, ECE {row['ece']:.3f}, "
                   f"qc flagged {100 * row['qc_flagged']:.1f} %")
    if data:
        click.echo(f"trained on {'SIMULATED data: ' if data.get('simulated') else ''}{data.get('name', '')}")
    if m:
        click.echo(f"metrics    accuracy {m.get('accuracy')}, macro F1 {m.get('macro_f1')}, mean IoU {m.get('mean_iou')} "
                   f"(Otsu baseline {m.get('otsu_mean_iou')}) on {m.get('n_images')} test images")
        if m.get("treatment_accuracy") is not None:
            click.echo(f"treatments accuracy {m['treatment_accuracy']} on {m.get('n_treatments')} treatments "
                       "(compound, concentration)")
    for precision, variant in cfg.variants.items():
        vm = variant.metrics
        click.echo(f"precision  {precision} (--precision {precision}): accuracy {vm.get('accuracy')}, mean IoU "
                   f"{vm.get('mean_iou')} (fp32 {vm.get('fp32_accuracy_sdk')}, {vm.get('fp32_mean_iou_sdk')})")
    for item in data.get("limitations", []):
        click.echo(f"limitation {item}")
    if sha:
        click.echo(f"sha256     {sha}")
    click.echo(f"card       {folder / constants.CARD_FILE}")


@main.command()
@click.option("--model", "model_name", default=constants.DEFAULT_MODEL, show_default=True,
              help="the model to adapt: a zoo name, a folder or org/name[@revision]")
@click.option("--examples", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="CSV of path,label (paths relative to it; label one of the model's classes, a|b for either)")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="the new model folder")
@click.option("--name", default=None, help="the adapted model's name (default: <model>-adapted)")
@click.option("--cell-diameter", type=float, default=None,
              help="the examples' cell diameter in px, where it is not the model's (then assumed of every image)")
def adapt(model_name: str, examples: Path, out_dir: Path, name: str | None, cell_diameter: float | None) -> None:
    """Fit MODEL's head to a few labelled images of your screen (numpy and onnxruntime, seconds): a model folder
    that milzoo predict --model OUT, Classifier.from_dir and napari take as any other."""
    from milcnn.errors import MilcnnError
    from milcnn.predict.adapt import adapt as run_adapt

    try:
        folder = run_adapt(model_name, examples, out_dir, name=name, cell_diameter=cell_diameter)
    except (ValueError, MilcnnError) as exc:
        raise click.UsageError(one_line(exc)) from None
    click.echo(f"milzoo: adapted {model_name} on {examples}: {folder} (milzoo predict IMAGES --model {folder})", err=True)


@main.command()
@click.argument("model")
@click.option("--revision", default=None, help="branch, tag or commit (default: the zoo's pinned release, or main)")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Hugging Face cache to fill (default: HF_HUB_CACHE, under HF_HOME)")
@click.option("--force", is_flag=True, help="download again even if cached")
def download(model: str, revision: str | None, cache_dir: Path | None, force: bool) -> None:
    """Fetch MODEL (zoo name or org/name[@revision]) into the cache, for machines without network.

    Run it where the Hub is reachable, sharing the cache (HF_HOME) with the compute nodes;
    there, `milzoo predict --model MODEL` then loads it with no network. Prints the folder.
    """
    origin = _resolve(model, revision, cache_dir=cache_dir, force_download=force)
    from milcnn.predict.classifier import Classifier

    try:  # a model that will not load is not worth caching silently
        Classifier.from_dir(origin.folder, device="cpu", sha256=origin.sha256)
    except Exception as exc:  # noqa: BLE001
        raise click.UsageError(one_line(exc)) from None
    where = {"bundled": "ships with milcnn-sdk, nothing to download", "hub": "downloaded or up to date",
             "cache": "from the cache (the Hub was not reachable)", "folder": "a local folder"}[origin.source]
    commit = f" commit {origin.commit[:12]}" if origin.commit else ""
    click.echo(f"{model}{commit}: {where}; sha256 {'verified' if origin.sha256 else 'not pinned'}", err=True)
    click.echo(str(origin.folder))


# ---------------------------------------------------------------------------------------- training

#: milzoo's training commands: the module of ``milcnn.training`` (``training/`` in the repository) each runs
TRAINING_COMMANDS = {
    "train": "Train a MIL-CNN from a manifest of images with image-level labels (PyTorch).",
    "finetune": "Fine-tune a zoo model, Hub repo, model folder or checkpoint on a few labelled fields (PyTorch).",
    "evaluate": "Evaluate a checkpoint on a manifest: accuracy, F1, segmentation IoU (PyTorch).",
    "export": "Export a checkpoint as a model folder that milzoo predict runs (PyTorch, ONNX).",
    "simulate": "Write a simulated screen with pixel ground truth: images, masks and a manifest.",
}
#: what the train extra installs (``pip install "milcnn-sdk[train]"``)
TRAIN_EXTRA = ("torch", "scipy", "matplotlib", "tqdm", "onnx", "onnxscript")


def training_module(command: str):
    """The training module behind ``milzoo COMMAND``: ``milcnn.training`` where it is installed, else the
    repository's ``training`` (run from the repository's folder).

    Raises:
        click.UsageError: the train extra is missing (says what to install), or no training code is found.
    """
    import importlib

    for package in ("milcnn.training", "training"):
        try:
            module = importlib.import_module(f"{package}.{command}")
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing.split(".")[0] in TRAIN_EXTRA:
                raise click.UsageError(f"milzoo {command} needs the train extra (PyTorch and friends; {missing} is "
                                       "missing): pip install \"milcnn-sdk[train]\"") from None
            if missing in (package, f"{package}.{command}"):
                continue  # not in this layout: try the next
            raise
        importlib.import_module(f"{package}.options").COMMAND_PREFIX = "milzoo "
        return module
    raise click.UsageError(f"milzoo {command}: no training code in this install; pip install \"milcnn-sdk[train]\"")


def _training_command(command: str, summary: str) -> None:
    @main.command(name=command, help=f"{summary} Options: milzoo {command} --help.", add_help_option=False,
                  context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def run(args) -> None:
        sys.exit(training_module(command).main(list(args)))


for _command, _summary in TRAINING_COMMANDS.items():
    _training_command(_command, _summary)


if __name__ == "__main__":
    main()
