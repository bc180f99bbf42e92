#!/bin/sh
# Call 27 (session 18): the experimental integer-dot GEMV (x rounded to 8-bit blocks of 32,
# dot4I8Packed; `--path gemv-q8`, its quantize dispatch included) against the word GEMV at 8B
# shapes, then solo decode with it (`bench generate --q8-gemv`) against the default on
# synthetic Llama-3.2-1B and Llama-3.1-8B Q4_K_M, two rounds alternating, and llama.cpp's
# Vulkan llama-server on the same files (tg128 after 16 tokens). Carry .gl .dev .peer.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/q8; mkdir -p $R
[ -x /tmp/b ] || { xz -dc .dev/b.xz > /tmp/b; chmod +x /tmp/b; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/b bench copy --mb 1024 --json > $R/copy.json 2>> $R/err
for ty in q4-k q6-k q8-0; do for nk in 28672,4096 4096,14336 4096,4096 128256,4096; do
  n=${nk%,*}; k=${nk#*,}
  for p in gemv gemv-q8; do timeout 60 /tmp/b bench qmatmul --json --type $ty --m 1 --n $n --k $k --path $p || echo '{"failed": "'$ty $n $k $p'"}'; done
done; done > $R/gemv.jsonl 2>> $R/err
mkdir -p /tmp/peer && [ -d /tmp/peer/bin ] || tar xJf .peer/peer.tar.xz -C /tmp/peer
P=$(dirname $(find /tmp/peer -name llama-server | head -1)); chmod +x $P/llama-server
for m in llama-3.2-1b-q4_k_m llama-3.1-8b-q4_k_m; do
  python3 bench/synth_gguf.py $m .dev/ggml-vocab-llama-bpe.gguf /tmp/$m.gguf > /dev/null 2>> $R/err
  for round in 1 2; do for x in "" --q8-gemv; do
    timeout 120 /tmp/b bench generate --model /tmp/$m.gguf --prompt-tokens 16 --gen-tokens 128 $x || echo '{"failed": "'$m $x'"}'
  done; done > $R/$m.jsonl 2>> $R/err
  LD_LIBRARY_PATH=$P $P/llama-server -m /tmp/$m.gguf -ngl 99 -c 8192 --parallel 1 --port 8088 > $R/$m.llama.log 2>&1 &
  S=$!
  timeout 150 python3 bench/gemma_peer.py http://127.0.0.1:8088 16 128 16 > $R/$m.llama.json 2>> $R/err
  kill $S; wait $S 2>/dev/null
  rm -f /tmp/$m.gguf
done
echo done27
