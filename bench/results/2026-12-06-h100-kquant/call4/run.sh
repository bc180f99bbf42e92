#!/bin/sh
# Device call 4: committed a3a7f91 (A) against B: 8 lanes and 2 rows up to 2048 rows, Q5_K in the K-quant GEMV; GEMV table, 8B/1B/Qwen decode A/B with llama.cpp.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/r; mkdir -p $R
save() { tar czf $OUT/res.tgz -C $OUT r; }
xz -dc .dev/b2.xz > /tmp/A; xz -dc .dev/b4.xz > /tmp/B; chmod +x /tmp/A /tmp/B
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer
P=/tmp/peer/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/B bench copy --mb 1024 --json > $R/copy.json
for c in "q4-k 28672 4096" "q5-k 28672 4096" "q5-k 4096 14336" "q4-k 4096 4096" "q6-k 1024 4096" "q4-k 1024 4096" "q4-k 2048 2048" "q6-k 128256 4096"; do
  for v in "A" "B"; do
    set -- $v; bin=/tmp/$1; shift
    echo "{\"v\": \"$v\", \"case\": \"$c\"}"
    timeout 60 $bin bench qmatmul --type $(echo $c | cut -d' ' -f1) --n $(echo $c | cut -d' ' -f2) --k $(echo $c | cut -d' ' -f3) --path gemv --json "$@" || echo '{"failed": 1}'
  done
done > $R/gemv.jsonl 2> $R/gemv.err
save
for name in llama-3.1-8b-q4_k_m llama-3.2-1b-q4_k_m; do
  f=/tmp/$name.gguf
  python3 bench/synth_gguf.py $name .dev/ggml-vocab-llama-bpe.gguf $f > /dev/null 2>> $R/synth.err
  for round in 1 2; do for s in A B; do
    echo "{\"bin\": \"$s\"}"; timeout 120 /tmp/$s bench generate --model $f --prompt-tokens 512 --gen-tokens 128 || echo '{"failed": 1}'
  done; done > $R/$name.jsonl 2>> $R/gen.err
  LD_LIBRARY_PATH=$P $P/llama-server -m $f -ngl 99 -c 8192 --parallel 1 --port 8088 > /tmp/ls.log 2>&1 &
  srv=$!
  timeout 200 python3 bench/gemma_peer.py http://127.0.0.1:8088 512 128 16 > $R/$name.peer 2>&1
  kill $srv; wait $srv 2>/dev/null
  rm -f $f
  save
done
f=/tmp/q.gguf; python3 bench/regrow_gguf.py grow .dev/qwen2.5-coder-0.5b-instruct-q4_k_m.hdr $f > /dev/null
for round in 1 2; do for s in A B; do
  echo "{\"bin\": \"$s\"}"; timeout 120 /tmp/$s bench generate --model $f --prompt-tokens 512 --gen-tokens 128 || echo '{"failed": 1}'
done; done > $R/qwen.jsonl 2>> $R/gen.err
save
echo done
