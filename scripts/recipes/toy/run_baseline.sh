#!/usr/bin/env bash
# Is our FBank-only model a fair baseline? Trains, on the toy corpus, our `--fusion fbank`
# model (--adapter linear-ln and none, without CTC and with CTC 0.3 on the acoustic encoder)
# and fairseq's own s2t_transformer of the same size (task speech_to_text on the same data,
# no CTC), with the toy settings otherwise; averages the 5 best checkpoints, decodes tst-COMMON (beam 5) and writes
# a table of dev accuracy per epoch and test BLEU/chrF to $EXP/baseline.md.
#
#   scripts/recipes/toy/run_baseline.sh [--parallel 2] [--runs ours,ours_noadapter,s2t]
#
# Needs the prepared toy data (run_demo.sh's stage 0-1, data/toy/en-de). Resumable: each run
# leaves $EXP/.done/<run>; fairseq resumes an interrupted training from checkpoint_last.pt.
set -euo pipefail
log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (run_baseline.sh) $*"; }
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT_DIR"
PY=${PY:-.venv/bin/python}
BIN=${BIN:-$(dirname "$PY")}
source scripts/recipes/toy/toy_flags.sh

parallel=1
runs=ours,ours_noadapter,s2t
exp=exp/toy_baseline
data=$TOY_DATA/en-de
seed=1
while [ $# -gt 0 ]; do
  case $1 in
    --parallel) parallel=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
[ -f "$data/train_st.tsv" ] || { echo "no prepared data in $data: run scripts/recipes/toy/run_demo.sh (or its stages 0-1) first" >&2; exit 1; }
mkdir -p "$exp/.done"

# s2t_gsgn_tiny's sizes, for fairseq's s2t_transformer (encoder layers = 3 acoustic + 1 textual)
S2T_SIZE="--arch s2t_transformer --encoder-embed-dim 128 --encoder-ffn-embed-dim 512 --encoder-layers 4
  --encoder-attention-heads 4 --decoder-embed-dim 128 --decoder-ffn-embed-dim 512 --decoder-layers 2
  --decoder-attention-heads 4 --conv-kernel-sizes 5,5,5 --conv-channels 256 --dropout 0.1
  --attention-dropout 0.1 --activation-dropout 0.1"
LSCE="--criterion label_smoothed_cross_entropy"
CTC="--criterion label_smoothed_cross_entropy_with_gate --use-ctc --ctc-weight 0.3"
run_flags() {  # the task first (decoding takes the first two words)
  case $1 in
    ours)           echo "--task speech_to_text_multiview --num-units 100 --arch s2t_gsgn_tiny --fusion fbank --adapter linear-ln $LSCE" ;;
    ours_noadapter) echo "--task speech_to_text_multiview --num-units 100 --arch s2t_gsgn_tiny --fusion fbank --adapter none $LSCE" ;;
    ours_ctc)       echo "--task speech_to_text_multiview --num-units 100 --arch s2t_gsgn_tiny --fusion fbank --adapter linear-ln $CTC" ;;
    ours_noadapter_ctc) echo "--task speech_to_text_multiview --num-units 100 --arch s2t_gsgn_tiny --fusion fbank --adapter none $CTC" ;;
    s2t)            echo "--task speech_to_text $S2T_SIZE $LSCE" ;;
    *) echo "unknown run '$1' (ours ours_noadapter ours_ctc ours_noadapter_ctc s2t)" >&2; return 1 ;;
  esac
}

one_run() {
  local name=$1 dir=$exp/$1
  is_done() { [ -f "$exp/.done/$name" ]; }
  is_done && return 0
  mkdir -p "$dir"
  # shellcheck disable=SC2046
  log "train $name"
  "$BIN/fairseq-train" "$data" --user-dir gsgn_fairseq $(run_flags "$name") --config-yaml config_st.yaml \
    --train-subset train_st --valid-subset dev_st \
    --label-smoothing 0.1 --report-accuracy --optimizer adam --adam-betas '(0.9, 0.98)' --lr 2e-3 \
    --lr-scheduler inverse_sqrt --warmup-updates 500 --clip-norm 10.0 --max-tokens 10000 \
    --max-epoch "$TOY_MAX_EPOCH" --seed "$seed" --num-workers 0 --save-dir "$dir" \
    --keep-best-checkpoints "$TOY_N_AVG" --keep-last-epochs 1 --log-format json --log-interval 50 \
    --skip-invalid-size-inputs-valid-test >> "$dir/train.log" 2>&1
  "$(dirname "$PY")/gsgn-average-checkpoints" --inputs "$dir" --num-best-checkpoints "$TOY_N_AVG" \
    --output "$dir/checkpoint_avg$TOY_N_AVG.pt"
  # shellcheck disable=SC2046
  "$BIN/fairseq-generate" "$data" --user-dir gsgn_fairseq $(run_flags "$name" | cut -d' ' -f1-2) \
    --config-yaml config_st.yaml --gen-subset tst-COMMON_st --path "$dir/checkpoint_avg$TOY_N_AVG.pt" \
    --beam 5 --lenpen 1.0 --max-tokens 50000 --required-batch-size-multiple 1 --scoring sacrebleu \
    > "$dir/generate-tst-COMMON.txt" 2> "$dir/generate.log"
  "$(dirname "$PY")/gsgn-score" "$dir/generate-tst-COMMON.txt" --tsv "$data/tst-COMMON_st.tsv" \
    --json "$dir/bleu-tst-COMMON.json"
  touch "$exp/.done/$name"
}

IFS=, read -r -a run_list <<< "$runs"
for r in "${run_list[@]}"; do run_flags "$r" >/dev/null; done
pids=()
for ((w = 0; w < parallel; w++)); do
  threads=$(( $(nproc) / parallel )); [ "$threads" -ge 1 ] || threads=1
  (
    for ((i = w; i < ${#run_list[@]}; i += parallel)); do
      OMP_NUM_THREADS=$threads one_run "${run_list[$i]}"
    done
  ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

named=(); for r in "${run_list[@]}"; do named+=("$r=$exp/$r"); done
"$PY" scripts/learning_table.py --runs "${named[@]}" --out "$exp/baseline.md"

# Decoding speed: the runs one after another, alternating (scripts/bench_decode.py)
ckpts=(); for r in "${run_list[@]}"; do ckpts+=("$r=$exp/$r/checkpoint_avg$TOY_N_AVG.pt"); done
{ echo; echo "Decoding tst-COMMON, beam 5 (scripts/bench_decode.py, alternating rounds):"; echo
  "$PY" scripts/bench_decode.py --data "$data" --subset tst-COMMON_st --runs "${ckpts[@]}" | sed -n '/^| run/,$p'
} >> "$exp/baseline.md"
log "done: $exp/baseline.md"
