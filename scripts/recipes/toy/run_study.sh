#!/usr/bin/env bash
# The reproduction study, to convergence, over seeds (the toy corpus by default, or any corpus
# in the MuST-C release layout):
#   table1     FBank-only, S-feature-only, GSGN, GSGN+Drop                       (every seed)
#   ablations  GSGN+Drop without the gate loss, and with the exact target        (every seed)
#   table3     concat                                                            (--side-seeds)
#   table2     noise sum (FBank + noise), noise replace (noise for the S-feature)  (--side-seeds)
#   mfcc       S-feature-only, GSGN, GSGN+Drop on MFCC k-means units              (--side-seeds)
#   table4     pretrained initialisation: an ASR and an MT model pretrained on the corpus
#              (scripts/recipes/must_c/pretrain.sh, once), then FBank-only, S-feature-only,
#              GSGN, GSGN+Drop from them                                         (--side-seeds)
# then the report: test BLEU / chrF / convergence epoch as mean ± sd over seeds, paired
# bootstrap p-values per seed, epochs and wall-clock to FBank-only's best dev BLEU, figures,
# all written to $EXP/report/ (and to docs/RESULTS.md with --results FILE).
#
#   scripts/recipes/toy/run_study.sh [--data-root data/toy_study] [--tgt-lang de] [--exp exp/toy_study]
#       [--units hubert-toy] [--seeds 1,2,3] [--side-seeds 1] [--parts table1,ablations,table4,table3,table2,mfcc]
#       [--parallel 2] [--patience 5] [--max-epoch 80] [--results docs/RESULTS.md] [--report-only]
#       [--from-archive DIR]
#
# --from-archive DIR: start from the finished runs archived by study_report.py --archive (their
# logs, scores and hypotheses; no checkpoints), which are then not trained again, and from the
# archived multi-stage-dropout schedule; and from Table IV's pretrained ASR and MT models where
# the archive holds them (--archive-pretrained), which are then not pretrained again.
#
# Every training stops early (--patience validations without a better dev loss) under a cap
# (--max-epoch) well above where runs stop; the best --n-avg checkpoints are averaged and the
# epoch of the last of them is the convergence epoch (the paper's definition).
# Multi-stage dropout: the paper's schedule "1:0.3,0.0;10:0.5,0.3;25:0.3,0.0" is for
# MuST-C En-De, where FBank-only converges at epoch 40; its stage epochs are scaled by E/40,
# E = FBank-only's convergence epoch of the first seed, which therefore trains first
# ($EXP/msd_schedule.json records E and the schedule; --msd-schedule fixes it instead).
#
# Layout: $EXP/seed$S/<variant>/ (runs of seed S), $EXP/mfcc/seed$S/ with the MFCC units in
# $EXP/data_mfcc (a hard-linked copy of the corpus), $EXP/pretrain/{asr,mt}/ and
# $EXP/pretrained/seed$S/ (Table IV), $EXP/hubert_toy/ (the pretrained toy HuBERT).
# A rerun resumes: each training from its checkpoint_last.pt, each stage from its .done marker.
# The default --data-root is generated (the toy corpus); any other must already exist.
set -euo pipefail
log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (run_study.sh) $*"; }
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT_DIR"
PY=${PY:-$ROOT_DIR/.venv/bin/python}
RUN_SH=${RUN_SH:-scripts/recipes/must_c/run.sh}  # the recipe (a test puts a stand-in here)
PRETRAIN_SH=${PRETRAIN_SH:-scripts/recipes/must_c/pretrain.sh}
source scripts/recipes/toy/toy_flags.sh

data_root=data/toy_study
tgt_lang=de
exp=exp/toy_study
units=hubert-toy
seeds=1,2,3
side_seeds=""            # default: the first of --seeds
parts=table1,ablations,table4,table3,table2,mfcc
parallel=2
patience=5
max_epoch=80
n_avg=$TOY_N_AVG
msd_schedule=""          # default: the paper's, scaled to FBank-only's convergence epoch
results=""
report_only=0
from_archive=""
extra=""                 # more run.sh flags for every training, e.g. "--arch s2t_gsgn_s --max-tokens 40000"
while [ $# -gt 0 ]; do
  case $1 in
    --report-only) report_only=1; shift; continue ;;
  esac
  name=${1#--}; name=${name//-/_}
  [ $# -ge 2 ] || { echo "missing value for $1" >&2; exit 1; }
  case $name in
    data_root|tgt_lang|exp|units|seeds|side_seeds|parts|parallel|patience|max_epoch|n_avg|msd_schedule|results|extra|from_archive)
      printf -v "$name" '%s' "$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
IFS=, read -r -a seed_list <<< "$seeds"
side_seeds=${side_seeds:-${seed_list[0]}}
IFS=, read -r -a side_list <<< "$side_seeds"
IFS=, read -r -a part_list <<< "$parts"
for p in "${part_list[@]}"; do
  case $p in table1|ablations|table4|table3|table2|mfcc) ;; *) echo "--parts: unknown part '$p' (table1 ablations table4 table3 table2 mfcc)" >&2; exit 1 ;; esac
