#!/usr/bin/env bash
# Regenerates one bundled model from scratch (text, tokenizer, training, export, checks).
#   bash scripts/models/build.sh tiny|small [export]
# "export" skips text/tokenizer/training and re-exports the checkpoint in .cache/models/SIZE/.
# Needs Debian's python3-torch python3-onnx python3-numpy python3-regex libopenblas0-pthread
# (run with /usr/bin/python3) and the project's node_modules (onnxruntime-node, @huggingface/tokenizers).
# STOP_AT=<unix time> stops training early (the run then evaluates and exports what it has).
set -euo pipefail
SIZE=${1:?usage: build.sh tiny|small [export]}
STAGE=${2:-all}
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
case "$SIZE" in
  tiny)  STEPS=300; BATCH=16; LR=3e-3; OUT=test/fixtures/models/tiny; SCHEDULE=() ;;
  small) STEPS=900; BATCH=16; LR=2e-3; OUT=media/models/small
         # the committed small model was trained against a wall-clock budget on a shared machine; its per-step
         # learning rates are kept in small-lrs.json, replaying them regenerates the same run step for step
         if [ -f scripts/models/small-lrs.json ] && [ -z "${TIME_BUDGET:-}" ]; then
           SCHEDULE=(--replay-lrs scripts/models/small-lrs.json)
         else
           SCHEDULE=(--time-budget "${TIME_BUDGET:-4500}")
         fi ;;
  *) echo "unknown size $SIZE" >&2; exit 2 ;;
esac
TOK=.cache/models/tok-$SIZE
mkdir -p ".cache/models/$SIZE"
if [ "$STAGE" = all ]; then
  $PY scripts/models/prepare_text.py
  $PY scripts/models/tokenizer_build.py "$SIZE" "$TOK"
  node scripts/models/check_tokenizer.mjs "$TOK"
  $PY scripts/models/train.py "$SIZE" --steps "$STEPS" --batch "$BATCH" --lr "$LR" \
    --tokenizer "$TOK/tokenizer.json" ${SCHEDULE[@]+"${SCHEDULE[@]}"} ${STOP_AT:+--stop-at "$STOP_AT"}
fi
$PY scripts/models/export.py "$SIZE" ".cache/models/$SIZE/ckpt.pt" "$TOK" "$OUT"
OBR_TRAIN_METRICS=".cache/models/$SIZE/metrics.json" node scripts/models/check_models.mjs "$OUT" \
  --json ".cache/models/$SIZE/node-check.json"
(cd "$OUT" && sha256sum -- *)
