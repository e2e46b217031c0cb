"""File names and settings in one place. Environment variables are read here only."""

from __future__ import annotations

import os
from pathlib import Path

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SAMPLE_INPUT_FILE = "sample_input.tif"
SAMPLE_OUTPUT_FILE = "sample_output.json"
POOLING_FILE = "pooling.onnx"  # the pooling layer alone: class maps -> probabilities (for tiled inference)
INT8_MODEL_FILE = "model.int8.onnx"
FEATURES_FILE = "model.features.onnx"  # the network up to its head, for milzoo adapt (config.json's head block)
FP16_MODEL_FILE = "model.fp16.onnx"  # float16 weights and activations, float32 input and outputs (GPUs)

DEFAULT_MODEL = "yeast-loc"
DEFAULT_THRESHOLD = 0.5  # class-map probability for a pixel to join the mask
LABEL_THRESHOLD = 0.5  # image probability for a multi-label model to call a class
MAX_MODEL_BYTES = 2**31 - 1  # protobuf's limit on one message: a self-contained .onnx file is never larger
MAX_CONFIG_BYTES = 1 << 20  # a config.json larger than this is refused before parsing (released ones: ~10 KB)
SELF_TEST_TOLERANCE = 1e-4  # max abs difference of probabilities on the sample

# Images with more pixels than this run in tiles (whole-image activations of a 2048 x 2048 image
# already take about 1 GB); a tile is DEFAULT_TILE_SIZE square plus a receptive-field margin.
TILE_THRESHOLD_PIXELS = int(os.environ.get("MILCNN_TILE_THRESHOLD_PIXELS", str(2048 * 2048)))
DEFAULT_TILE_SIZE = 1024
# The most values (pixels x channels x pages) an input may declare: checked from the file's header,
# before any pixel is read. 2**27 is an 8192 x 8192 two-channel image (which peaks near 1.9 GB).
MAX_IMAGE_VALUES = int(os.environ.get("MILCNN_MAX_IMAGE_VALUES", str(2**27)))
# Larger TIFFs that can be read a tile at a time (milcnn.io.lazy) are predicted if each plane holds at
# most this many pixels: the input then costs a tile row, but the outputs still grow with the image
# (the mask 1 byte per pixel, class maps 4 bytes x classes / stride**2): 2**29 px is 23170 x 23170.
MAX_LAZY_PIXELS = int(os.environ.get("MILCNN_MAX_LAZY_PIXELS", str(2**29)))
# The most pages a TIFF may hold: tifffile's parsing of its series grows faster than the page count
# (1,024 one-page series: 0.18 s; 4,096: 1.6 s; 20,000: 32 s). A field is one page per channel.
MAX_TIFF_PAGES = int(os.environ.get("MILCNN_MAX_TIFF_PAGES", "1024"))
SCALE_CHECKS = 8  # images per Classifier whose cell size (qc's reading) may raise the scale notice
#: the largest ``min_size`` a model config may declare (every smaller image is padded to it)
MAX_MIN_SIZE = 4096
MAX_IMAGE_ZOOM = 8.0  # a pixel size read from a file is used only for a zoom within 1/8x to 8x
DEFAULT_RECEPTIVE_FIELD = 64  # px; used when a config.json does not record the model's own

#: threads that read, decode and write images beside inference in ``milzoo predict``
DEFAULT_WORKERS = 4

#: where TensorRT keeps the engines it builds (building one takes minutes; reusing it, none)
TRT_CACHE_DIR = Path(os.environ.get("MILCNN_TRT_CACHE", Path.home() / ".cache" / "milcnn" / "tensorrt"))

#: onnxruntime intra-op threads; 0 lets onnxruntime use every physical core.
NUM_THREADS = int(os.environ.get("MILCNN_NUM_THREADS", "0") or 0)
