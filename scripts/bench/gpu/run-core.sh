#!/bin/bash
# Packed by scripts/bench/gpu/pack.sh; run from the repository root with OUT set to a results folder.
# GPU check of OBR Studio on the lent H200 (one prepared run). Writes everything under $OUT.
# 1. Vulkan loader + node + onnxruntime-node unpacked; `obr providers --ep webgpu,cpu`.
# 2. bench:core on 2048² and 4096² obr-gptq: products on the CPU provider (16 threads), then on
#    WebGPU (Vulkan), same seeded layers, PyTorch references (official per-row loop, SparseGPT+GPTQ)
#    on CUDA in the same run.
# 3. The tiny fixture compressed end to end (W4A4KV4 obr-gptq + 50%) with --ep webgpu and --ep cpu.
. "$(dirname "$0")/setup.sh" log.txt
ls -la /usr/local/nvidia/share/vulkan/icd.d/ 2>&1 | head -5
el "node $($N -v), $(nproc) cpus, $(python3 -c 'import torch;print(torch.__version__, torch.cuda.get_device_name(0))' 2>&1)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
el providers
timeout 60 $N .gpu/cli.js providers --ep webgpu,cpu | tee "$OUT/providers.json"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$OUT/smi.csv" 2>&1 &
SMI=$!
LAYERS=${LAYERS:-2048x2048,4096x4096}
el "bench core, CPU provider"
timeout 180 $N .gpu/core.cjs --layers "$LAYERS" --methods obr-gptq --ep cpu --threads 16 --torch-threads 16 \
  --no-exact --ref-rows 256 --torch-device cuda --python python3 --name core-gpu-cpu
cp bench-results/core-gpu-cpu.json "$OUT/" 2>/dev/null
el "bench core, WebGPU provider"
timeout 180 $N .gpu/core.cjs --layers "$LAYERS" --methods obr-gptq --ep webgpu --threads 16 --torch-threads 16 \
  --no-exact --ref-rows 256 --torch-device cuda --python python3 --name core-gpu-webgpu
cp bench-results/core-gpu-webgpu.json "$OUT/" 2>/dev/null
for ep in webgpu cpu; do
  el "tiny e2e --ep $ep"
  rm -rf "/tmp/e2e-$ep"
  timeout 60 $N .gpu/cli.js compress test/fixtures/models/tiny/model.onnx --abits 4 --kvbits 4 --samples 4 --seqlen 32 \
    --eval-windows 2 --threads 16 --ep "$ep" --out "/tmp/e2e-$ep" --json --yes > "/tmp/e2e-$ep.out" 2>&1
  echo "rc=$?"; tail -c 1500 "/tmp/e2e-$ep.out"
  cp /tmp/e2e-$ep/*.report.json "$OUT/e2e-$ep.report.json" 2>/dev/null
done
kill $SMI 2>/dev/null
el done
