#!/bin/sh
# Device call 21 (session 15): b1 (the rebuilt cooperative quantized GEMM, experiment switches
# on) against llama.cpp's Vulkan llama-server on the three small models (bench/llm_on_device.sh),
# then the synthetic Llama-3.1-8B Q4_K_M and Llama-3.2-1B decoded with the norms fused (stream
# width limit 8192) and not (1024, the default), two rounds alternating, with b0 (main at
# 16892e3) as the baseline; before them, the tiles at 32 to 256 rows of x. Binaries in .dev/ as in call 20.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/r21; mkdir -p $R/llm
save() { tar czf $OUT/res.tgz -C /tmp r21; }
for b in b0 b1; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer; P=/tmp/peer/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
# Call 20: 128 x 128 tiles were the fastest at M = 512 on every shape; b1's automatic choice was
# not yet that, so the tile is set for the peer comparison.
export METALLIC_COOP_TILE=128x128
timeout 300 sh bench/llm_on_device.sh /tmp/b1 $P $R/llm .dev/qwen2.5-coder-0.5b-instruct-q4_k_m.hdr .dev/smollm2-135m-instruct-q4_1.hdr .dev/gemma3-270m-q4_k_m.hdr > $R/llm.log 2>&1
unset METALLIC_COOP_TILE
save
# Tiles at fewer rows of x (prefill chunks, short prompts).
for s in "576 576 q4-1" "1536 576 q4-1" "4096 4096 q4-k"; do set -- $s
  for m in 32 64 128 256; do for t in 64x64 64x128 128x64 128x128; do
    timeout 30 /tmp/b1 bench qmatmul --m $m --n $1 --k $2 --type $3 --path cooperative --coop-tile $t --iters 20 --json
  done; done
done > $R/qgemm_m.jsonl 2> $R/qgemm_m.err
save
for m in llama-3.1-8b-q4_k_m llama-3.2-1b-q4_k_m; do
  python3 bench/synth_gguf.py $m .dev/ggml-vocab-llama-bpe.gguf /tmp/$m.gguf >> $R/synth.log 2>&1
done
for m in llama-3.1-8b-q4_k_m llama-3.2-1b-q4_k_m; do for r in 1 2; do for v in b0 w1024 w8192; do
  echo "{\"model\": \"$m\", \"variant\": \"$v\", \"round\": $r}"
  if [ $v = b0 ]; then x=b0; unset METALLIC_FUSED_WIDTH; else x=b1; export METALLIC_FUSED_WIDTH=${v#w}; fi
  timeout 60 /tmp/$x bench generate --model /tmp/$m.gguf --prompt-tokens 512 --gen-tokens 64 || echo '{"failed": 1}'
done; done; done > $R/fused.jsonl 2> $R/fused.err
unset METALLIC_FUSED_WIDTH
save
echo done
