#!/bin/bash
# Packs what the GPU check needs into .gpu/ (ignored; run from the repository root, after npm ci):
# this machine's node binary and onnxruntime-node (linux-x64 only), xz-compressed, and esbuild
# bundles of the CLI, bench:core, the scale job and the model generator — a GPU machine with no
# network and no Node gets everything in one folder. The Vulkan loader for the WebGPU provider
# travels as Debian packages in .gl/ (`apt-get download libvulkan1`). Then, on the GPU machine:
#   bash scripts/bench/gpu/run-core.sh   (bench:core with --ep cpu / --ep webgpu; tiny model end to end)
#   bash scripts/bench/gpu/run-job.sh    (a 2-block TinyLlama-shaped obr-gptq W4A4KV4 job per provider)
# Both source setup.sh (logging, Vulkan, node). Results and what they mean: docs/bench-gpu.md.
set -euo pipefail
mkdir -p .gpu
xz -6 -T2 -c "$(readlink -f "$(command -v node)")" > .gpu/node.xz
tar cf - --exclude='onnxruntime-node/bin/napi-v6/darwin' --exclude='onnxruntime-node/bin/napi-v6/win32' \
  --exclude='onnxruntime-node/bin/napi-v6/linux/arm64' -C node_modules onnxruntime-node onnxruntime-common | xz -6 -T2 > .gpu/ort.tar.xz
bundle() { npx esbuild "$1" --bundle --platform=node --target=node20 --format=cjs --external:onnxruntime-node --log-level=warning --outfile="$2"; }
bundle src/cli/main.ts .gpu/cli.js
bundle scripts/bench/core.ts .gpu/core.cjs
bundle scripts/bench/scaleJob.ts .gpu/scaleJob.cjs
bundle scripts/bench/gpu/gen.ts .gpu/gen.cjs
du -sh .gpu
