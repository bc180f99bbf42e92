#!/bin/sh
# Device call 20 (session 15): the cooperative quantized GEMM rebuilt (gemm_coop.wgsl: trusted,
# x as vec4, tiles of 64 x 64 to 128 x 128 with 4 x 2 accumulators a subgroup) against the
# previous one. b0: main at 16892e3 (64 x 64 tiles, 2 x 2 accumulators, runtime checks, x read
# element by element); b1: this tree built with the experiment switches (switches.py on:
# METALLIC_COOP_TILE, METALLIC_FUSED_WIDTH); tq: the release test binary of
# crates/metallic/tests/qmatmul.rs. Binaries (xz -6) in .dev/; also .gl, .peer/peer.tar.xz, the
# .hdr headers (bench/README.md).
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/r20; mkdir -p $R
save() { tar czf $OUT/res.tgz -C /tmp r20; }
for b in b0 b1 tq; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/b1 bench copy --mb 1024 --json > $R/copy.json 2>&1
timeout 120 /tmp/tq cooperative errors auto_path --nocapture > $R/tq.txt 2>&1; echo "rc=$?" >> $R/tq.txt
save
# Per shape: the previous kernel (b0), then each tile and the automatic choice (b1); x f32 and f16.
for s in "576 576 q4-1" "1536 576 q4-1" "896 896 q4-k" "128 896 q4-k" "4864 896 q4-k" "896 4864 q6-k" "4096 4096 q4-k" "14336 4096 q4-k"; do set -- $s
  for d in f32 f16; do
    timeout 30 /tmp/b0 bench qmatmul --m 512 --n $1 --k $2 --type $3 --path cooperative --dtype $d --iters 20 --json
    for t in 64x64 64x128 128x64 128x128; do
      timeout 30 /tmp/b1 bench qmatmul --m 512 --n $1 --k $2 --type $3 --path cooperative --coop-tile $t --dtype $d --iters 20 --json
    done
    timeout 30 /tmp/b1 bench qmatmul --m 512 --n $1 --k $2 --type $3 --path cooperative --dtype $d --iters 20 --json
  done
done > $R/qgemm.jsonl 2> $R/qgemm.err
save
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m gemma3-270m-q4_k_m"
for m in $M; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
for m in $M; do for r in 1 2; do for b in b0 b1 b1t64; do
  echo "{\"model\": \"$m\", \"bin\": \"$b\", \"round\": $r}"
  if [ $b = b1t64 ]; then x=b1; export METALLIC_COOP_TILE=64x64; else x=$b; unset METALLIC_COOP_TILE; fi
  timeout 90 /tmp/$x bench generate --model /tmp/$m.gguf --prompt-tokens 512 --gen-tokens 64 || echo '{"failed": 1}'
done; done; done > $R/ab.jsonl 2> $R/ab.err
unset METALLIC_COOP_TILE
/tmp/b1 bench generate --model /tmp/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --prompt-tokens 512 --gen-tokens 16 --profile > $R/qwen.profile.json 2>&1
save
echo done
