#!/bin/sh
# Call 29 (session 19). b = 011d1aa (main at the session's start), b2 = b + prompts run in one
# set of reused row buffers (a burst of 32 prompts built ~8 260 bind groups and cleared the
# cache's 4 096 twice, the decode step's with them) and, while no stream decodes, eight prompt
# chunks between steps instead of one. 1. serve: b2 against llama-server at 1, 8,
# 32 streams (bench/serve_on_device.sh), then b and b2 alternating at 32 streams; 2. the
# one-stream gap: b2 serve, five one-stream rounds with /metrics around them, bench generate
# solo and --batch 1; 3. cold start (call28); 4. the integer-dot GEMV at 8B shapes (call27's
# kernel part). Carry .gl .dev .peer. Results straight under $OUT.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
for x in b b2; do xz -dc .dev/$x.xz > /tmp/$x; chmod +x /tmp/$x; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $OUT/gpu.txt
M=/tmp/smollm2-135m-instruct-q4_1.gguf
python3 bench/regrow_gguf.py grow .dev/smollm2-135m-instruct-q4_1.hdr $M > /dev/null 2>> $OUT/err
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer
P=$(dirname $(find /tmp/peer -name llama-server | head -1)); chmod +x $P/llama-server
# 1.
R=$OUT/serve; mkdir -p $R
timeout 200 sh bench/serve_on_device.sh /tmp/b2 $P $M $R > $R/out.txt 2>&1
get() { python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$1$2', timeout=5).read().decode())"; }
up() { for _ in $(seq 600); do get $1 /health >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1; }
{
for round in 1 2; do for x in b b2; do
  /tmp/$x serve --model $M --port 8093 --parallel 32 --ctx-size 1024 > $R/ab-$x-$round.log 2>&1 &
  S=$!; up 8093
  for n in 1 8 32; do python3 bench/serve_load.py http://127.0.0.1:8093 $n 8 --label warm-up > /dev/null; done
  timeout 30 python3 bench/serve_load.py http://127.0.0.1:8093 32 128 --label $x-32
  kill $S; wait $S
done; done
} > $R/ab.jsonl 2> $R/ab.err
# 2.
R=$OUT/one; mkdir -p $R
{
/tmp/b2 bench generate --model $M --prompt-tokens 32 --gen-tokens 128
/tmp/b2 serve --model $M --port 8092 --parallel 32 --ctx-size 1024 > $R/serve.log 2>&1 &
S=$!; up 8092
for n in 1 8 32; do python3 bench/serve_load.py http://127.0.0.1:8092 $n 8 --label warm-up > /dev/null; done
get 8092 /metrics > $R/metrics-before.txt
for i in 1 2 3 4 5; do timeout 20 python3 bench/serve_load.py http://127.0.0.1:8092 1 128 --label one; done
get 8092 /metrics > $R/metrics-after.txt
kill $S; wait $S
/tmp/b2 bench generate --model $M --prompt-tokens 32 --gen-tokens 128 --batch 1
/tmp/b2 bench generate --model $M --prompt-tokens 32 --gen-tokens 128
} > $R/one.jsonl 2> $R/one.err
# 3.
R=$OUT/cold; mkdir -p $R
python3 bench/regrow_gguf.py grow .dev/gemma3-270m-q4_k_m.hdr /tmp/gemma.gguf > /dev/null 2>> $R/err
timeout 200 sh bench/cold_start_on_device.sh /tmp/b2 $P /tmp/gemma.gguf $R > $R/out.txt 2>&1
# 4.
R=$OUT/q8; mkdir -p $R
/tmp/b2 bench copy --mb 1024 --json > $R/copy.json 2>> $R/err
for ty in q4-k q6-k q8-0; do for nk in 28672,4096 4096,14336 128256,4096; do
  n=${nk%,*}; k=${nk#*,}
  for p in gemv gemv-q8; do timeout 40 /tmp/b2 bench qmatmul --json --type $ty --m 1 --n $n --k $k --path $p || echo '{"failed": "'$ty $n $k $p'"}'; done
done; done > $R/gemv.jsonl 2>> $R/err
echo done29
