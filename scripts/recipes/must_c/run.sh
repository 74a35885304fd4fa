#!/usr/bin/env bash
# GSGN on MuST-C: prepare -> units -> train each variant -> average -> decode -> table.
#
# Expected data (the MuST-C v1 release, or the toy corpus from scripts/make_toy_corpus.py):
#   $DATA_ROOT/en-$TGT/data/{train,dev,tst-COMMON[,tst-HE]}/wav/*.wav
#   $DATA_ROOT/en-$TGT/data/{split}/txt/{split}.yaml, {split}.en, {split}.$TGT
#
# Stages and what they write:
#   0 prep     $DATA_ROOT/en-$TGT/{fbank80.zip,{split}_st.tsv,spm_unigram*_{st,src}.*,config_st.yaml}
#   1 units    $DATA_ROOT/en-$TGT/units.zip and a `units` column in every TSV
#              (--units ssl (or hubert): --ssl-checkpoint + --km-model, e.g. hubert_base_ls960.pt and
#               hubert_base_ls960_L9_km500.bin; --units mfcc: k-means learned here, $EXP/km_mfcc.bin;
#               --units hubert-toy: a small HuBERT pretrained here first, $EXP/hubert_toy/hubert.pt;
#               --units ssl:PATH:LAYER: that SSL checkpoint's layer, k-means learned here)
#              Several S-feature views: --units SPEC,SPEC,... (e.g. hubert-toy,mfcc or
#               ssl:hubert.pt:9,ssl:wavlm_dir:6; NAME=SPEC names a set): the first is the default set
#               (units.zip, column units), each further one its own set, units_NAME.zip and column
#               units_NAME (gsgn-extract-units --name); --n-clusters K or K1,K2,...; the models then
#               read them all (--unit-views units,NAME,...), the unit and noise variants the first only.
#   2 train    $EXP/{variant}/checkpoint*.pt, train.log (fairseq JSON log), tensorboard/
#   3 average  $EXP/{variant}/checkpoint_avg$N_AVG.pt (+ .json with the averaged epochs)
#   4 decode   $EXP/{variant}/generate-{split}.txt, bleu-{split}.json (sacreBLEU and chrF + signatures,
#              multi-stage-dropout models with the paper's protocol, --inference-branch sample, and
#              also with the fusion input: generate-{split}.fusion.txt, bleu-{split}.fusion.json;
#              D- lines against the TSV's tgt_text; no --post-process: config_st.yaml's
#              bpe_tokenizer already detokenizes, a second SentencePiece pass deletes the spaces)
#   5 table    $EXP/results.md
# A finished stage leaves $EXP/.done/<stage>[.<variant>]; rerunning skips it.
#
# Precision: --precision auto trains in bf16 on a GPU that supports it (fp16 on older ones, fp32
# on CPU); the plugin keeps fairseq 0.12's --bf16 on the GPU (gsgn_fairseq/fairseq_patches/bf16_cuda.py).
# Data parallel: --nproc N trains with N processes on this node (torchrun --standalone: one
# per GPU, nccl; on a machine without GPUs N CPU processes, gloo); --train-launcher "CMD" puts
# any launcher in front of fairseq-train instead, e.g. for node 0 of 2:
#   --train-launcher "torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 --no-python"
# (the same command on CPUs and GPUs: gsgn_fairseq/fairseq_patches/distributed_launch.py).
# Effective batch = max_tokens x processes x update_freq: keep it equal to compare runs.
set -euo pipefail

