#!/bin/sh
# Call 23: where a decode step's host time goes (recording vs submitting), solo and batched;
# the batched step's products on every GEMV configuration and the cooperative GEMM; serve vs
# llama-server with a warm-up round for both. bc = main + the submit-time
# counters (decode_submit_ms_per_token, batch_record/submit_ms_per_step) and next/flush-every.patch
# applied (the METALLIC_FLUSH_EVERY experiment switch).
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/rc; mkdir -p $R
save() { tar czf $OUT/res.tgz -C /tmp rc; }
xz -dc .dev/bc.xz > /tmp/bc; chmod +x /tmp/bc
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m"
for m in $M; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
for m in $M; do for n in 1 32; do
  echo "{\"model\": \"$m\", \"batch\": $n}"
  timeout 60 /tmp/bc bench generate --model /tmp/$m.gguf --prompt-tokens 64 --gen-tokens 128 --batch $n || echo '{"failed": 1}'
done; done > $R/host.jsonl 2> $R/host.err
save
# Submissions per token: FLUSH_EVERY (128 ops, ~3 submits a SmolLM2 token) against fewer.
for m in $M; do for f in 128 512 100000; do for r in 1 2; do
  echo "{\"model\": \"$m\", \"flush_every\": $f, \"round\": $r}"
  METALLIC_FLUSH_EVERY=$f timeout 60 /tmp/bc bench generate --model /tmp/$m.gguf --prompt-tokens 64 --gen-tokens 128 --batch 1 || echo '{"failed": 1}'
done; done; done > $R/flush.jsonl 2> $R/flush.err
save
# The 32-row products of a batched SmolLM2 / Qwen2.5 step on the GEMV's configurations and on
# the cooperative GEMM: what the 8-row GEMV is short of at 32 rows (~1 TFLOP/s in call 22).
for s in "q4-1 576 576" "q4-1 3072 576" "q4-1 576 1536" "q4-1 49152 576" "q4-k 9728 896" "q6-k 896 4864"; do
  set -- $s
  for m in 8 32; do
    timeout 30 /tmp/bc bench qmatmul --json --type $1 --m $m --n $2 --k $3 --path gemv
    for r in 1 2 4 8; do for wg in 64 256; do
      timeout 30 /tmp/bc bench qmatmul --json --type $1 --m $m --n $2 --k $3 --path gemv --gemv-rows $r --gemv-wg $wg
    done; done
    timeout 30 /tmp/bc bench qmatmul --json --type $1 --m $m --n $2 --k $3 --path cooperative
  done
done > $R/products.jsonl 2> $R/products.err
save
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer
P=$(dirname $(find /tmp/peer -name llama-server | head -1)); chmod +x $P/llama-server
mkdir -p $R/serve
timeout 240 sh bench/serve_on_device.sh /tmp/bc $P /tmp/smollm2-135m-instruct-q4_1.gguf $R/serve > $R/serve.out 2>&1
save
echo done
