#!/usr/bin/env bash
# make demo: synthetic dataset -> precompute (random-init backbone) -> train -> eval -> compare.
set -euo pipefail
OUT=${DEMO_OUT:-demo_out}
CFG=configs/demo.yaml
rm -rf "$OUT"
echo "== 1/5 synthetic Ego-Exo4D-layout dataset in $OUT/data"
omama-synth --config $CFG --out "$OUT/data"
echo "== 2/5 precompute (RANDOM-INIT DINOv2 ViT-B/14 reg4 backbone: real weights cannot be downloaded here)"
for split in train val test; do
  omama-precompute --config $CFG --root "$OUT/data" --cache "$OUT/cache" --split $split
done
echo "== 3/5 train"
omama-train --config $CFG --cache "$OUT/cache" --out "$OUT/run"
mkdir -p "$OUT/eval"
# the official ground truth of the test split, from the relations file omama-synth wrote
GT=(--root "$OUT/data" --relations "$OUT/data/annotations/relations_test.json")
echo "== 4/5 evaluate on the test split: random candidate, untrained matcher, trained matcher (fitted and reference confidence)"
omama-eval --config $CFG --cache "$OUT/cache" "${GT[@]}" --baseline random --out "$OUT/eval/random.json" --visualize 0 | tail -n 1 > "$OUT/eval/random.line"
omama-eval --config $CFG --cache "$OUT/cache" "${GT[@]}" --checkpoint "$OUT/run/init.pt" --out "$OUT/eval/untrained.json" --visualize 0 | tail -n 1 > "$OUT/eval/untrained.line"
omama-eval --config $CFG --cache "$OUT/cache" "${GT[@]}" --checkpoint "$OUT/run/best.pt" --out "$OUT/eval/trained.json" | tail -n 1 > "$OUT/eval/trained.line"
omama-eval --config $CFG --cache "$OUT/cache" "${GT[@]}" --checkpoint "$OUT/run/best.pt" --confidence reference --out "$OUT/eval/trained_refconf.json" --visualize 0 | tail -n 1 > "$OUT/eval/trained_refconf.line"
echo "== 5/5 results (test split; location_score: lower is better)"
python - "$OUT/eval" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
names = ("random", "untrained", "trained", "trained_refconf")
rows = {name: json.loads((d / f"{name}.line").read_text()) for name in names}
print(f"{'matcher':15s} {'iou':>7s} {'shape_acc':>9s} {'location':>9s} {'bal_acc':>8s} {'n':>5s}")
for name, m in rows.items():
    print(f"{name:15s} {m['iou']:7.3f} {m['shape_acc']:9.3f} {m['location_score']:9.3f} {m['balanced_acc']:8.3f} {m['n']:5d}")
gain = rows["trained"]["iou"] - max(rows["random"]["iou"], rows["untrained"]["iou"])
print(f"trained IoU beats the better baseline by {gain:+.3f}")
PY
echo "predictions: $OUT/eval/trained.json   metrics: $OUT/eval/trained_metrics.json"
echo "pictures:    $OUT/eval/trained_vis/   curves: $OUT/run/curves.png   log: $OUT/run/log.json"
