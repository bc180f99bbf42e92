#!/bin/sh
# Device call 11 (session 12): split-K A/B — b9 (spread softmax) against b10 (+ merge pass spread over column blocks and chunk groups), f32 and f16 caches; Gemma 3 decode at context 4096.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/r; mkdir -p $R
for b in b9 b10; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/b10 bench copy --mb 1024 --json > $R/copy.json 2>&1
for shape in "32 8 128" "4 1 256" "9 3 64" "14 2 64"; do
  set -- $shape
  for sk in 4096 512 64; do
    for v in "b9 " "b10 " "b9 --kv-f16" "b10 --kv-f16"; do
      bin=${v%% *}; flag=${v#* }
      echo "{\"bin\": \"$bin\", \"flag\": \"$flag\"}"
      timeout 20 /tmp/$bin bench sdpa --batch 1 --heads $1 --kv-heads $2 --seq-q 1 --seq-k $sk --dim $3 --impl split-k --json $flag || echo '{"failed": 1}'
    done
  done
done > $R/sdpa.jsonl 2> $R/sdpa.err

python3 bench/regrow_gguf.py grow .dev/gemma3-270m-q4_k_m.hdr /tmp/g.gguf > /dev/null 2>> $R/gen.err
for b in b9 b10; do echo "{\"bin\": \"$b\"}"; timeout 40 /tmp/$b bench generate --model /tmp/g.gguf --prompt-tokens 16 --decode-prompt-tokens 4096 --gen-tokens 64 || echo '{"failed": 1}'; done > $R/gemma4096.jsonl 2>> $R/gen.err
echo done
