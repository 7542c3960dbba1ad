#!/bin/bash
# Packed by scripts/bench/gpu/pack.sh; run from the repository root with OUT set to a results folder.
# GPU check, part 2: a TinyLlama-shaped model (hidden 2048, 32/4 heads, FF 5632, vocab 32000, fp16,
# 2 blocks) compressed end to end with obr-gptq W4A4KV4 + 50% on block 0 (8×512 calibration, 2
# evaluation windows), products and forwards on the CPU provider (16 threads), then on WebGPU.
. "$(dirname "$0")/setup.sh" log2.txt
el gen
$N .gpu/gen.cjs /tmp/tl2 2
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$OUT/smi2.csv" 2>&1 &
SMI=$!
for ep in cpu webgpu; do
  el "job --ep $ep"
  rm -rf "/tmp/out-$ep"
  timeout ${JOBT:-230} $N .gpu/scaleJob.cjs /tmp/tl2/model.onnx "/tmp/out-$ep" --recipe obr-gptq --abits 4 --kvbits 4 --samples 8 --seqlen 512 \
    --eval-windows 2 --only 0 --threads 16 --ep "$ep" > "$OUT/job-$ep.out" 2> "$OUT/job-$ep.err"
  echo "rc=$?"; tail -3 "$OUT/job-$ep.err"
  cp /tmp/out-$ep/*.report.json "$OUT/tl2-$ep.report.json" 2>/dev/null
done
kill $SMI 2>/dev/null
el done
