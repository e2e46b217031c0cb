#!/usr/bin/env bash
# Retrain mcf7-moa on the real BBBC021 images, with the settings of the simulated release.
#
# Usage: bash zoo/retrain_bbbc021.sh BBBC021_FOLDER [OUT]      (OUT defaults to runs/bbbc021)
#
# BBBC021_FOLDER holds BBBC021_v1_image.csv, BBBC021_v1_moa.csv and the Week*/ image folders as
# published (https://bbbc.broadinstitute.org/BBBC021). Writes OUT/manifest.csv (the annotated
# treatments), OUT/run (checkpoints, resumable) and OUT/model, a folder the SDK loads:
#   milzoo predict plate/ --model OUT/model
# Then evaluate it as Ljosa et al. 2013 did (one training per compound; a GPU helps):
#   python -m training.loco --data OUT/manifest.csv --out OUT/loco
# EPOCHS, STEPS, BATCH and CROP override the training budget (defaults: the released model's).
set -euo pipefail
root=${1:?usage: bash zoo/retrain_bbbc021.sh BBBC021_FOLDER [OUT]}
out=${2:-runs/bbbc021}
root=$(cd "$root" && pwd)
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
python -m training.data.bbbc021 "$root" --out "$out/manifest.csv"
python -m training.train --data "$out/manifest.csv" --channels dna,tubulin,actin --out "$out/run" \
  --epochs "${EPOCHS:-15}" --steps-per-epoch "${STEPS:-100}" --batch-size "${BATCH:-8}" --crop "${CROP:-192}" \
  $([ -f "$out/run/last.pt" ] && echo --resume "$out/run/last.pt")
python -m training.export "$out/run/best.pt" --out "$out/model" --name mcf7-moa-bbbc021 --version 1.0.0 \
  --summary "MCF-7 mechanism of action, trained on BBBC021 (Caie et al. 2010; Ljosa et al. 2013), channels dna,tubulin,actin."
echo "model: $out/model   evaluate: python -m training.loco --data $out/manifest.csv --out $out/loco"