done
[ -z "$from_archive" ] || [ -d "$from_archive" ] || { echo "--from-archive $from_archive: no such directory" >&2; exit 1; }
has_part() { [[ ",$parts," == *",$1,"* ]]; }
first=${seed_list[0]}
mkdir -p "$exp/.done"
data=$data_root/en-$tgt_lang

# run.sh flags shared by every stage: the toy settings, then the study's
recipe_flags() {  # $1 data root, $2 exp dir, $3 units
  # shellcheck disable=SC2046
  echo $(toy_recipe_flags "$1" "$2" "$max_epoch" "$n_avg") --tgt-lang "$tgt_lang" --units "$3" \
    --patience "$patience" --keep-last-epochs 1 $extra
}


# ---- the jobs: "group:seed:variant", part by part in --parts order, seed by seed; the first
# seed's FBank-only comes first (it fixes the schedule of the multi-stage-dropout runs)
jobs=()
add() { local s v; for s in $2; do for v in $3; do jobs+=("$1:$s:$v"); done; done; }
for p in "${part_list[@]}"; do
  case $p in
    table1) add main "${seed_list[*]}" "fbank unit gsgn gsgn_drop" ;;
    ablations) add main "${seed_list[*]}" "gsgn_drop_nogate gsgn_drop_exact" ;;
    table3) add main "${side_list[*]}" concat ;;
    mfcc) add mfcc "${side_list[*]}" "unit gsgn gsgn_drop" ;;
    # the claim's pair (GSGN+Drop against FBank-only) first
    table4) jobs+=("pretrain:0:asr_mt"); add pre "${side_list[*]}" "fbank gsgn_drop gsgn unit" ;;
    table2) add main "${side_list[*]}" "noise_sum noise_replace" ;;
  esac
done

group_data() { if [ "$1" = mfcc ]; then echo "$exp/data_mfcc"; else echo "$data_root"; fi; }
group_units() { if [ "$1" = mfcc ]; then echo mfcc; else echo "$units"; fi; }
run_dir() {
  case $1 in mfcc) echo "$exp/mfcc/seed$2" ;; pre) echo "$exp/pretrained/seed$2" ;; *) echo "$exp/seed$2" ;; esac
}
pretrained=$exp/pretrain

