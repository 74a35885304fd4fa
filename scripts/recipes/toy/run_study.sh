#!/usr/bin/env bash
# The reproduction study on the toy corpus (en-de), one command:
#   Table I   FBank-only, S-feature-only, GSGN, GSGN+Drop   (test BLEU, convergence epoch)
#   Table II  noise sum (FBank-only + noise), noise replace (GSGN with noise for units)
#   Table III concat vs GSGN
#   inference-branch robustness of GSGN+Drop (fusion / fbank / unit / sample inputs)
#   convergence: epochs and wall-clock to reach FBank-only's best dev BLEU
#   figures: learning curves, gradient conflict, gate means -> docs/figures/
# and writes every table into docs/RESULTS.md.
#
#   scripts/recipes/toy/run_study.sh [--parallel 2] [--with-noise] [--seeds 1,2]
#
# --with-noise adds the Table II runs (noise_sum, noise_replace): two more trainings.
# --seeds trains every variant once per seed (seed 1 in exp/toy_demo, seed S in
# exp/toy_demo_seedS) and adds a table of per-seed BLEU and convergence epoch with their mean
# and standard deviation; robustness, figures and the single-seed tables use seed 1.
# It shares data, settings and the experiment directory with run_demo.sh (toy_flags.sh), so
# runs the demo finished are reused, and a rerun resumes (the recipe's .done markers).
# With --parallel N, N recipe processes train different variants side by side, one thread each.
set -euo pipefail
log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (run_study.sh) $*"; }
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT_DIR"
PY=.venv/bin/python
BIN=.venv/bin
source scripts/recipes/toy/toy_flags.sh

parallel=1
noise=0
seeds=1
while [ $# -gt 0 ]; do
  case $1 in
    --parallel) parallel=$2; shift 2 ;;
    --with-noise) noise=1; shift ;;
    --seeds) seeds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
data=$TOY_DATA; exp=$TOY_EXP
IFS=, read -r -a seed_list <<< "$seeds"
[ "${seed_list[0]}" = 1 ] || { echo "--seeds must start with 1 (the seed of the demo's runs), got $seeds" >&2; exit 1; }
seed_exp() { if [ "$1" = 1 ]; then echo "$exp"; else echo "${exp}_seed$1"; fi; }
variants=(fbank gsgn_drop unit gsgn concat)
[ $noise = 1 ] && variants+=(noise_sum noise_replace)

$PY scripts/make_toy_corpus.py --out "$data" --pairs de
# shellcheck disable=SC2046
scripts/recipes/must_c/run.sh $(toy_recipe_flags "$data" "$exp" "$TOY_MAX_EPOCH" "$TOY_N_AVG") \
  --msd-schedule "$TOY_SCHEDULE" --stage 0 --stop-stage 1