log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (${BASH_SOURCE[0]##*/}:${BASH_LINENO[0]}) $*"; }

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# PY (the Python with fairseq) and BIN (where fairseq-train/-generate are) may come from the environment.
PY=${PY:-$ROOT_DIR/.venv/bin/python}
BIN=${BIN:-$(dirname "$PY")}

# ---- options (override with --name value) ----
stage=0
stop_stage=5
data_root=data/must_c
tgt_lang=de
exp=""
vocab_size=8000
jobs=$(nproc)
units=mfcc               # a registered feature back-end (mfcc | ssl, alias hubert) | hubert-toy (pretrain a small HuBERT here)
                         # | ssl:PATH:LAYER; a comma list for several S-feature views ([NAME=]SPEC each)
ssl_checkpoint=""        # --units ssl: a fairseq HuBERT/wav2vec 2.0 .pt or a Hugging Face model directory
hubert_checkpoint=""     # the same (older name)
km_model=""
layer=9
hubert_toy_layer=1       # layer of the 4-layer toy HuBERT whose features are clustered (best in unit_quality.py)
n_clusters=500           # K, or K1,K2,... one per --units entry
km_percent=0.1
variants=fbank,unit,gsgn,gsgn_drop
arch=s2t_gsgn
max_tokens=40000
update_freq=1
lr=2e-3
warmup=4000
max_epoch=100
patience=10
seed=1
msd_schedule="1:0.3,0.0;10:0.5,0.3;25:0.3,0.0"
gate_target=factorized   # factorized | exact (README "Choices": which reading, at what cost)
gate_target_interval=10  # exact only: a target every N updates
gate_target_granularity=utterance
gate_loss_weight=1.0
unit_gate=one            # one (Eq. 10-11's constraint) | learned (a deviation)
adapter=none             # none (one residual stream, as s2t_transformer) | linear-ln (SATE-style adapter)
n_avg=10
beam=5
lenpen=1.0
inference_branch=auto    # auto: the paper's protocol (sample: the third stage's draw per utterance) for the
                         # multi-stage-dropout variants, each model's own input for the others; or one of
                         # fusion|fbank|unit|unit:NAME|sample for every two-view variant
num_workers=2
ctc_weight=0             # > 0: CTC over the source transcript on the acoustic encoder
eval_bleu=0              # 1: greedy dev BLEU after every epoch (logged as valid_bleu; multi-stage-dropout
                         # variants also valid_bleu_sample, with the test protocol's branch draw)
keep_last_epochs=1       # -1 keeps every epoch checkpoint
precision=auto           # auto (bf16 on a GPU that has it, else fp16 on a GPU, fp32 on CPU) | bf16 | fp16 | fp32
noise_range=""           # MIN,MAX of the noise variants; empty: measured on the gsgn run's unit view over train
train_extra=""
init_asr=""              # Table IV: an ASR checkpoint (pretrain.sh) initialising the subsampler and acoustic encoder
init_mt=""               # Table IV: an MT checkpoint (pretrain.sh) initialising the textual encoder and the decoder
nproc=1                  # > 1: data-parallel training with that many processes on this node (torchrun)
train_launcher=""        # a command put in front of fairseq-train (multi-node torchrun); overrides --nproc
test_splits=""

while [ $# -gt 0 ]; do
  name=${1#--}; name=${name//-/_}
  [ $# -ge 2 ] || { echo "missing value for $1" >&2; exit 1; }
  declare -p "$name" >/dev/null 2>&1 || { echo "unknown option $1" >&2; exit 1; }
  printf -v "$name" '%s' "$2"; shift 2
done

data=$data_root/en-$tgt_lang
exp=${exp:-exp/must_c_en-$tgt_lang}
mkdir -p "$exp/.done"
done_mark() { touch "$exp/.done/$1"; }
is_done() { [ -f "$exp/.done/$1" ]; }
if [ -z "$test_splits" ]; then
  test_splits=tst-COMMON
  [ -f "$data/data/tst-HE/txt/tst-HE.yaml" ] && test_splits=tst-COMMON,tst-HE
fi

variant_flags() {
  local common="--criterion label_smoothed_cross_entropy_with_gate --gate-target $gate_target --gate-target-interval $gate_target_interval
    --gate-target-granularity $gate_target_granularity --gate-loss-weight $gate_loss_weight --unit-gate $unit_gate --adapter $adapter"
  case $1 in
    fbank)          echo "$common --fusion fbank $first_view_flags" ;;
    unit)           echo "$common --fusion unit $first_view_flags" ;;
    gsgn)           echo "$common --fusion gsgn" ;;
    gsgn_drop)      echo "$common --fusion gsgn --multi-stage-dropout --msd-schedule $msd_schedule" ;;
    gsgn_drop_nogate) echo "$common --fusion gsgn --multi-stage-dropout --msd-schedule $msd_schedule --gate-loss-weight 0" ;;
    gsgn_drop_exact)  echo "$common --fusion gsgn --multi-stage-dropout --msd-schedule $msd_schedule --gate-target exact" ;;
    concat)         echo "$common --fusion concat" ;;
    noise_sum)      echo "$common --fusion noise-sum --noise-range=$noise_range $first_view_flags" ;;
    noise_replace)  echo "$common --fusion noise-replace --noise-range=$noise_range $first_view_flags" ;;
    noise_replace_drop) echo "$common --fusion noise-replace --noise-range=$noise_range --multi-stage-dropout --msd-schedule $msd_schedule $first_view_flags" ;;
    *) echo "unknown variant '$1' (fbank unit gsgn gsgn_drop gsgn_drop_nogate gsgn_drop_exact concat noise_sum noise_replace noise_replace_drop)" >&2; return 1 ;;
  esac
}

