#!/usr/bin/env bash
# The main job on the bundled toy corpus, end to end on a CPU:
#   toy corpus (en-de) -> prep -> MFCC k-means units -> train FBank-only and GSGN+Drop
#   -> average the best checkpoints -> decode tst-COMMON -> Table-I-style BLEU table.
#
#   scripts/recipes/toy/run_demo.sh            # full demo (about 25 minutes on 2 cores)
#   scripts/recipes/toy/run_demo.sh --quick    # smoke test: small corpus, few epochs
#
# Writes data/toy (the corpus and prepared data), exp/toy_demo[_quick] (runs, logs, table),
# figures under exp/.../figures, and the table into docs/RESULTS.md (full demo only).
#
# Toy-scale settings: scripts/recipes/toy/toy_flags.sh (shared with run_study.sh).
set -euo pipefail
log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (run_demo.sh) $*"; }
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT_DIR"
PY=.venv/bin/python
source scripts/recipes/toy/toy_flags.sh

quick=0
[ "${1:-}" = "--quick" ] && { quick=1; shift; }

if [ $quick = 1 ]; then
  data_root=data/toy_quick; exp=exp/toy_demo_quick
  corpus_flags="--n-train 600 --n-dev 60 --n-test 60"; max_epoch=4; n_avg=2
  schedule="1:0.3,0.0;2:0.5,0.3;3:0.3,0.0"
else
  data_root=$TOY_DATA; exp=$TOY_EXP
  corpus_flags=""; max_epoch=$TOY_MAX_EPOCH; n_avg=$TOY_N_AVG
  schedule=$TOY_SCHEDULE
fi

log "toy corpus -> $data_root"
$PY scripts/make_toy_corpus.py --out "$data_root" --pairs de $corpus_flags

# shellcheck disable=SC2046
scripts/recipes/must_c/run.sh $(toy_recipe_flags "$data_root" "$exp" "$max_epoch" "$n_avg") \
  --variants fbank,gsgn_drop --msd-schedule "$schedule" "$@"

$PY scripts/plot_training.py --out-dir "$exp/figures" \
  --logs fbank="$exp/fbank/train.log" gsgn_drop="$exp/gsgn_drop/train.log"

if [ $quick = 0 ]; then
  $PY scripts/update_results.py --section "Toy demo" --table "$exp/results.md" \
    --command "scripts/recipes/toy/run_demo.sh" --file docs/RESULTS.md
fi
log "done: $exp/results.md"
cat "$exp/results.md"