train_all() {  # $@: seed:variant jobs, $parallel at a time
  local jobs=("$@") pids=() w
  for ((w = 0; w < parallel; w++)); do
    threads=$(( $(nproc) / parallel )); [ "$threads" -ge 1 ] || threads=1
    (
      for ((i = w; i < ${#jobs[@]}; i += parallel)); do
        s=${jobs[$i]%%:*}; v=${jobs[$i]#*:}
        # shellcheck disable=SC2046
        OMP_NUM_THREADS=$threads scripts/recipes/must_c/run.sh \
          $(toy_recipe_flags "$data" "$(seed_exp "$s")" "$TOY_MAX_EPOCH" "$TOY_N_AVG") \
          --msd-schedule "$TOY_SCHEDULE" --seed "$s" --variants "$v" --stage 2 --stop-stage 4
      done
    ) >> "$exp/study_worker$w.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
log "training ${variants[*]} with seeds ${seed_list[*]} ($parallel at a time)"
main_jobs=(); noise_jobs=()  # seed-major so seed 1 finishes first; the noise runs need gsgn's unit range
for s in "${seed_list[@]}"; do for v in "${variants[@]}"; do
  case $v in noise_*) noise_jobs+=("$s:$v") ;; *) main_jobs+=("$s:$v") ;; esac
done; done
train_all "${main_jobs[@]}"
[ ${#noise_jobs[@]} -eq 0 ] || train_all "${noise_jobs[@]}"

log "inference branches of gsgn_drop"
run=$exp/gsgn_drop
rows="| inference input | tst-COMMON BLEU |\n|---|---|"
for branch in fusion fbank unit sample; do
  out=$run/generate-tst-COMMON.$branch.txt
  if [ ! -f "$run/bleu-tst-COMMON.$branch.json" ]; then
    $BIN/fairseq-generate "$data/en-de" --user-dir gsgn_fairseq --task speech_to_text_multiview \
      --config-yaml config_st.yaml --gen-subset tst-COMMON_st --path "$run/checkpoint_avg$TOY_N_AVG.pt" \
      --model-overrides "{'inference_branch': '$branch'}" --beam 5 --lenpen 1.0 --max-tokens 50000 \
      --required-batch-size-multiple 1 --scoring sacrebleu > "$out"
    "$(dirname "$PY")/gsgn-score" "$out" --tsv "$data/en-de/tst-COMMON_st.tsv" --json "$run/bleu-tst-COMMON.$branch.json"
  fi
  bleu=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['bleu'])" "$run/bleu-tst-COMMON.$branch.json")
  rows="$rows\n| $branch | $bleu |"
done
echo -e "$rows" > "$exp/robustness.md"

log "tables, convergence, figures"
$PY scripts/results_table.py --exp-dir "$exp" --variants fbank,unit,gsgn,gsgn_drop --out "$exp/table1.md"
tables=("Table I:table1" "Table III:table3" "Inference branches:robustness" "Convergence:convergence")
if [ $noise = 1 ]; then
  $PY scripts/results_table.py --exp-dir "$exp" --variants fbank,noise_sum,gsgn,noise_replace --out "$exp/table2.md"
  tables+=("Table II:table2")
fi
$PY scripts/results_table.py --exp-dir "$exp" --variants concat,gsgn --out "$exp/table3.md"
logs=()
for v in "${variants[@]}"; do logs+=("$v=$exp/$v/train.log"); done
$PY scripts/convergence.py --baseline "fbank=$exp/fbank/train.log" \
  --runs $(printf '%s ' "${logs[@]:1}") --out "$exp/convergence.md"
$PY scripts/plot_training.py --out-dir docs/figures --logs "${logs[@]}"

if [ ${#seed_list[@]} -gt 1 ]; then
  dirs=(); for s in "${seed_list[@]}"; do dirs+=("$(seed_exp "$s")"); done
  $PY scripts/results_table.py --exp-dir "${dirs[@]}" --names "$(printf 'seed %s,' "${seed_list[@]}" | sed 's/,$//')" \
    --variants "$(IFS=,; echo "${variants[*]}")" --out "$exp/seeds.md"
  for s in "${seed_list[@]:1}"; do
    d=$(seed_exp "$s"); slogs=()
    for v in "${variants[@]}"; do slogs+=("$v=$d/$v/train.log"); done
    $PY scripts/convergence.py --baseline "fbank=$d/fbank/train.log" --runs $(printf '%s ' "${slogs[@]:1}") \
      --out "$d/convergence.md"
    { echo; echo "Convergence, seed $s:"; echo; cat "$d/convergence.md"; } >> "$exp/seeds.md"
  done
  tables+=("Seeds:seeds")
fi

suffix=""; [ $noise = 1 ] && suffix=" --with-noise"
[ ${#seed_list[@]} -gt 1 ] && suffix="$suffix --seeds $seeds"
cmd="scripts/recipes/toy/run_study.sh --parallel $parallel$suffix"
for t in "${tables[@]}"; do
  $PY scripts/update_results.py --section "Toy study: ${t%%:*}" --table "$exp/${t##*:}.md" \
    --command "$cmd" --file docs/RESULTS.md
done
log "done: docs/RESULTS.md"
