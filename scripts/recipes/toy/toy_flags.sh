# Settings shared by the toy demo and the toy study (sourced, not run).
#
# Toy-scale choices (the MuST-C recipe's defaults are the paper's):
#   arch s2t_gsgn_tiny, 100 MFCC k-means units, lr 2e-3 with 500 warm-up updates, 15 epochs,
#   5 best checkpoints averaged, greedy dev BLEU after every epoch, CTC (weight 0.3) over the
#   source transcript on the acoustic encoder (as in the stacked acoustic-and-textual encoder
#   the paper builds on; it speeds the tiny model up: FBank-only 93.9% vs 82.6% dev token
#   accuracy at epoch 15, scripts/recipes/toy/run_baseline.sh). The multi-stage dropout
#   schedule "1:0.3,0.0;10:0.5,0.3;25:0.3,0.0" is meant for ~40 MuST-C epochs; it is scaled
#   by 15/40 to the toy's epoch budget: "1:0.3,0.0;4:0.5,0.3;10:0.3,0.0".
TOY_DATA=data/toy
TOY_EXP=exp/toy_demo
TOY_MAX_EPOCH=15
TOY_N_AVG=5
TOY_SCHEDULE="1:0.3,0.0;4:0.5,0.3;10:0.3,0.0"
toy_recipe_flags() {  # $1 data root, $2 exp dir, $3 max epoch, $4 n_avg, $5 schedule
  echo --data-root "$1" --tgt-lang de --exp "$2" --vocab-size 1000 --units mfcc --n-clusters 100 \
    --km-percent 0.5 --arch s2t_gsgn_tiny --max-tokens 10000 --lr 2e-3 --warmup 500 \
    --max-epoch "$3" --patience 10 --n-avg "$4" --num-workers 0 --test-splits tst-COMMON --eval-bleu 1 \
    --ctc-weight 0.3
}
