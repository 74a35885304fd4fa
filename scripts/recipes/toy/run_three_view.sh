#!/usr/bin/env bash
# Three views on the toy corpus: FBank + toy-HuBERT units + MFCC k-means units, beside the
# study's two-view runs of the same seed (scripts/recipes/toy/run_study.sh).
#
# It reuses what the study made: the prepared corpus with its toy-HuBERT units (hard-linked
# into --data-root, so the study's files are never rewritten), the study's MFCC k-means model
# (the `mfcc` part's, so the third view's units are the MFCC column's) and its multi-stage
# dropout schedule. Stages:
#   1 link     --study-data/en-$TGT -> --data-root/en-$TGT (cp -al), the study's MFCC k-means
#   2 units    the MFCC view as the named set `mfcc` (units_mfcc.zip, column units_mfcc)
#   3 train    run.sh --units hubert-toy,mfcc --variants (default gsgn,gsgn_drop): train,
#              average, decode (early stopping and averaging as in the study)
# Resumable: each stage leaves a .done marker; training resumes from checkpoint_last.pt.
#
# Usage: scripts/recipes/toy/run_three_view.sh [--study-exp exp/toy_study] [--study-data data/toy_study]
#          [--data-root data/toy_three_view] [--exp exp/toy_three_view] [--seed 1]
#          [--variants gsgn,gsgn_drop] [--max-epoch 80] [--patience 5] [--n-avg 5]
set -euo pipefail
log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (${BASH_SOURCE[0]##*/}) $*"; }
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT_DIR"
# shellcheck source=toy_flags.sh
. scripts/recipes/toy/toy_flags.sh
RUN_SH=${RUN_SH:-scripts/recipes/must_c/run.sh}
PY=${PY:-$ROOT_DIR/.venv/bin/python}

study_exp=exp/toy_study
study_data=data/toy_study
data_root=data/toy_three_view
exp=exp/toy_three_view
tgt_lang=de
seed=1
variants=gsgn,gsgn_drop
max_epoch=80
patience=5
n_avg=5
while [ $# -gt 0 ]; do
  key=${1#--}; key=${key//-/_}
  case $key in
    study_exp|study_data|data_root|exp|seed|variants|max_epoch|patience|n_avg)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 1; }
      printf -v "$key" '%s' "$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

src=$study_data/en-$tgt_lang
km=$study_exp/mfcc/km_mfcc_100.bin
schedule_json=$study_exp/msd_schedule.json
for f in "$src/units.zip" "$km" "$schedule_json"; do
  [ -e "$f" ] || { echo "$f is missing: run scripts/recipes/toy/run_study.sh (parts table1 and mfcc) first" >&2; exit 1; }
done
mkdir -p "$exp/.done"

if [ ! -f "$exp/.done/link" ]; then
  log "stage 1: $src -> $data_root/en-$tgt_lang (hard links)"
  rm -rf "${data_root:?}/en-$tgt_lang"; mkdir -p "$data_root"
  cp -al "$src" "$data_root/en-$tgt_lang"
  cp "$km" "$exp/km_mfcc_mfcc_100.bin"  # the name run.sh gives the k-means of a view named mfcc
  # the corpus is prepared and its first view's units made: run.sh starts at the MFCC view
  touch "$exp/.done/prep" "$exp/.done/units" "$exp/.done/link"
fi

schedule=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['msd_schedule'])" "$schedule_json")
# shellcheck disable=SC2046
flags=($(toy_recipe_flags "$data_root" "$exp" "$max_epoch" "$n_avg"))
log "stages 2-3: MFCC view, then $variants with three views (seed $seed, msd schedule $schedule)"
"$RUN_SH" "${flags[@]}" --units hubert-toy,mfcc --n-clusters 100 --patience "$patience" --keep-last-epochs 1 \
  --msd-schedule "$schedule" --seed "$seed" --variants "$variants" --stage 1 --stop-stage 4
