#!/usr/bin/env bash
# MuST-C En-De: the shared recipe with the pair set. Other options pass through, e.g.
#   bash --data-root /data/must_c --units ssl --ssl-checkpoint hubert_base_ls960.pt \
#      --km-model hubert_base_ls960_L9_km500.bin --stage 0 --stop-stage 5
exec "$(dirname "$0")/run.sh" --tgt-lang de "$@"
