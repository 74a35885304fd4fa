#!/usr/bin/env bash
# The pretrained initialisation of the paper's Table IV, on a prepared pair (run.sh stage 0):
# an ASR model (fairseq s2t_transformer, English transcripts) for the subsampler and the
# acoustic encoder, and an MT model (fairseq transformer, English text -> target text) for the
# textual encoder and the decoder, both shaped to fit --arch. Then train any variant from them:
#   scripts/recipes/must_c/run.sh ... --init-asr $OUT/asr/checkpoint_avg$N.pt --init-mt $OUT/mt/checkpoint_avg$N.pt
#
#   scripts/recipes/must_c/pretrain.sh --data-root data/toy --tgt-lang de --out exp/toy/pretrain --arch s2t_gsgn_tiny
#
# Stages (each leaves $OUT/.done/<stage>; a rerun skips it, a training resumes from checkpoint_last.pt):
#   0 data    $DATA/{split}_asr.tsv, $DATA/config_asr.yaml; $OUT/mt_text/{train,valid}.{en,TGT} (SentencePiece
#             pieces of the ST task's own models) -> $OUT/mt_bin (fairseq-preprocess with the ST dictionaries)
#   1 asr     $OUT/asr/checkpoint*.pt, train.log; the best --n-avg averaged: checkpoint_avg$N.pt
#   2 mt      $OUT/mt/checkpoint*.pt, train.log; checkpoint_avg$N.pt
# Both train with the ST recipe's optimiser (Adam, inverse-sqrt, label smoothing 0.1), early stopping.
set -euo pipefail
log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (pretrain.sh) $*"; }
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PY=${PY:-$ROOT_DIR/.venv/bin/python}
BIN=${BIN:-$(dirname "$PY")}

stage=0
stop_stage=2
data_root=data/must_c
tgt_lang=de
out=""
arch=s2t_gsgn
max_tokens=40000
mt_max_tokens=4096
lr=2e-3
warmup=4000
max_epoch=100
patience=10
n_avg=10
seed=1
num_workers=2
extra=""                 # more fairseq-train flags for both models
while [ $# -gt 0 ]; do
  name=${1#--}; name=${name//-/_}
  [ $# -ge 2 ] || { echo "missing value for $1" >&2; exit 1; }
  case $name in
    stage|stop_stage|data_root|tgt_lang|out|arch|max_tokens|mt_max_tokens|lr|warmup|max_epoch|patience|n_avg|seed|num_workers|extra)
      printf -v "$name" '%s' "$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
[ -n "$out" ] || { echo "--out DIR is required" >&2; exit 1; }
data=$data_root/en-$tgt_lang
mkdir -p "$out/.done"
is_done() { [ -f "$out/.done/$1" ]; }

info=$out/prep.tsv  # srcdict, tgtdict, asr_flags, mt_flags
if [ $stage -le 0 ] && [ $stop_stage -ge 0 ] && ! is_done data; then
  log "stage 0: ASR manifests and MT text from $data"
  "$BIN/gsgn-prep-pretrain" --data-root "$data_root" --tgt-lang "$tgt_lang" --mt-dir "$out/mt_text" \
    --arch "$arch" > "$info.tmp"
  mv "$info.tmp" "$info"
  rm -rf "$out/mt_bin"
  "$BIN/fairseq-preprocess" --source-lang en --target-lang "$tgt_lang" \
    --trainpref "$out/mt_text/train" --validpref "$out/mt_text/valid" --destdir "$out/mt_bin" \
    --srcdict "$(awk -F'\t' '$1=="srcdict"{print $2}' "$info")" \
    --tgtdict "$(awk -F'\t' '$1=="tgtdict"{print $2}' "$info")" --workers 1
  touch "$out/.done/data"
fi
[ -f "$info" ] || { echo "$info missing: run stage 0 first" >&2; exit 1; }
flags_of() { awk -F'\t' -v k="$1" '$1==k{print $2}' "$info"; }

common=(--criterion label_smoothed_cross_entropy --label-smoothing 0.1 --report-accuracy
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr "$lr" --lr-scheduler inverse_sqrt --warmup-updates "$warmup"
  --clip-norm 10.0 --max-epoch "$max_epoch" --patience "$patience" --seed "$seed" --num-workers "$num_workers"
  --keep-best-checkpoints "$n_avg" --keep-last-epochs 1 --log-format json --log-interval 50)

train() {  # $1 name, then fairseq-train arguments
  local name=$1; shift
  mkdir -p "$out/$name"
  # shellcheck disable=SC2086
  "$BIN/fairseq-train" "$@" "${common[@]}" --save-dir "$out/$name" $extra 2>&1 | tee -a "$out/$name/train.log"
  "$BIN/gsgn-average-checkpoints" --inputs "$out/$name" --num-best-checkpoints "$n_avg" \
    --output "$out/$name/checkpoint_avg$n_avg.pt"
  touch "$out/.done/$name"
}

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && ! is_done asr; then
  log "stage 1: ASR pretraining ($(flags_of asr_flags))"
  # shellcheck disable=SC2046
  train asr "$data" --task speech_to_text --config-yaml config_asr.yaml --train-subset train_asr \
    --valid-subset dev_asr --max-tokens "$max_tokens" $(flags_of asr_flags)
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && ! is_done mt; then
  log "stage 2: MT pretraining ($(flags_of mt_flags))"
  # shellcheck disable=SC2046
  train mt "$out/mt_bin" --task translation --source-lang en --target-lang "$tgt_lang" \
    --max-tokens "$mt_max_tokens" $(flags_of mt_flags)
fi
log "done: $out/asr/checkpoint_avg$n_avg.pt, $out/mt/checkpoint_avg$n_avg.pt"
