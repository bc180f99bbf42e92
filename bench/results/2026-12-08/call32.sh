#!/bin/sh
# Call 32 (prepared in session 20, which was lent no GPU; it replaces call 31). Binaries, each
# `xz -6` under .dev/: b0 = a1526d0 (main at session 20's start), b = main (prompts of a burst
# in one pass, weights repacked on threads into the staging memory, scheduler time in
# /metrics, hidden `serve --coop-split-k` and `--pipeline-depth`); tq = main's
# tests/qmatmul.rs (`cargo test --release --no-run -p metallic --test qmatmul`). Carry .gl
# .dev .peer. Results under /tmp/o, tarred to $OUT/all.tgz after each part (a call cut short
# still returns what it did).
# 1. serve SmolLM2: b against llama-server at 1, 8, 32 streams; then b0, b and b with
#    --coop-split-k alternating at 32 streams, twice (TTFT p50/p99);
# 2. one stream: b serve with one and with two pipelined steps in flight (--pipeline-depth),
#    five rounds each with /metrics around them (scheduler busy / waiting per token) and a
#    32-stream round; bench generate solo and --batch 1;
# 3. cold start, Gemma 3 270M: b and b0 (bench/cold_start_on_device.sh each);
# 4. tq's cooperative test (K split 1 / 3 / 16 / the tiles' choice) and the products alone at
#    20 rows with and without --coop-splits 0.
set -u
O=/tmp/o; mkdir -p $O
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
for x in b0 b tq; do xz -dc .dev/$x.xz > /tmp/$x; chmod +x /tmp/$x; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $O/gpu.txt
M=/tmp/smollm2-135m-instruct-q4_1.gguf
python3 bench/regrow_gguf.py grow .dev/smollm2-135m-instruct-q4_1.hdr $M > /dev/null 2>> $O/err
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer
P=$(dirname $(find /tmp/peer -name llama-server | head -1)); chmod +x $P/llama-server
fin() { (cd $O && tar czf /tmp/all.tgz . && cp /tmp/all.tgz $OUT/all.tgz); }
get() { python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$1$2', timeout=5).read().decode())"; }
up() { for _ in $(seq 600); do get $1 /health >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1; }
# 1.
R=$O/serve; mkdir -p $R
timeout 150 sh bench/serve_on_device.sh /tmp/b $P $M $R > $R/out.txt 2>&1
fin
for round in 1 2; do for v in b0 b b-split; do
  x=${v%-split}; flag=""; [ $v = b-split ] && flag=--coop-split-k
  /tmp/$x serve --model $M --port 8093 --parallel 32 --ctx-size 1024 $flag > $R/ab-$v-$round.log 2>&1 &
  S=$!; up 8093
  for n in 1 8 32; do python3 bench/serve_load.py http://127.0.0.1:8093 $n 8 --label warm-up > /dev/null; done
  timeout 30 python3 bench/serve_load.py http://127.0.0.1:8093 32 128 --label $v-32
  get 8093 /metrics > $R/metrics-$v-$round.txt
  kill $S; wait $S
done; done > $R/ab.jsonl 2> $R/ab.err
fin
# 2.
R=$O/one; mkdir -p $R
{
for depth in 1 2; do
  /tmp/b serve --model $M --port 8092 --parallel 32 --ctx-size 1024 --pipeline-depth $depth > $R/serve-$depth.log 2>&1 &
  S=$!; up 8092
  for n in 1 8 32; do python3 bench/serve_load.py http://127.0.0.1:8092 $n 8 --label warm-up > /dev/null; done
  get 8092 /metrics > $R/metrics-before-$depth.txt
  for i in 1 2 3 4 5; do timeout 20 python3 bench/serve_load.py http://127.0.0.1:8092 1 128 --label one-depth-$depth; done
  timeout 30 python3 bench/serve_load.py http://127.0.0.1:8092 32 128 --label depth-$depth-32
  get 8092 /metrics > $R/metrics-after-$depth.txt
  kill $S; wait $S
done
/tmp/b bench generate --model $M --prompt-tokens 32 --gen-tokens 128 --batch 1
/tmp/b bench generate --model $M --prompt-tokens 32 --gen-tokens 128
} > $R/one.jsonl 2> $R/one.err
fin
# 3.
python3 bench/regrow_gguf.py grow .dev/gemma3-270m-q4_k_m.hdr /tmp/gemma.gguf > /dev/null 2>> $O/err
for x in b b0; do
  R=$O/cold-$x; mkdir -p $R
  timeout 100 sh bench/cold_start_on_device.sh /tmp/$x $P /tmp/gemma.gguf $R > $R/out.txt 2>&1
done
fin
# 4.
timeout 60 /tmp/tq cooperative --nocapture > $O/tq.txt 2>&1; echo "tq rc $?" >> $O/tq.txt
for nk in 576,1536 576,576 3072,576 960,576 896,4864; do for s in "" "--coop-splits 0"; do
  timeout 30 /tmp/b bench qmatmul --json --type q4-k --m 20 --n ${nk%,*} --k ${nk#*,} --path cooperative $s || echo '{"failed": "'$nk $s'"}'
done; done > $O/qmatmul.jsonl 2>> $O/err
fin
echo done32