schedule_json=$exp/msd_schedule.json
scale_schedule() {  # the paper's schedule scaled to FBank-only's convergence epoch (first seed)
  [ -f "$schedule_json" ] && return 0
  local avg=$exp/seed$first/fbank/checkpoint_avg$n_avg.pt.json
  [ -f "$avg" ] || return 1
  $PY - "$avg" "$schedule_json" "$msd_schedule" <<'EOF'
import json, sys
avg, out, fixed = sys.argv[1:]
E = int(json.load(open(avg))["convergence_epoch"])
if fixed:
    schedule, how = fixed, "given with --msd-schedule"
else:
    # paper (MuST-C En-De): stages at epochs 1, 10, 25 with FBank-only converging at epoch 40
    e2 = max(2, round(10 * E / 40)); e3 = max(e2 + 1, round(25 * E / 40))
    schedule = f"1:0.3,0.0;{e2}:0.5,0.3;{e3}:0.3,0.0"
    how = f"the paper's 1:0.3,0.0;10:0.5,0.3;25:0.3,0.0 (FBank-only converges at 40) with its epochs scaled by {E}/40"
json.dump({"fbank_convergence_epoch": E, "msd_schedule": schedule, "how": how}, open(out + ".tmp", "w"), indent=2)
import os; os.replace(out + ".tmp", out)
print(schedule)
EOF
}
ready() {  # $1 job: can it start now?
  local g s v
  IFS=: read -r g s v <<< "$1"
  # Table IV's runs start from the pretrained models
  if [ "$g" = pre ]; then
    [ -f "$pretrained/.done/mt" ] || [ -f "$claims/pretrain:0:asr_mt/failed" ] || return 1
  fi
  case $v in
    gsgn_drop*) scale_schedule >/dev/null || [ -f "$claims/main:$first:fbank/failed" ] ;;
    # Table II's noise spans the S-feature's range, measured (run.sh) on this seed's gsgn run
    noise_*) [ -f "$exp/seed$s/.done/average.gsgn" ] || [ -f "$claims/main:$s:gsgn/failed" ] || ! has_job "main:$s:gsgn" ;;
    *) return 0 ;;
  esac
}
has_job() { [[ " ${jobs[*]} " == *" $1 "* ]]; }
run_job() {  # $1 job, $2 threads
  local g s v sched d
  IFS=: read -r g s v <<< "$1"
  [ -f "$schedule_json" ] || scale_schedule >/dev/null || true
  sched=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['msd_schedule'])" "$schedule_json" 2>/dev/null) || {
    case $v in gsgn_drop*) echo "no multi-stage-dropout schedule: $schedule_json (FBank-only of seed $first did not finish)" >&2; return 1 ;; esac
    sched="1:0.3,0.0;10:0.5,0.3;25:0.3,0.0"  # unused by the variants without multi-stage dropout
  }
  if [ "$g" = pretrain ]; then
    log "start $1: ASR and MT pretraining in $pretrained"
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=$2 "$PRETRAIN_SH" --data-root "$data_root" --tgt-lang "$tgt_lang" --out "$pretrained" \
      --arch "$(recipe_value arch)" --max-tokens "$(recipe_value max_tokens)" --lr "$(recipe_value lr)" \
      --warmup "$(recipe_value warmup)" --max-epoch "$max_epoch" --patience "$patience" --n-avg "$n_avg" \
      --num-workers "$(recipe_value num_workers)"
    return
  fi
  local init=()
  [ "$g" = pre ] && init=(--init-asr "$pretrained/asr/checkpoint_avg$n_avg.pt" --init-mt "$pretrained/mt/checkpoint_avg$n_avg.pt")
  d=$(run_dir "$g" "$s")
  log "start $1 in $d (msd schedule $sched)"
  # shellcheck disable=SC2046
  OMP_NUM_THREADS=$2 "$RUN_SH" $(recipe_flags "$(group_data "$g")" "$d" "$(group_units "$g")") \
    --msd-schedule "$sched" --seed "$s" --variants "$v" --stage 2 --stop-stage 4 "${init[@]}"
}
recipe_value() {  # the value of run.sh flag --$1 in the study's recipe flags (the last one wins)
  local flags v="" prev=""
  read -r -a flags <<< "$(recipe_flags "$data_root" "$exp" "$units")"
  for f in "${flags[@]}"; do [ "$prev" = "--${1//_/-}" ] && v=$f; prev=$f; done
  echo "$v"
}

claims=$exp/.claims
worker() {  # $1 worker id, $2 threads: takes the first unclaimed job that is ready, until none is left
  local j picked pending g s v
  while true; do
    picked=""; pending=0
    for j in "${jobs[@]}"; do
      [ -d "$claims/$j" ] && continue
      pending=1
      ready "$j" || continue
      if mkdir "$claims/$j" 2>/dev/null; then picked=$j; break; fi
    done
    if [ -z "$picked" ]; then
      [ $pending = 0 ] && return 0
      sleep 20; continue
    fi
    IFS=: read -r g s v <<< "$picked"
    if [ "$g" != pretrain ] && [ -f "$(run_dir "$g" "$s")/.done/decode.$v" ]; then log "already finished: $picked"; continue; fi
    if [ "$g" = pretrain ] && [ -f "$pretrained/.done/mt" ]; then log "already pretrained: $pretrained"; continue; fi
    if run_job "$picked" "$2"; then log "done $picked"; else
      log "FAILED $picked (see $exp/study_worker$1.log)"; touch "$claims/$picked/failed"
    fi
  done
}

