#!/bin/sh
# Device call 17 (session 14): the quantized GEMM on cooperative matrices (tensor cores).
# Binaries (xz -6) in .dev/: bx = 1e93e24 (before the fused norms); bc = this session's tree with,
# for the A/B only, an arm in QMatmul::gemv_kernel taking the word GEMV for the blocks of 32
# when METALLIC_WORD is set and the split-K passes instead of the one-pass attention kernel when
# METALLIC_NO_SHORT is set (decode.rs); tq, ts = the release test binaries of
# crates/metallic/tests/qmatmul.rs and sdpa_decode.rs. Variants: bc (coop GEMM, one-pass
# attention), bcf (bc with METALLIC_DISABLE=coopmat: the f32 GEMM), bcn (bc with
# METALLIC_NO_SHORT=1), bcw (bc with METALLIC_WORD=1). Also .gl, .peer/peer.tar.xz, the .hdr headers (bench/README.md).
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/r17; mkdir -p $R
save() { tar czf $OUT/res.tgz -C /tmp r17; }
for b in bx bc tq ts; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer; P=/tmp/peer/bin; chmod +x $P/llama-server
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/bc bench copy --mb 1024 --json > $R/copy.json 2>&1
/tmp/tq cooperative auto_path --nocapture > $R/tq.txt 2>&1; echo "rc=$?" >> $R/tq.txt
/tmp/ts --nocapture > $R/ts.txt 2>&1; echo "rc=$?" >> $R/ts.txt
save
# The products of a 512-token prefill: the f32 GEMM against the cooperative one.
for s in "1536 576 q4-1" "576 1536 q4-1" "4864 896 q5-0" "896 4864 q4-k" "14336 4096 q4-k" "4096 14336 q6-k" "4096 4096 q4-k" "6144 4096 q4-k"; do
  set -- $s
  for p in gemm cooperative; do timeout 60 /tmp/bc bench qmatmul --m 512 --n $1 --k $2 --type $3 --path $p --iters 20 --json; done
done > $R/qgemm.jsonl 2> $R/qgemm.err
save
run() { # variant model args...
  v=$1; m=$2; shift 2
  case $v in bcf) export METALLIC_DISABLE=coopmat;; bcw) export METALLIC_WORD=1;; bcn) export METALLIC_NO_SHORT=1;; esac
  b=$v; [ $v = bx ] || b=bc
  timeout 90 /tmp/$b bench generate --model /tmp/$m.gguf "$@" || echo '{"failed": 1}'
  unset METALLIC_DISABLE METALLIC_WORD METALLIC_NO_SHORT
}
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m gemma3-270m-q4_k_m"
for m in $M; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
for m in $M; do for r in 1 2; do for v in bx bc bcf bcn bcw; do
  echo "{\"model\": \"$m\", \"bin\": \"$v\", \"round\": $r}"
  run $v $m --prompt-tokens 512 --gen-tokens 128
done; done; done > $R/ab.jsonl 2> $R/ab.err
save
for m in $M; do run bc $m --prompt-tokens 512 --gen-tokens 128 --profile > $R/$m.bc.profile.json 2>> $R/ab.err; done
run bcf qwen2.5-coder-0.5b-instruct-q4_k_m --prompt-tokens 512 --gen-tokens 128 --profile > $R/qwen.bcf.profile.json 2>> $R/ab.err
for n in 1 8 32; do run bc smollm2-135m-instruct-q4_1 --prompt-tokens 64 --gen-tokens 64 --batch $n --profile > $R/batch$n.json 2>> $R/ab.err; done
for n in 8 32; do run bcw smollm2-135m-instruct-q4_1 --prompt-tokens 64 --gen-tokens 64 --batch $n --profile > $R/batch$n.word.json 2>> $R/ab.err; done
save
timeout 240 sh bench/llm_scale_on_device.sh /tmp/bc $P $R .dev/ggml-vocab-llama-bpe.gguf /none llama-3.2-1b-q4_k_m > $R/scale1b.log 2>&1
save
echo done
