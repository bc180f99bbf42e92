#!/bin/sh
# Call 28 (session 18): cold start, Gemma 3 270M Q4_K_M (regrown from its header): metallic
# generate --max-tokens 1 and llama.cpp's llama-server to its first streamed token, each three
# times from an empty driver shader cache (bench/cold_start_on_device.sh). Carry .gl .dev .peer.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/cold; mkdir -p $R
[ -x /tmp/b ] || { xz -dc .dev/b.xz > /tmp/b; chmod +x /tmp/b; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
python3 bench/regrow_gguf.py grow .dev/gemma3-270m-q4_k_m.hdr /tmp/gemma.gguf > /dev/null 2>> $R/err
mkdir -p /tmp/peer && [ -d /tmp/peer/bin ] || tar xJf .peer/peer.tar.xz -C /tmp/peer
timeout 400 sh bench/cold_start_on_device.sh /tmp/b /tmp/peer/bin /tmp/gemma.gguf $R > $R/out.txt 2>&1
echo done28
