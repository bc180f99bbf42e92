#!/bin/sh
# Not run (session 15 had no device time left; the next session's first call): what batched decode steps of more than 8 rows would gain from the
# GEMM on cooperative matrices instead of the one-row GEMV. b3: ab69fde built with the
# experiment switches (switches.py on; METALLIC_BATCH_GEMM=1 gives steps of more than 8 rows
# QMatmul's own choice of kernel). `bench generate --batch N` (tokens of all sequences per
# second, ms per step, per-kernel split) for SmolLM2 and Qwen2.5 at 32 sequences, with and
# without.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/rn; mkdir -p $R
save() { tar czf $OUT/res.tgz -C /tmp rn; }
xz -dc .dev/b3.xz > /tmp/b3; chmod +x /tmp/b3
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m"
for m in $M; do [ -f /tmp/$m.gguf ] || python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
for m in $M; do for r in 1; do for b in 32; do for v in gemv gemm; do
  echo "{\"model\": \"$m\", \"batch\": $b, \"variant\": \"$v\", \"round\": $r}"
  if [ $v = gemm ]; then export METALLIC_BATCH_GEMM=1; else unset METALLIC_BATCH_GEMM; fi
  timeout 60 /tmp/b3 bench generate --model /tmp/$m.gguf --prompt-tokens 64 --gen-tokens 64 --batch $b --profile || echo '{"failed": 1}'
done; done; done; done > $R/batch.jsonl 2> $R/batch.err
save
echo done
