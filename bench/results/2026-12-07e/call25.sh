#!/bin/sh
# Call 25: b = main with greedy prompts' first tokens read back together after the prefill
# budget (not one synchronous read per prompt) and `bench generate --profile` no longer
# leaving profiling on for the batched timings. 1. serve, metallic default / --exact-batches /
# llama-server, SmolLM2; 2. bench generate --batch 32, default and --exact-batches, no
# profile (call 24's 32-sequence timings were profiled ones). Carry .gl .dev .peer.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/re; mkdir -p $R
# Results go straight under $OUT: what a call cut short wrote still comes back.
save() { :; }
xz -dc .dev/b.xz > /tmp/b; chmod +x /tmp/b
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m"
for m in $M; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer
P=$(dirname $(find /tmp/peer -name llama-server | head -1)); chmod +x $P/llama-server
mkdir -p $R/serve
MODES="default exact" timeout 300 sh bench/serve_on_device.sh /tmp/b $P /tmp/smollm2-135m-instruct-q4_1.gguf $R/serve > $R/serve.out 2>&1
save
for m in $M; do for x in "" --exact-batches; do
  echo "{\"model\": \"$m\", \"batch\": 32, \"flag\": \"$x\"}"
  timeout 90 /tmp/b bench generate --model /tmp/$m.gguf --prompt-tokens 64 --gen-tokens 128 --batch 32 $x || echo '{"failed": 1}'
done; done > $R/batch.jsonl 2> $R/batch.err
save
echo done