if [ -n "$from_archive" ]; then
  [ -f "$from_archive/msd_schedule.json" ] && cp -n "$from_archive/msd_schedule.json" "$exp/"
  for bleu in "$from_archive"/seed*/*/bleu-tst-COMMON.json "$from_archive"/mfcc/seed*/*/bleu-tst-COMMON.json \
      "$from_archive"/pretrained/seed*/*/bleu-tst-COMMON.json; do
    [ -f "$bleu" ] || continue
    src=$(dirname "$bleu"); rel=${src#"$from_archive"/}; v=${rel##*/}; dst=$exp/$rel
    [ -f "$dst/bleu-tst-COMMON.json" ] && continue
    mkdir -p "$dst" "$(dirname "$dst")/.done"
    cp -p "$src"/* "$dst/"
    [ -f "$src/../noise_range.json" ] && cp -n "$src/../noise_range.json" "$(dirname "$dst")/"
    for st in train average decode; do touch "$(dirname "$dst")/.done/$st.$v"; done
    log "from the archive: $rel (not trained again)"
  done
  # Table IV's pretrained models, where the archive holds them (study_report.py --archive-pretrained)
  for m in asr mt; do
    ck=$from_archive/pretrain/$m/checkpoint_avg$n_avg.pt
    [ -f "$ck" ] && [ ! -f "$pretrained/.done/$m" ] || continue
    mkdir -p "$pretrained/$m" "$pretrained/.done"
    cp -p "$from_archive/pretrain/$m"/* "$pretrained/$m/"
    touch "$pretrained/.done/$m"
    log "from the archive: pretrain/$m (not pretrained again)"
  done
fi

if [ $report_only = 0 ]; then
  rm -rf "$claims"; mkdir -p "$claims"
  threads=$(( $(nproc) / parallel )); [ "$threads" -ge 1 ] || threads=1
  if [ "$data_root" = data/toy_study ]; then
    $PY scripts/make_toy_corpus.py --out "$data_root" --pairs "$tgt_lang"
  elif [ ! -d "$data/data" ]; then
    echo "--data-root $data_root: no $data/data (the MuST-C release layout: en-$tgt_lang/data/{train,dev,tst-COMMON}/...)" >&2
    exit 1
  fi
  log "prep ($data)"
  # shellcheck disable=SC2046
  "$RUN_SH" $(recipe_flags "$data_root" "$exp" "$units") --stage 0 --stop-stage 0
  # Table IV's pretraining reads the prepared text and FBank, not the units: it trains beside
  # the units stage (a toy HuBERT's pretraining) instead of after it
  pre_pid=""; unit_threads=""
  if has_part table4 && [ "$parallel" -ge 2 ] && [ ! -f "$pretrained/.done/mt" ]; then
    mkdir -p "$claims/pretrain:0:asr_mt"
    ( if run_job pretrain:0:asr_mt "$threads"; then log "done pretrain:0:asr_mt"; else
        log "FAILED pretrain:0:asr_mt (see $exp/study_pretrain.log)"; touch "$claims/pretrain:0:asr_mt/failed"; fi
    ) >> "$exp/study_pretrain.log" 2>&1 &
    pre_pid=$!; unit_threads=$threads
    log "pretraining beside the units stage (log: $exp/study_pretrain.log)"
  fi
  log "$units units ($data)"
  # shellcheck disable=SC2046
  env ${unit_threads:+OMP_NUM_THREADS=$unit_threads} "$RUN_SH" $(recipe_flags "$data_root" "$exp" "$units") --stage 1 --stop-stage 1
  if has_part mfcc; then
    mdata_root=$exp/data_mfcc
    if [ ! -f "$exp/.done/data_mfcc" ]; then
      log "MFCC units in $mdata_root (a hard-linked copy of $data_root/en-$tgt_lang)"
      rm -rf "$mdata_root"; mkdir -p "$mdata_root"
      cp -al "$data" "$mdata_root/en-$tgt_lang"
      # the copy's own units: unlink (not overwrite) the linked ones; TSVs are rewritten by rename
      rm -rf "$mdata_root/en-$tgt_lang"/units.zip "$mdata_root/en-$tgt_lang"/units.json "$mdata_root/en-$tgt_lang"/units_shards
      # shellcheck disable=SC2046
      "$RUN_SH" $(recipe_flags "$mdata_root" "$exp/mfcc" mfcc) --stage 1 --stop-stage 1
      touch "$exp/.done/data_mfcc"
    fi
  fi
fi

if [ $report_only = 0 ]; then
  log "${#jobs[@]} trainings, $parallel at a time ($threads threads each): ${jobs[*]}"
  pids=()
  for ((w = 0; w < parallel; w++)); do
    worker "$w" "$threads" >> "$exp/study_worker$w.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}" $pre_pid; do wait "$p"; done
  failed=$(find "$claims" -name failed | wc -l)
  [ "$failed" = 0 ] || log "$failed trainings failed: $(find "$claims" -name failed -printf '%h ' | sed "s|$claims/||g")"
fi

log "report -> $exp/report"
# shellcheck disable=SC2086
$PY scripts/study_report.py --exp "$exp" --data "$data" --seeds "$seeds" --side-seeds "$side_seeds" \
  --n-avg "$n_avg" --units "$units" ${results:+--results "$results"} \
  --command "scripts/recipes/toy/run_study.sh --data-root $data_root --tgt-lang $tgt_lang --exp $exp --units $units --seeds $seeds --parts $parts"
log "done"
