#!/bin/sh
# Call 24: batched steps of more than 8 sequences with their wide products (>= 2048 weight
# rows: MLP gate/up, output) on the cooperative-matrix GEMM, against --exact-batches (every
# product on the one-row GEMV, as before). b = main at this commit (`metallic`), tb = the
# release test binary of crates/metallic-models/tests/batched.rs (xz -6 into .dev/ with the
# .hdr headers; carry .gl .dev .peer).
#   1. tb steps_of_more_than_eight_sequences: how far the tensor-core step's logits stray from
#      solo (printed) and whether greedy tokens flip;
#   2. bench generate --batch 16/32 default and exact, SmolLM2 and Qwen2.5 0.5B, with the
#      kernel split at 32;
#   3. serve: metallic default, metallic --exact-batches, llama-server; warm-up rounds at every
#      stream count; scheduler prefills up to a chunk of tokens over several prompts per step.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/rd; mkdir -p $R
save() { tar czf $OUT/res.tgz -C /tmp rd; }
for b in b tb; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m"
for m in $M; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
METALLIC_MODELS=/tmp timeout 120 /tmp/tb steps_of_more_than_eight_sequences --nocapture > $R/tb.txt 2>&1; echo "rc=$?" >> $R/tb.txt
save
for m in $M; do for n in 16 32; do for x in "" --exact-batches; do
  p=""; if [ $n = 32 ]; then p=--profile; fi
  echo "{\"model\": \"$m\", \"batch\": $n, \"flag\": \"$x\"}"
  timeout 90 /tmp/b bench generate --model /tmp/$m.gguf --prompt-tokens 64 --gen-tokens 64 --batch $n $x $p || echo '{"failed": 1}'
done; done; done > $R/batch.jsonl 2> $R/batch.err
save
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer
P=$(dirname $(find /tmp/peer -name llama-server | head -1)); chmod +x $P/llama-server
mkdir -p $R/serve
MODES="default exact" timeout 300 sh bench/serve_on_device.sh /tmp/b $P /tmp/smollm2-135m-instruct-q4_1.gguf $R/serve > $R/serve.out 2>&1
save
echo done
