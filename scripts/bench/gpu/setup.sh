# Sourced by run-core.sh and run-job.sh on the GPU machine: `. setup.sh LOGNAME`. Logs to $OUT/LOGNAME,
# unpacks the Vulkan loader (.gl/*.deb), node and onnxruntime-node (.gpu/, from pack.sh); sets N
# (the node binary) and el (a line with the seconds since the start).
set -u
T0=$(date +%s)
el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
exec > >(tee "$OUT/$1") 2>&1
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
xz -d < .gpu/node.xz > /tmp/node && chmod +x /tmp/node
mkdir -p node_modules && tar xJf .gpu/ort.tar.xz -C node_modules
N=/tmp/node
