#!/bin/sh
# Call 31 (prepared in session 19, not run: the session's device time ran out). b = main;
# tq = main's tests/qmatmul.rs (`cargo test --release --no-run -p metallic --test qmatmul`).
# 1. tq's cooperative test on the GPU: the split of K (QMatmul::coop_splits, 1 / 3 / 16 / the
# tiles' choice) within the f16 bound and each row's bits independent of the other rows;
# 2. 20-token prompts of SmolLM2 and Qwen2.5 0.5B, profiled and not, with and without
# `--coop-split-k` (products of few tiles split K: 60% of such a prompt's ~5.5 ms was the
# cooperative GEMM at 20 rows, call 29); 3. the products alone at 20 rows (`bench qmatmul
# --coop-splits 0` against none). Carry .gl .dev .peer. Results straight under $OUT.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
for x in b tq; do xz -dc .dev/$x.xz > /tmp/$x; chmod +x /tmp/$x; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $OUT/gpu.txt
M=/tmp/smollm2-135m-instruct-q4_1.gguf; Q=/tmp/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
python3 bench/regrow_gguf.py grow .dev/smollm2-135m-instruct-q4_1.hdr $M > /dev/null 2>> $OUT/err
python3 bench/regrow_gguf.py grow .dev/qwen2.5-coder-0.5b-instruct-q4_k_m.hdr $Q > /dev/null 2>> $OUT/err
# 1.
timeout 60 /tmp/tq cooperative --nocapture > $OUT/tq.txt 2>&1; echo "tq rc $?" >> $OUT/tq.txt
# 2.
for m in $M $Q; do for x in "" --coop-split-k; do
  timeout 60 /tmp/b bench generate --model $m --prompt-tokens 20 --gen-tokens 16 --profile $x
  timeout 60 /tmp/b bench generate --model $m --prompt-tokens 20 --gen-tokens 32 $x
done; done > $OUT/prefill.jsonl 2>> $OUT/err
# 3.
for nk in 576,1536 576,576 3072,576 960,576 896,4864; do for s in "" "--coop-splits 0"; do
  timeout 30 /tmp/b bench qmatmul --json --type q4-k --m 20 --n ${nk%,*} --k ${nk#*,} --path cooperative $s || echo '{"failed": "'$nk $s'"}'
done; done > $OUT/qmatmul.jsonl 2>> $OUT/err
echo done31
