#!/usr/bin/env bash
# Re-create the zoo's yeast models from scratch: simulate, train, evaluate, export, register, int8 variant.
# Usage: bash zoo/release.sh [yeast-loc|yeast-loc-gfp ...]   (default: both; about 25 min each on 2 CPU cores)
# A finished run in runs/<name>/best.pt is exported, not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
models=("${@:-yeast-loc yeast-loc-gfp}")
for name in ${models[@]}; do
  case "$name" in
    yeast-loc) channels=gfp,rfp; prefix=yeast; epochs=30 ;;
    yeast-loc-gfp) channels=gfp; prefix=yeast-gfp; epochs=20 ;;
    *) echo "unknown model $name" >&2; exit 2 ;;
  esac
  for spec in "train 440 1" "val 110 2" "test 220 3"; do
    set -- $spec
    [ -f "data/$prefix-$1/manifest.csv" ] || \
      python -m training.simulate yeast --n "$2" --seed "$3" --channels "$channels" --out "data/$prefix-$1"
  done
  [ -f "runs/$name/best.pt" ] || python -m training.train --data "data/$prefix-train/manifest.csv" --val "data/$prefix-val/manifest.csv" \
    --channels "$channels" --out "runs/$name" --epochs "$epochs"
  python -m training.export "runs/$name/best.pt" --out "zoo/$name" --name "$name" --version 1.0.0 \
    --pixel-size 0.17 --cell-diameter 27 \
    --eval-data "data/$prefix-test/manifest.csv" --register "milcnn/$name@v1.0.0" \
    --summary "Yeast GFP protein localization, 11 DeepLoc classes, channels $channels (trained on simulated images)." \
    --training-data "$(python - "$name" "$channels" "$prefix" <<'PY'
import json, sys
name, channels, prefix = sys.argv[1:]
print(json.dumps({
    "name": "milcnn yeast simulator (DeepLoc classes)", "simulated": True, "tags": ["yeast", "protein-localization"],
    "description": (
        "440 images of 512 x 512 px (40 per class) from `python -m training.simulate yeast` (seed 1; validation "
        "110 images, seed 2; test 220 images, seed 3), channels " + channels + ". Budding yeast rendered through a "
        "widefield optics and sCMOS camera model; per image 20-50 % of cells show no pattern, 5 % outliers "
        "(dead cells, out-of-focus cells, debris). See docs/simulator.png."),
    "intended_use": ("Research use: a worked, measured example of MIL-CNN classification and weakly supervised "
                     "segmentation of yeast localization screens, and a starting point for retraining on a real "
"screen. On real images it fails (its card's Real images, from python -m benchmarks.realdata); "
                     "fine-tune it on a few labelled fields of your screen first (python -m training.finetune)."),
    "limitations": [
        "Trained and tested only on simulated images; expect to retrain on your own screen.",
        "Single-label: one localization per image; proteins with several localizations get the dominant one.",
        "Expects yeast at about 0.17 um per pixel (a mother cell 24 to 34 px across).",
    ],
    "commands": [
        f"python -m training.simulate yeast --n 440 --seed 1 --channels {channels} --out data/{prefix}-train",
        f"python -m training.train --data data/{prefix}-train/manifest.csv --val data/{prefix}-val/manifest.csv "
        f"--channels {channels} --out runs/{name} --epochs " + ("30" if name == "yeast-loc" else "20"),
        "# or on your own screen: a manifest CSV with path,label (see training/data/manifest.py)",
    ],
}))
PY
)"
  python -m training.quantize "zoo/$name" --calibration "data/$prefix-train/manifest.csv" \
    --eval-data "data/$prefix-test/manifest.csv"
  python -m training.quantize "zoo/$name" --precision fp16 --eval-data "data/$prefix-test/manifest.csv"
  python -m benchmarks.realdata --model "$name" --update-zoo   # the card's Real images (../shared/realdata-labelled)
done