has_msd() { variant_flags "$1" | grep -q -- --multi-stage-dropout; }
variant_view_flags() { variant_flags "$1" | grep -o -- "--unit-views .*" || true; }  # a variant's own unit sets
two_view() { case $1 in gsgn*|concat*|noise_replace*) return 0 ;; *) return 1 ;; esac; }
main_branch() {  # the inference branch of a variant's main decode
  if [ "$inference_branch" = auto ]; then
    if has_msd "$1"; then echo sample; else echo fusion; fi
  elif two_view "$1"; then echo "$inference_branch"
  else echo fusion; fi  # one-view models have only their own input
}
# --units: a comma list of [NAME=]SPEC, SPEC one of the registered feature back-ends
# (gsgn_fairseq/prep/ssl_features.py), hubert-toy or ssl:PATH:LAYER; the first is the default set
features=$("$PY" -c "from gsgn_fairseq.prep.ssl_features import FEATURES; print(' '.join(sorted(FEATURES)))")
IFS=, read -r -a unit_specs <<< "$units"
IFS=, read -r -a unit_ks <<< "$n_clusters"
[ "${#unit_specs[@]}" -ge 1 ] || { echo "--units needs at least one unit set" >&2; exit 1; }
if [ "${#unit_ks[@]}" -eq 1 ]; then
  for ((i = 1; i < ${#unit_specs[@]}; i++)); do unit_ks+=("${unit_ks[0]}"); done
fi
[ "${#unit_ks[@]}" -eq "${#unit_specs[@]}" ] || {
  echo "--n-clusters $n_clusters: ${#unit_ks[@]} values for the ${#unit_specs[@]} --units entries" >&2; exit 1; }
unit_names=()
unit_kinds=()
for i in "${!unit_specs[@]}"; do
  spec=${unit_specs[$i]} name=""
  case $spec in *=*) name=${spec%%=*}; spec=${spec#*=} ;; esac
  case $spec in
    ssl:*:*) kind=ssl ;;
    *) case " $features hubert-toy " in
         *" $spec "*) kind=$spec ;;
         *) echo "--units must be one of: $features hubert-toy; got '${unit_specs[$i]}' (or ssl:PATH:LAYER; several unit sets: a comma list of [NAME=]SPEC)" >&2; exit 1 ;;
       esac ;;
  esac
  if [ "$i" -eq 0 ]; then name=units  # the default set: units.zip, column units
  elif [ -z "$name" ]; then  # a name from the spec: mfcc, hubert_toy, <checkpoint>_L<layer>
    case $spec in
      ssl:*:*) rest=${spec#ssl:}; ckpt=${rest%:*}; name=$(basename "${ckpt%/}"); name=${name%.*}_L${rest##*:} ;;
      *) name=$spec ;;
    esac
    name=${name//[^A-Za-z0-9_-]/_}
  fi
  for n in "${unit_names[@]}"; do
    [ "$n" != "$name" ] || { echo "--units: two unit sets named '$name'; name one with NAME=SPEC" >&2; exit 1; }
  done
  unit_names+=("$name")
  unit_kinds+=("$spec")
done
unit_views=$(IFS=,; echo "${unit_names[*]}")
view_flags="--num-units $n_clusters"
first_view_flags=""
if [ "${#unit_names[@]}" -gt 1 ]; then
  view_flags="--unit-views $unit_views --num-units $(IFS=,; echo "${unit_ks[*]}")"
  first_view_flags="--unit-views units --num-units ${unit_ks[0]}"  # the variants of one S-feature view
fi
ssl_checkpoint=${ssl_checkpoint:-$hubert_checkpoint}
case $inference_branch in
  auto|fusion|fbank|unit|sample) ;;
  unit:*) case ",$unit_views," in *",${inference_branch#unit:},"*) ;;
            *) echo "--inference-branch $inference_branch: no unit set ${inference_branch#unit:} (sets: $unit_views)" >&2; exit 1 ;;
          esac ;;
  *) echo "--inference-branch must be auto, fusion, fbank, unit, unit:NAME or sample, got '$inference_branch'" >&2; exit 1 ;;
