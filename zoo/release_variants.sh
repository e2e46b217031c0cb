#!/usr/bin/env bash
# Patch releases of the zoo's models with the same weights: yeast-loc and yeast-loc-gfp 2.0.1, mcf7-moa 2.1.1.
# The int8 variant is rewritten as QDQ (the same scales: onnxruntime's outputs do not change; OpenVINO loads it)
# and a bf16 variant is added (OpenVINO, CPUs with bf16); both are measured on every backend against fp32
# (accuracy within 1 point, masks vs fp32 IoU >= 0.95), then the real-image figures of each precision.
# Needs: pip install -e ".[test]" (OpenVINO included). Usage: bash zoo/release_variants.sh [name ...]
set -euo pipefail
cd "$(dirname "$0")/.."
models=("${@:-yeast-loc yeast-loc-gfp mcf7-moa}")
for name in ${models[@]}; do
  case "$name" in
    yeast-loc) test=data/yeast2-test/manifest.csv; version=2.0.1 ;;
    yeast-loc-gfp) test=data/yeast2-gfp-test/manifest.csv; version=2.0.1 ;;
    mcf7-moa) test=data/mcf7v2-test/manifest.csv; version=2.1.1 ;;
    *) echo "unknown model $name" >&2; exit 2 ;;
  esac
  python -m training.quantize "zoo/$name" --rewrite-qdq --eval-data "$test"
  python -m training.quantize "zoo/$name" --precision bf16 --eval-data "$test"
  python -m training.export "zoo/$name" --set-version "$version" --register "milcnn/$name@v$version"
  python -m training.bioimageio "zoo/$name" --out "dist/$name.bioimageio.zip"   # bioimage.io package (format 0.5)
done
