#!/usr/bin/env bash
# The main job on the bundled toy corpus, end to end on a CPU:
#   toy corpus (en-de) -> prep -> MFCC k-means units -> train FBank-only and GSGN+Drop
#   -> average the best checkpoints -> decode tst-COMMON -> Table-I-style BLEU table.
#
#   scripts/recipes/toy/run_demo.sh            # full demo (about 30 minutes on 2 cores)
#   scripts/recipes/toy/run_demo.sh --quick    # smoke test: small corpus, few epochs
#
# Writes data/toy (the corpus and prepared data), exp/toy_demo[_quick] (runs, logs, table),
# figures under exp/.../figures, and the table into docs/RESULTS.md (full demo only).
#
# Toy-scale choices (the paper's values are the MuST-C recipe's defaults):
#   arch s2t_gsgn_tiny, 100 MFCC k-means units, lr 2e-3 with 500 warm-up updates,
#   20 epochs, 5 best checkpoints averaged. The multi-stage dropout schedule
#   "1:0.3,0.0;10:0.5,0.3;25:0.3,0.0" is meant for ~40 MuST-C epochs; it is scaled by
#   20/40 to the toy's epoch budget: "1:0.3,0.0;5:0.5,0.3;13:0.3,0.0".
set -euo pipefail
log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (run_demo.sh) $*"; }
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT_DIR"
PY=.venv/bin/python

quick=0
[ "${1:-}" = "--quick" ] && { quick=1; shift; }

if [ $quick = 1 ]; then
  data_root=data/toy_quick; exp=exp/toy_demo_quick
  corpus_flags="--n-train 600 --n-dev 60 --n-test 60"; max_epoch=4; n_avg=2
  schedule="1:0.3,0.0;2:0.5,0.3;3:0.3,0.0"
else
  data_root=data/toy; exp=exp/toy_demo
  corpus_flags=""; max_epoch=20; n_avg=5
  schedule="1:0.3,0.0;5:0.5,0.3;13:0.3,0.0"
fi

log "toy corpus -> $data_root"
$PY scripts/make_toy_corpus.py --out "$data_root" --pairs de $corpus_flags

scripts/recipes/must_c/run.sh --data-root "$data_root" --tgt-lang de --exp "$exp" \
  --vocab-size 1000 --units mfcc --n-clusters 100 --km-percent 0.5 \
  --arch s2t_gsgn_tiny --variants fbank,gsgn_drop --max-tokens 10000 --lr 2e-3 --warmup 500 \
  --max-epoch $max_epoch --patience 10 --n-avg $n_avg --msd-schedule "$schedule" \
  --num-workers 0 --test-splits tst-COMMON --eval-bleu 1 "$@"

$PY scripts/plot_training.py --out-dir "$exp/figures" \
  --logs fbank="$exp/fbank/train.log" gsgn_drop="$exp/gsgn_drop/train.log"

if [ $quick = 0 ]; then
  $PY scripts/update_results.py --section "Toy demo" --table "$exp/results.md" \
    --command "scripts/recipes/toy/run_demo.sh" --file docs/RESULTS.md
fi
log "done: $exp/results.md"
cat "$exp/results.md"
