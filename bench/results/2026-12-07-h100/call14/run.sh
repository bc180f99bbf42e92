#!/bin/sh
# Device call 14 (session 13): small-model decode A/B — bx (1e93e24 + METALLIC_SKIP knobs) vs bf (018d039: fused norms, q+k stacked, serve warm-up, bench --batch) — with llama.cpp beside;
# dispatch-cost skips; serve warm-up vs --no-warmup vs llama-server; split-K merge A/B (b9 e177ead vs b10 cb8144a).
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/r; mkdir -p $R
for b in b9 b10 bx bf; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer; P=/tmp/peer/bin; chmod +x $P/llama-server
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
/tmp/bf bench copy --mb 1024 --json > $R/copy.json 2>&1
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m gemma3-270m-q4_k_m"
for m in $M; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
# 1. decode A/B, alternating, twice
for m in $M; do for r in 1 2; do for b in bx bf; do
  echo "{\"model\": \"$m\", \"bin\": \"$b\", \"round\": $r}"
  timeout 60 /tmp/$b bench generate --model /tmp/$m.gguf --prompt-tokens 512 --gen-tokens 128 || echo '{"failed": 1}'
done; done; done > $R/ab.jsonl 2> $R/ab.err
for m in smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m; do
  LD_LIBRARY_PATH=$P $P/llama-server -m /tmp/$m.gguf -ngl 99 -c 4096 --parallel 1 --port 8088 > /tmp/ls.log 2>&1 &
  srv=$!
  echo "{\"model\": \"$m\"}" >> $R/peer.jsonl
  timeout 120 python3 bench/gemma_peer.py http://127.0.0.1:8088 512 128 16 >> $R/peer.jsonl 2>> $R/peer.err
  kill $srv; wait $srv 2>/dev/null
  timeout 60 /tmp/bf bench generate --model /tmp/$m.gguf --prompt-tokens 512 --gen-tokens 128 --profile > $R/$m.bf.profile.json 2>> $R/ab.err
done
# 2b. batched steps (what serve's throughput is made of)
for n in 1 8 32; do timeout 60 /tmp/bf bench generate --model /tmp/smollm2-135m-instruct-q4_1.gguf --prompt-tokens 64 --gen-tokens 64 --batch $n --profile > $R/batch$n.json 2>> $R/ab.err; done
# 3. serve
sh bench/serve_on_device.sh /tmp/bf $P /tmp/smollm2-135m-instruct-q4_1.gguf $R > $R/serve.log 2>&1
/tmp/bf serve --model /tmp/smollm2-135m-instruct-q4_1.gguf --port 8092 --parallel 32 --ctx-size 1024 --no-warmup > $R/metallic-serve-cold.log 2>&1 &
srv=$!
for i in $(seq 100); do python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8092/health', timeout=2).status == 200 else 1)" 2>/dev/null && break; sleep 0.5; done
for n in 1 8 32; do python3 bench/serve_load.py http://127.0.0.1:8092 $n 128 --label metallic-no-warmup; done > $R/serve-cold.jsonl 2>&1
kill $srv; wait $srv 2>/dev/null
# 4. split-K merge A/B
for shape in "32 8 128" "4 1 256" "9 3 64" "14 2 64"; do
  set -- $shape
  for sk in 4096 64; do
    for v in "b9 " "b10 " "b9 --kv-f16" "b10 --kv-f16"; do
      bin=${v%% *}; flag=${v#* }
      echo "{\"bin\": \"$bin\", \"flag\": \"$flag\", \"shape\": \"$shape $sk\"}"
      timeout 20 /tmp/$bin bench sdpa --batch 1 --heads $1 --kv-heads $2 --seq-q 1 --seq-k $sk --dim $3 --impl split-k --json $flag || echo '{"failed": 1}'
    done
  done
done > $R/sdpa.jsonl 2> $R/sdpa.err
for b in b9 b10; do echo "{\"bin\": \"$b\"}"; timeout 40 /tmp/$b bench generate --model /tmp/gemma3-270m-q4_k_m.gguf --prompt-tokens 16 --decode-prompt-tokens 4096 --gen-tokens 64 || echo '{"failed": 1}'; done > $R/gemma4096.jsonl 2>> $R/gen.err
# 2. what each kernel costs in a step (bx, outputs meaningless)
for m in smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m; do
  for s in "" merge norm rope attn "norm,rope,merge"; do
    echo "{\"model\": \"$m\", \"skip\": \"$s\"}"
    METALLIC_SKIP=$s timeout 60 /tmp/bx bench generate --model /tmp/$m.gguf --prompt-tokens 64 --gen-tokens 128 || echo '{"failed": 1}'
  done
done > $R/skip.jsonl 2> $R/skip.err
echo done
