#!/usr/bin/env bash
# Re-create the zoo's yeast models from scratch: simulate, train, evaluate, export, register, int8 variant.
# Usage: bash zoo/release.sh [yeast-loc|yeast-loc-gfp ...]   (default: both; about 25 min each on 2 CPU cores)
# 2.1.0: calibrated probabilities and qc limits (training/calibrate.py), same weights as 2.0.0.
# 2.0.0: the simulator randomises the microscope (docs/simulator.md) and training adds intensity and scale
# augmentations; settings were chosen on the validation half of the real yeast (AAC1, AAP1, AAH1 fields).
# A finished run in runs/<name>/best.pt is exported, not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
models=("${@:-yeast-loc yeast-loc-gfp}")
for name in ${models[@]}; do
  case "$name" in
    yeast-loc) channels=gfp,rfp; prefix=yeast2; epochs=30 ;;
    yeast-loc-gfp) channels=gfp; prefix=yeast2-gfp; epochs=30 ;;
    *) echo "unknown model $name" >&2; exit 2 ;;
  esac
  for spec in "train 440 1" "val 110 2" "test 220 3"; do
    set -- $spec
    [ -f "data/$prefix-$1/manifest.csv" ] || \
      python -m training.simulate yeast --n "$2" --seed "$3" --channels "$channels" --out "data/$prefix-$1"
  done
  [ -f "runs/$name/best.pt" ] || python -m training.train --data "data/$prefix-train/manifest.csv" --val "data/$prefix-val/manifest.csv" \
    --channels "$channels" --out "runs/$name" --epochs "$epochs" --photometric --scale-jitter 0.4 \
    --pixel-size 0.17 --cell-diameter 29
  python -m training.export "runs/$name/best.pt" --out "zoo/$name" --name "$name" --version 2.0.0 \
    --pixel-size 0.17 --cell-diameter 29 \
    --eval-data "data/$prefix-test/manifest.csv" --register "milcnn/$name@v2.0.0" \
    --summary "Yeast GFP protein localization, 11 DeepLoc classes, channels $channels (trained on simulated images)." \
    --training-data "$(python - "$name" "$channels" "$prefix" <<'PY'
import json, sys
name, channels, prefix = sys.argv[1:]
print(json.dumps({
    "name": "milcnn yeast simulator (DeepLoc classes)", "simulated": True, "tags": ["yeast", "protein-localization"],
    "description": (
        "440 images of 512 x 512 px (40 per class) from `python -m training.simulate yeast` (seed 1; validation "
        "110 images, seed 2; test 220 images, seed 3), channels " + channels + ". Budding yeast rendered through a "
        "widefield optics and sCMOS camera model whose blur, brightness, noise, background, autofluorescence and "
        "cell size are drawn anew for every image (docs/simulator.md); per image 20-50 % of cells show no "
        "pattern, 5 % outliers (dead cells, out-of-focus cells, debris); the ranges were set by measuring real "
        "cells of the validation half (AAC1, AAP1, AAH1) against simulated ones (python -m benchmarks.sim_vs_real). "
        "Trained with intensity and scale augmentations. No real image was used in training."),
    "settings_chosen_on": ("the validation half of the real yeast cells in ../shared/realdata-labelled/yeast-chong "
                           "(the fields of AAC1, AAP1 and AAH1); AAC3 and AAR2 are the test half"),
    "intended_use": ("Research use: yeast GFP localization screens (MIL-CNN classification and weakly supervised "
                     "segmentation), out of the box or fine-tuned on a few labelled fields of your screen "
                     "(python -m training.finetune). Check its card's Real images before trusting a class: only "
                     "mitochondria, cytosol and nucleus have been measured on real cells."),
    "limitations": [
        "Trained on simulated images only; measured on real cells of one screen (Chong et al. 2015) and 3 "
        "localizations. The other 8 classes have not been checked on real images.",
        "Single-label: one localization per image; proteins with several localizations get the dominant one.",
        "Trained at about 0.17 um per pixel with mother cells 20 to 38 px across and a 1.4x scale jitter; "
        "pass cell_diameter= for cells far outside that.",
    ],
    "commands": [
        f"python -m training.simulate yeast --n 440 --seed 1 --channels {channels} --out data/{prefix}-train",
        f"python -m training.train --data data/{prefix}-train/manifest.csv --val data/{prefix}-val/manifest.csv "
        f"--channels {channels} --out runs/{name} --epochs 30 --photometric --scale-jitter 0.4 "
        "--pixel-size 0.17 --cell-diameter 29",
        "# or on your own screen: a manifest CSV with path,label (see training/data/manifest.py)",
    ],
}))
PY
)"
  python -m training.quantize "zoo/$name" --calibration "data/$prefix-train/manifest.csv" \
    --eval-data "data/$prefix-test/manifest.csv"
  python -m training.quantize "zoo/$name" --precision fp16 --eval-data "data/$prefix-test/manifest.csv"
  # 2.1.0 (same weights): calibration and qc limits, fitted on simulated seed 4 and the real validation half
  [ -f "data/$prefix-cal/manifest.csv" ] || \
    python -m training.simulate yeast --n 220 --seed 4 --channels "$channels" --out "data/$prefix-cal"
  python -m training.calibrate "zoo/$name" --data "data/$prefix-cal/manifest.csv" --real yeast-chong --version 2.1.0 \
    --register "milcnn/$name@v2.1.0"
  python -m benchmarks.realdata --model "$name" --update-zoo   # the card's Real images (../shared/realdata-labelled)
  python -m benchmarks.calibration --model "$name" --update-zoo   # the card's Probabilities, unassigned and qc
  python -m training.bioimageio "zoo/$name" --out "dist/$name.bioimageio.zip"   # bioimage.io package (format 0.5)
done