esac

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ] && ! is_done prep; then
  log "stage 0: prepare $data (fbank, SentencePiece $vocab_size, config)"
  "$BIN/gsgn-prep-mustc" --data-root "$data_root" --tgt-lang "$tgt_lang" \
    --vocab-size "$vocab_size" --jobs "$jobs"
  done_mark prep
fi

# one unit set: its units (gsgn-extract-units --name), k-means learned here when none is given
make_unit_set() {  # NAME SPEC K
  local name=$1 spec=$2 k=$3 ckpt="" lyr="" km="" kind
  local mark=units; [ "$name" = units ] || mark=units.$name
  is_done "$mark" && return 0
  kind=$spec
  case $spec in
    hubert-toy)
      ckpt=$exp/hubert_toy/hubert.pt
      if [ ! -f "$ckpt" ]; then
        log "stage 1: pretrain a small HuBERT on $data (fairseq hubert_pretraining, MFCC k-means targets)"
        "$BIN/gsgn-pretrain-hubert" --data-root "$data_root" --tgt-lang "$tgt_lang" \
          --work-dir "$exp/hubert_toy"
      fi
      kind=ssl; lyr=$hubert_toy_layer ;;
    ssl:*:*)
      local rest=${spec#ssl:}
      kind=ssl; ckpt=${rest%:*}; lyr=${rest##*:} ;;
    mfcc) ;;
    *) ckpt=$ssl_checkpoint; lyr=$layer; [ "$name" = units ] && km=$km_model ;;  # ssl / hubert: the flags
  esac
  local set_flags=()
  [ "$name" = units ] || set_flags=(--name "$name")
  if [ "$kind" != mfcc ]; then
    [ -e "$ckpt" ] || { echo "--units $spec needs an SSL checkpoint (--ssl-checkpoint FILE_OR_DIR, or ssl:PATH:LAYER)" >&2; exit 1; }
    if [ -z "$km" ]; then
      km=$exp/km_${name}_${kind}_L${lyr}_$k.bin
      [ "$name" = units ] && km=$exp/km_${kind}_L${lyr}_$k.bin
      if [ ! -f "$km" ]; then
        log "stage 1: learn k-means ($k) on $ckpt layer $lyr"
        "$BIN/gsgn-learn-kmeans" --data-root "$data_root" --tgt-lang "$tgt_lang" \
          --feature "$kind" --checkpoint "$ckpt" --layer "$lyr" \
          --n-clusters "$k" --percent "$km_percent" --out "$km"
      fi
    fi
    log "stage 1: unit set $name: layer-$lyr units of $ckpt with $km"
    "$BIN/gsgn-extract-units" --data-root "$data_root" --tgt-lang "$tgt_lang" "${set_flags[@]}" \
      --feature "$kind" --checkpoint "$ckpt" --layer "$lyr" --km-model "$km"
  else
    km=${km_model:-}
    [ "$name" = units ] || km=""
    if [ -z "$km" ]; then
      km=$exp/km_mfcc_$k.bin
      [ "$name" = units ] || km=$exp/km_${name}_mfcc_$k.bin
    fi
    if [ ! -f "$km" ]; then
      log "stage 1: learn k-means ($k) on MFCC features"
      "$BIN/gsgn-learn-kmeans" --data-root "$data_root" --tgt-lang "$tgt_lang" \
        --feature mfcc --n-clusters "$k" --percent "$km_percent" --out "$km"
    fi
    log "stage 1: unit set $name: MFCC k-means units"
    "$BIN/gsgn-extract-units" --data-root "$data_root" --tgt-lang "$tgt_lang" "${set_flags[@]}" \
      --feature mfcc --km-model "$km"
  fi
  done_mark "$mark"
}

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  for i in "${!unit_names[@]}"; do
    make_unit_set "${unit_names[$i]}" "${unit_kinds[$i]}" "${unit_ks[$i]}"
  done
