#!/bin/sh
# Device call 5: where the K-quant GEMV's time goes (diagnostic build: DIAG 1 constant scales, 2 no quant conversion, 3 no x reads, 4 weight reads only), dispatch floors of small kernels, 8B decode at context 4096 with llama.cpp.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/r; mkdir -p $R
save() { tar czf $OUT/res.tgz -C $OUT r; }
xz -dc .dev/diag.xz > /tmp/D; xz -dc .dev/b4.xz > /tmp/B; chmod +x /tmp/D /tmp/B
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer
P=/tmp/peer/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/B bench copy --mb 1024 --json > $R/copy.json
for c in "28672 4096" "4096 14336" "4096 4096"; do
  for round in 1 2; do for d in 0 1 2 3 4; do
    echo "{\"diag\": $d, \"case\": \"$c\"}"
    DIAG=$d timeout 60 /tmp/D bench qmatmul --type q4-k --n ${c% *} --k ${c#* } --path gemv --json || echo '{"failed": 1}'
  done; done
done > $R/diag.jsonl 2> $R/diag.err
{
/tmp/B bench layernorm --rms --rows 1 --cols 4096 --json
/tmp/B bench layernorm --rms --rows 1 --cols 64 --json
/tmp/B bench gemv --n 64 --k 256 --json
/tmp/B bench qmatmul --type q4-k --n 4 --k 256 --path gemv --json
/tmp/B bench sdpa --heads 32 --kv-heads 8 --seq-q 1 --seq-k 640 --dim 128 --json
/tmp/B bench sdpa --heads 32 --kv-heads 8 --seq-q 1 --seq-k 4096 --dim 128 --json
/tmp/B bench sdpa --heads 32 --kv-heads 8 --seq-q 1 --seq-k 64 --dim 128 --json
} > $R/floors.jsonl 2> $R/floors.err
save
name=llama-3.1-8b-q4_k_m; f=/tmp/$name.gguf
python3 bench/synth_gguf.py $name .dev/ggml-vocab-llama-bpe.gguf $f > /dev/null 2>> $R/synth.err
timeout 200 /tmp/B bench generate --model $f --prompt-tokens 16 --gen-tokens 128 --decode-prompt-tokens 4096 > $R/ctx4096.json 2>> $R/gen.err
timeout 120 /tmp/B bench generate --model $f --prompt-tokens 16 --gen-tokens 128 > $R/ctx16.json 2>> $R/gen.err
LD_LIBRARY_PATH=$P $P/llama-server -m $f -ngl 99 -c 8192 --parallel 1 --port 8088 > /tmp/ls.log 2>&1 &
srv=$!
timeout 200 python3 bench/gemma_peer.py http://127.0.0.1:8088 16 128 4096 > $R/peer4096.json 2>&1
timeout 200 python3 bench/gemma_peer.py http://127.0.0.1:8088 16 128 16 > $R/peer16.json 2>&1
kill $srv; wait $srv 2>/dev/null
save
echo done
