#!/usr/bin/env bash
# make demo-download: the whole path from an Ego-Exo4D download, on a synthetic one:
# download -> omama-prepare -> omama-proposals -> omama-precompute -> omama-train -> omama-eval.
#
# Two stand-ins, both because nothing can be downloaded here: the backbone and the segmenter
# are seeded random-init networks of the real architectures. A random FastSAM's masks are not
# real proposals, so its candidates are written beside the root's and counted, while the
# precompute, training and accuracy table use the generator's own candidates (the ones
# `make demo` uses), copied into the prepared root.
set -euo pipefail
OUT=${DEMO_OUT:-demo_download_out}
CFG=configs/demo.yaml
DIR=exo2ego
rm -rf "$OUT"
echo "== 1/6 a synthetic Ego-Exo4D download (H.264 videos, LZString relations) in $OUT/download"
omama-synth --config $CFG --download "$OUT/download" --out "$OUT/synth"
echo "== 2/6 omama-prepare: the download to a dataset root in $OUT/root"
for split in train val test; do
  # the demo's videos are small: --min-height lets them through (real ego videos are 1408 high)
  omama-prepare --download "$OUT/download" --out "$OUT/root" --split $split --min-height 200
done
echo "== 3/6 omama-proposals: candidate masks of the test split (RANDOM-INIT FastSAM-s: poor masks)"
omama-proposals --root "$OUT/root" --direction $DIR --split test --random-init --arch s \
  --imgsz 320 --conf 0.001 --masks-dir "$OUT/root/Masks_TEST_EXO2EGO_fastsam_random"
echo "   the accuracy table below uses the generator's candidates instead (copied into the root)"
cp -r "$OUT"/synth/Masks_* "$OUT/root/"
echo "== 4/6 precompute (RANDOM-INIT DINOv2 ViT-B/14 reg4 backbone)"
for split in train val test; do
  omama-precompute --config $CFG --root "$OUT/root" --cache "$OUT/cache" --split $split
done
echo "== 5/6 train"
omama-train --config $CFG --cache "$OUT/cache" --out "$OUT/run"
echo "== 6/6 evaluate on the test split against the official ground truth of the download"
mkdir -p "$OUT/eval"
omama-eval --config $CFG --cache "$OUT/cache" --root "$OUT/root" \
  --relations "$OUT/download/annotations/relations_test.json" \
  --checkpoint "$OUT/run/best.pt" --out "$OUT/eval/trained.json" --visualize 6 | tail -n 1
echo "predictions: $OUT/eval/trained.json   pictures: $OUT/eval/trained_vis/"
