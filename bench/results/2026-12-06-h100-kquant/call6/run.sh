#!/bin/sh
# Device call 6: split-K decode attention with 256 (main), 1024 and 2048 target workgroups: 8B and 1B decode at context 4096 and after a 512-token prompt.
set -u
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
R=$OUT/r; mkdir -p $R
save() { tar czf $OUT/res.tgz -C $OUT r; }
for b in b4 t1024 t2048; do xz -dc .dev/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
for name in llama-3.1-8b-q4_k_m llama-3.2-1b-q4_k_m; do
  f=/tmp/$name.gguf
  python3 bench/synth_gguf.py $name .dev/ggml-vocab-llama-bpe.gguf $f > /dev/null 2>> $R/synth.err
  for round in 1 2; do for b in b4 t1024 t2048; do
    echo "{\"bin\": \"$b\", \"ctx\": 4096}"; timeout 200 /tmp/$b bench generate --model $f --prompt-tokens 16 --gen-tokens 128 --decode-prompt-tokens 4096 || echo '{"failed": 1}'
    echo "{\"bin\": \"$b\", \"ctx\": 512}"; timeout 200 /tmp/$b bench generate --model $f --prompt-tokens 16 --gen-tokens 128 --decode-prompt-tokens 512 || echo '{"failed": 1}'
  done; done > $R/$name.jsonl 2>> $R/gen.err
  rm -f $f
  save
done
echo done
