#!/bin/sh
# Device call 10 (session 12, last of the budget): split-K attention A/B only — b7 scalar K/V loads, b8 vec4 loads,
# b9 + spread softmax/accumulation (f32 cache), b9 over an f16 cache; decode shapes of Llama 8B, Gemma 3, SmolLM2.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/r; mkdir -p $R
for b in b7 b8 b9; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/b9 bench copy --mb 1024 --json > $R/copy.json 2>&1
for shape in "32 8 128" "4 1 256" "9 3 64"; do
  set -- $shape
  for sk in 4096 64; do
    for v in "b7 " "b8 " "b9 " "b9 --kv-f16"; do
      bin=${v%% *}; flag=${v#* }
      echo "{\"bin\": \"$bin\", \"flag\": \"$flag\"}"
      timeout 20 /tmp/$bin bench sdpa --batch 1 --heads $1 --kv-heads $2 --seq-q 1 --seq-k $sk --dim $3 --impl split-k --json $flag || echo '{"failed": 1}'
    done
  done
done > $R/sdpa.jsonl 2> $R/sdpa.err
echo done