fi

case $precision in
  auto) precision=$("$PY" -c "import torch; c = torch.cuda.is_available(); print('fp32' if not c else 'bf16' if torch.cuda.is_bf16_supported() else 'fp16')") ;;
  bf16|fp16|fp32) ;;
  *) echo "--precision must be auto, bf16, fp16 or fp32, got '$precision'" >&2; exit 1 ;;
esac
precision_flags=()
[ "$precision" = fp32 ] || precision_flags=("--$precision")

if [ -z "$train_launcher" ] && [ "$nproc" -gt 1 ]; then
  train_launcher="$BIN/torchrun --standalone --nproc_per_node $nproc --no-python"
fi
read -r -a launcher <<< "$train_launcher"

# Table II's noise spans the S-feature's range over the training set (paper Sec. IV-A):
# measured on the gsgn run's unit view once it is trained, unless --noise-range is given.
measure_noise_range() {
  local json=$exp/noise_range.json ckpt=$exp/gsgn/checkpoint_avg$n_avg.pt
  if [ ! -f "$json" ]; then
    [ -f "$ckpt" ] || { echo "the noise variants need --noise-range MIN,MAX or the gsgn variant trained and averaged first ($ckpt; list gsgn before them in --variants)" >&2; exit 1; }
    log "noise range: the unit view of $ckpt over train_st"
    "$BIN/gsgn-measure-unit-range" --path "$ckpt" --data "$data" --subset train_st --json "$json" >/dev/null
  fi
  noise_range=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['noise_range'])" "$json")
  log "noise range (S-feature min,max over train_st, $json): $noise_range"
}

