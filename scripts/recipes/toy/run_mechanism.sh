#!/usr/bin/env bash
# Does the gate react to gradient conflicts? GSGN (no multi-stage dropout) on the toy corpus,
# the toy settings (toy_flags.sh), with:
#   gate_off        the gate loss off (--gate-loss-weight 0; targets still measured: factorized per utterance)
#   exact_utt       exact targets per utterance, every update
#   factorized_utt  factorized (Eq. 6-7) targets per utterance
#   learned_unit    factorized per utterance with --unit-gate learned (the deviation)
# then Fig.-3 / Fig.-4 style plots side by side (docs/figures/mechanism_*), test BLEU, the
# epoch each run reaches FBank-only's best dev BLEU, and the gate statistics per epoch
# ($EXP/mechanism.md).
#
#   scripts/recipes/toy/run_mechanism.sh [--parallel 2] [--runs gate_off,exact_utt,...]
#       [--baseline exp/toy_demo/fbank/train.log]
#
# Needs the prepared toy data with units (run_demo.sh). Resumable (the recipe's .done markers,
# fairseq's checkpoint_last.pt).
set -euo pipefail
log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (run_mechanism.sh) $*"; }
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT_DIR"
PY=${PY:-.venv/bin/python}
source scripts/recipes/toy/toy_flags.sh

parallel=1
runs=gate_off,exact_utt,factorized_utt,learned_unit
exp=exp/toy_mechanism
data_root=$TOY_DATA
baseline=$TOY_EXP/fbank/train.log
figures=docs/figures
while [ $# -gt 0 ]; do
  case $1 in
    --parallel) parallel=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data-root) data_root=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --figures) figures=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
[ -f "$data_root/en-de/train_st.tsv" ] || { echo "no prepared toy data in $data_root/en-de: run scripts/recipes/toy/run_demo.sh first" >&2; exit 1; }

run_flags() {
  case $1 in
    gate_off)       echo "--gate-target factorized --gate-target-granularity utterance --gate-loss-weight 0" ;;
    exact_utt)      echo "--gate-target exact --gate-target-granularity utterance --gate-target-interval 1" ;;
    factorized_utt) echo "--gate-target factorized --gate-target-granularity utterance" ;;
    learned_unit)   echo "--gate-target factorized --gate-target-granularity utterance --unit-gate learned" ;;
    *) echo "unknown run '$1' (gate_off exact_utt factorized_utt learned_unit)" >&2; return 1 ;;
  esac
}
IFS=, read -r -a run_list <<< "$runs"
for r in "${run_list[@]}"; do run_flags "$r" >/dev/null; done
mkdir -p "$exp"

pids=()
for ((w = 0; w < parallel; w++)); do
  threads=$(( $(nproc) / parallel )); [ "$threads" -ge 1 ] || threads=1
  (
    for ((i = w; i < ${#run_list[@]}; i += parallel)); do
      r=${run_list[$i]}
      log "train $r: $(run_flags "$r")"
      # shellcheck disable=SC2046
      OMP_NUM_THREADS=$threads scripts/recipes/must_c/run.sh \
        $(toy_recipe_flags "$data_root" "$exp/$r" "$TOY_MAX_EPOCH" "$TOY_N_AVG") \
        --msd-schedule "$TOY_SCHEDULE" --variants gsgn $(run_flags "$r") --stage 2 --stop-stage 5
    done
  ) >> "$exp/worker$w.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

logs=(); dirs=()
for r in "${run_list[@]}"; do logs+=("$r=$exp/$r/gsgn/train.log"); dirs+=("$r=$exp/$r/gsgn"); done
"$PY" scripts/plot_training.py --out-dir "$exp/figures" --logs "${logs[@]}"
mkdir -p "$figures"
for f in gradient_conflict gate_means learning_curves; do
  [ -f "$exp/figures/$f.png" ] && cp "$exp/figures/$f.png" "$figures/mechanism_$f.png"
done
{
  echo "Gate statistics per epoch (training, fusion utterances; targets per utterance):"; echo
  "$PY" scripts/gate_summary.py --runs "${logs[@]}"
  echo; echo "Convergence against FBank-only ($baseline):"; echo
  "$PY" scripts/convergence.py --baseline "fbank=$baseline" --runs "${logs[@]}"
  echo; echo "Test scores:"; echo
  "$PY" scripts/learning_table.py --runs "${dirs[@]}" | sed -n '/^| run |/,$p'
} > "$exp/mechanism.md"
log "done: $exp/mechanism.md"
cat "$exp/mechanism.md"
