#!/bin/sh
# Device call 22 (session 15): the tree as committed (b2: the rebuilt cooperative quantized GEMM
# with its automatic tile, 128 x 128 or 128 x 64 up to 128 rows of x), its tests on the GPU
# (tq: crates/metallic/tests/qmatmul.rs), then the three small models, the synthetic Llama-3.2-1B
# and Llama-3.1-8B Q4_K_M and serving, each against llama.cpp's Vulkan llama-server in the same
# call. Binaries (xz -6) in .dev/; also .gl, .peer/peer.tar.xz, the .hdr headers and
# ggml-vocab-llama-bpe.gguf (bench/README.md).
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/r22; mkdir -p $R/llm $R/scale $R/serve
save() { tar czf $OUT/res.tgz -C /tmp r22; }
for b in b2 tq; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer; P=/tmp/peer/bin; chmod +x $P/llama-server
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
timeout 120 /tmp/tq cooperative word_gemv auto_path fused errors --nocapture > $R/tq.txt 2>&1; echo "rc=$?" >> $R/tq.txt
save
timeout 200 sh bench/llm_on_device.sh /tmp/b2 $P $R/llm .dev/qwen2.5-coder-0.5b-instruct-q4_k_m.hdr .dev/smollm2-135m-instruct-q4_1.hdr .dev/gemma3-270m-q4_k_m.hdr > $R/llm.log 2>&1
save
timeout 150 sh bench/serve_on_device.sh /tmp/b2 $P /tmp/smollm2-135m-instruct-q4_1.gguf $R/serve > $R/serve.log 2>&1
save
timeout 230 sh bench/llm_scale_on_device.sh /tmp/b2 $P $R/scale .dev/ggml-vocab-llama-bpe.gguf /none llama-3.2-1b-q4_k_m llama-3.1-8b-q4_k_m > $R/scale.log 2>&1
save
echo done
