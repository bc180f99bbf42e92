#!/bin/sh
# Device call 18 (session 14): the session's tree as committed (bd: the cooperative quantized GEMM,
# the one-pass attention for short contexts, the word GEMV for the blocks of 32) against bx
# (1e93e24) and bkn (bd built with an experiment switch, METALLIC_NO_SHORT set: the split-K
# passes instead of the one-pass attention kernel), then each small model and serving against
# llama.cpp's Vulkan llama-server, and the synthetic Llama-3.1-8B Q4_K_M. ts, tq: the release
# test binaries of crates/metallic/tests/sdpa_decode.rs and qmatmul.rs. Binaries (xz -6) in .dev/; also .gl, .peer/peer.tar.xz, the .hdr
# headers and ggml-vocab-llama-bpe.gguf (bench/README.md).
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/r18; mkdir -p $R
save() { tar czf $OUT/res.tgz -C /tmp r18; }
for b in bx bd bk ts tq; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer; P=/tmp/peer/bin; chmod +x $P/llama-server
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/bd bench copy --mb 1024 --json > $R/copy.json 2>&1
/tmp/ts --nocapture > $R/ts.txt 2>&1; echo "rc=$?" >> $R/ts.txt
/tmp/tq cooperative word_gemv auto_path fused --nocapture > $R/tq.txt 2>&1; echo "rc=$?" >> $R/tq.txt
# What a K-step of the cooperative quantized GEMM costs: one shape, weights of every kind (f16:
# no decoding), and the dense f16 GEMM (Auto: cooperative) of the same shape.
for s in "576 576" "1536 576" "4096 4096"; do set -- $s
  for t in f16 q8-0 q4-1 q4-k q6-k; do timeout 60 /tmp/bd bench qmatmul --m 512 --n $1 --k $2 --type $t --path cooperative --iters 20 --json; done
  timeout 60 /tmp/bd bench gemm --m 512 --n $1 --k $2 --transpose-b --dtype f16 --iters 20 --json
done > $R/qgemm.jsonl 2> $R/qgemm.err
save
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m gemma3-270m-q4_k_m"
for m in $M; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
for m in $M; do for r in 1 2; do for b in bx bd bkn; do
  echo "{\"model\": \"$m\", \"bin\": \"$b\", \"round\": $r}"
  if [ $b = bkn ]; then x=bk; export METALLIC_NO_SHORT=1; else x=$b; unset METALLIC_NO_SHORT; fi
  timeout 90 /tmp/$x bench generate --model /tmp/$m.gguf --prompt-tokens 512 --gen-tokens 128 || echo '{"failed": 1}'
done; done; done > $R/ab.jsonl 2> $R/ab.err
unset METALLIC_NO_SHORT
save
timeout 200 sh bench/llm_on_device.sh /tmp/bd $P $R /tmp/smollm2-135m-instruct-q4_1.gguf /tmp/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf /tmp/gemma3-270m-q4_k_m.gguf > $R/peer.log 2>&1
save
timeout 200 sh bench/llm_scale_on_device.sh /tmp/bd $P $R .dev/ggml-vocab-llama-bpe.gguf /none llama-3.1-8b-q4_k_m > $R/scale8b.log 2>&1
save
mkdir -p $R/serve; timeout 150 sh bench/serve_on_device.sh /tmp/bd $P /tmp/smollm2-135m-instruct-q4_1.gguf $R/serve > $R/serve.log 2>&1
save
echo done