IFS=, read -r -a variant_list <<< "$variants"
for v in "${variant_list[@]}"; do
  case $v in noise_*) [ -n "$noise_range" ] || measure_noise_range ;; esac
  flags=$(variant_flags "$v")
  run=$exp/$v
  if [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && ! is_done "train.$v"; then
    log "stage 2: train $v ($arch, $precision${train_launcher:+, $train_launcher})"
    mkdir -p "$run"
    bleu_flags=()
    ctc_flags=()
    [ "$ctc_weight" != 0 ] && ctc_flags=(--use-ctc --ctc-weight "$ctc_weight")
    init_flags=()
    [ -n "$init_asr" ] && init_flags+=(--load-pretrained-acoustic-encoder-from "$init_asr")
    [ -n "$init_mt" ] && init_flags+=(--load-pretrained-text-encoder-from "$init_mt" --load-pretrained-decoder-from "$init_mt")
    # multi-stage-dropout models: dev BLEU with the test protocol (sample) beside the fusion input
    [ "$eval_bleu" = 1 ] && bleu_flags=(--eval-bleu --eval-bleu-args '{"beam": 1}')
    [ "$eval_bleu" = 1 ] && has_msd "$v" && bleu_flags+=(--eval-bleu-branches sample)
    # shellcheck disable=SC2086
    "${launcher[@]}" "$BIN/fairseq-train" "$data" --user-dir "$ROOT_DIR/gsgn_fairseq" \
      --task speech_to_text_multiview --config-yaml config_st.yaml $view_flags \
      --train-subset train_st --valid-subset dev_st \
      --arch "$arch" $flags --label-smoothing 0.1 --report-accuracy \
      --optimizer adam --adam-betas '(0.9, 0.98)' --lr "$lr" --lr-scheduler inverse_sqrt \
      --warmup-updates "$warmup" --clip-norm 10.0 --max-tokens "$max_tokens" --update-freq "$update_freq" \
      --max-epoch "$max_epoch" --patience "$patience" --seed "$seed" --num-workers "$num_workers" \
      --save-dir "$run" --keep-best-checkpoints "$n_avg" --keep-last-epochs "$keep_last_epochs" "${bleu_flags[@]}" "${ctc_flags[@]}" "${init_flags[@]}" "${precision_flags[@]}" \
      --log-format json --log-interval 50 --tensorboard-logdir "$run/tensorboard" \
      --skip-invalid-size-inputs-valid-test $train_extra 2>&1 | tee -a "$run/train.log"
    done_mark "train.$v"
  fi
  if [ $stage -le 3 ] && [ $stop_stage -ge 3 ] && ! is_done "average.$v"; then
    log "stage 3: average the $n_avg best checkpoints of $v"
    "$BIN/gsgn-average-checkpoints" --inputs "$run" \
      --num-best-checkpoints "$n_avg" --output "$run/checkpoint_avg$n_avg.pt"
    done_mark "average.$v"
  fi
  if [ $stage -le 4 ] && [ $stop_stage -ge 4 ] && ! is_done "decode.$v"; then
    IFS=, read -r -a split_list <<< "$test_splits"
    # main decode (the table's BLEU) and, for multi-stage-dropout models, the fusion input beside it
    decodes=("$(main_branch "$v"):")
    has_msd "$v" && decodes+=("fusion:.fusion")
    for s in "${split_list[@]}"; do
      for d in "${decodes[@]}"; do
        branch=${d%:*}; suffix=${d##*:}  # the branch may be unit:NAME
        log "stage 4: decode $v on $s (beam $beam, lenpen $lenpen, inference branch $branch)"
        "$BIN/fairseq-generate" "$data" --user-dir "$ROOT_DIR/gsgn_fairseq" \
          --task speech_to_text_multiview --config-yaml config_st.yaml $view_flags $(variant_view_flags "$v") \
          --gen-subset "${s}_st" --path "$run/checkpoint_avg$n_avg.pt" \
          --model-overrides "{'inference_branch': '$branch'}" \
          --beam "$beam" --lenpen "$lenpen" --max-tokens 50000 --required-batch-size-multiple 1 --scoring sacrebleu \
          > "$run/generate-$s$suffix.txt"
        "$BIN/gsgn-score" "$run/generate-$s$suffix.txt" --tsv "$data/${s}_st.tsv" \
          --json "$run/bleu-$s$suffix.json"
      done
    done
    done_mark "decode.$v"
  fi
done

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "stage 5: results table"
  "$PY" "$ROOT_DIR/scripts/results_table.py" --exp-dir "$exp" --variants "$variants" \
    --splits "$test_splits" --out "$exp/results.md"
fi
