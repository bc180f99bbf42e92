#!/bin/sh
# Device call 16 (session 13): decode A/B bx (1e93e24) / bg (dadf9a8: fused norms, final norm its own dispatch) / bh (bg + METALLIC_WORD=1: the word GEMV for Q8_0, Q4_0..Q5_1),
# batched steps, then 1B and 8B Q4_K_M (bg) vs llama.cpp.
# Binaries (xz -6) in .dev/: bx = 1e93e24 built as is; bg = dadf9a8 or later; bh = bg with, in
# QMatmul::gemv_kernel, an arm taking the word GEMV for the 32-weight blocks when METALLIC_WORD is set:
#   (None, None, Some((allowed, 32))) if std::env::var_os("METALLIC_WORD").is_some() => allowed.first().copied(),
# Also .gl (the loader debs), .peer/peer.tar.xz, the .hdr headers and ggml-vocab-llama-bpe.gguf (bench/README.md).
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/r16; mkdir -p $R
save() { tar czf $OUT/res.tgz -C /tmp r16; }
for b in bx bg bh; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer; P=/tmp/peer/bin; chmod +x $P/llama-server
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/bg bench copy --mb 1024 --json > $R/copy.json 2>&1
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m"
for m in $M gemma3-270m-q4_k_m; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
for m in $M gemma3-270m-q4_k_m; do for r in 1 2; do for b in bx bg bh; do
  echo "{\"model\": \"$m\", \"bin\": \"$b\", \"round\": $r}"
  if [ $b = bh ]; then export METALLIC_WORD=1; else unset METALLIC_WORD; fi
  timeout 60 /tmp/$b bench generate --model /tmp/$m.gguf --prompt-tokens 512 --gen-tokens 128 || echo '{"failed": 1}'
done; done; done > $R/ab.jsonl 2> $R/ab.err
unset METALLIC_WORD
save
timeout 60 /tmp/bg bench generate --model /tmp/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --prompt-tokens 512 --gen-tokens 128 --profile > $R/qwen.bg.profile.json 2>> $R/ab.err
for n in 1 8 32; do timeout 60 /tmp/bg bench generate --model /tmp/smollm2-135m-instruct-q4_1.gguf --prompt-tokens 64 --gen-tokens 64 --batch $n --profile > $R/batch$n.json 2>> $R/ab.err; done
for n in 8 32; do METALLIC_WORD=1 timeout 60 /tmp/bh bench generate --model /tmp/smollm2-135m-instruct-q4_1.gguf --prompt-tokens 64 --gen-tokens 64 --batch $n --profile > $R/batch$n.word.json 2>> $R/ab.err; done
save
sh bench/llm_scale_on_device.sh /tmp/bg $P $R .dev/ggml-vocab-llama-bpe.gguf /none llama-3.2-1b-q4_k_m > $R/scale1b.log 2>&1
save
sh bench/llm_scale_on_device.sh /tmp/bg $P $R .dev/ggml-vocab-llama-bpe.gguf /none llama-3.1-8b-q4_k_m > $R/scale8b.log 2>&1
save
echo done
