#!/bin/sh
# Not run (session 15 had no device time left): the word GEMV's BATCH mode against main. The
# mode is `batch-gemv.patch` beside this script (`git apply` it on main at 5687d22 or later; it
# passes the qmatmul tests on llvmpipe): products of more than 8 rows of x on the word GEMV take
# one weight row per workgroup and up to 32 rows of x per decoded unit (16, 24 or 32: three
# pipelines, warmed up by `metallic serve` on GPUs), each row bit-identical to its one-row
# product (the row functions split into decode_* and apply_*, which the one-row path runs back
# to back). Build, here: `bm` = main's `metallic`, `bb` = the patched one, `tq` =
# the patched release test binary of crates/metallic/tests/qmatmul.rs (xz -6 into .dev/, with
# the .hdr headers; carry .gl and .dev). What to look for beyond the totals: the mode trades
# decoding (once per unit instead of once per unit and row of x) for reads of x (once per
# weight row instead of once per 4), and a gated down projection applies its activation to x
# on every read, so `--profile`'s down-projection line may get slower while gate/up and the
# attention projections get faster. It checks, in order:
#   1. tq: the cooperative GEMM (its 5687d22 form, not yet run on a GPU) and the word GEMV against the CPU reference and every row of a 40-row product (the BATCH
#      mode) bit-identical to its one-row product, on the GPU's compiler;
#   2. solo decode does not regress (the one-row kernel now runs decode_* then apply_*): bench
#      generate, bm then bb, two rounds, three models;
#   3. batched decode at 16 and 32 sequences, bm then bb, with the per-kernel split.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=/tmp/rb; mkdir -p $R
save() { tar czf $OUT/res.tgz -C /tmp rb; }
for b in bm bb tq; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
timeout 150 /tmp/tq cooperative word_gemv gemv_rows_are gated fused --nocapture > $R/tq.txt 2>&1; echo "rc=$?" >> $R/tq.txt
save
M="smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m gemma3-270m-q4_k_m"
for m in $M; do python3 bench/regrow_gguf.py grow .dev/$m.hdr /tmp/$m.gguf > /dev/null 2>> $R/grow.err; done
for m in $M; do for r in 1 2; do for b in bm bb; do
  echo "{\"model\": \"$m\", \"bin\": \"$b\", \"round\": $r}"
  timeout 60 /tmp/$b bench generate --model /tmp/$m.gguf --prompt-tokens 64 --gen-tokens 128 || echo '{"failed": 1}'
done; done; done > $R/solo.jsonl 2> $R/solo.err
save
for m in smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m; do for n in 1 32; do for b in bm bb; do
  echo "{\"model\": \"$m\", \"bin\": \"$b\", \"batch\": $n}"
  timeout 60 /tmp/$b bench generate --model /tmp/$m.gguf --prompt-tokens 64 --gen-tokens 64 --batch $n --profile || echo '{"failed": 1}'
done; done; done > $R/batch.jsonl 2> $R/batch.err
save
echo done1
# 4. serve under load (patched binary) against llama-server, SmolLM2, same call.
mkdir -p /tmp/peer && tar xJf .peer/peer.tar.xz -C /tmp/peer
P=$(dirname $(find /tmp/peer -name llama-server | head -1)); chmod +x $P/llama-server
mkdir -p $R/serve
timeout 300 sh bench/serve_on_device.sh /tmp/bb $P /tmp/smollm2-135m-instruct-q4_1.gguf $R/serve > $R/serve.out 2>&1
save
echo done2
