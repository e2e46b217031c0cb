"""File names and settings in one place. Environment variables are read here only."""

from __future__ import annotations

import os

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SAMPLE_INPUT_FILE = "sample_input.tif"
SAMPLE_OUTPUT_FILE = "sample_output.json"

DEFAULT_MODEL = "yeast-loc"
DEFAULT_THRESHOLD = 0.5  # class-map probability for a pixel to join the mask
SELF_TEST_TOLERANCE = 1e-4  # max abs difference of probabilities on the sample

#: onnxruntime intra-op threads; 0 lets onnxruntime use every physical core.
NUM_THREADS = int(os.environ.get("MILCNN_NUM_THREADS", "0") or 0)
