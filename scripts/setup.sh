#!/usr/bin/env bash
# Creates .venv (Python 3.11) with the pinned stack and installs gsgn_fairseq in editable
# mode. Idempotent: a second run only checks a stamp and returns in seconds.
#
#   scripts/setup.sh            # install (or verify) everything
#   source .venv/bin/activate   # afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[setup $(date +%H:%M:%S)] $*"; }

TORCH_VERSION=2.11.0
FAIRSEQ_VERSION=0.12.3.1
VENV=${GSGN_VENV:-.venv}

# 1. System voice for the toy corpus.
if ! command -v espeak-ng >/dev/null 2>&1; then
  log "installing espeak-ng (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi

# 2. Virtual environment.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || { log "creating $VENV with $PY"; "$PY" -m venv "$VENV"; }
PIP="$VENV/bin/python -m pip"

# The stamp covers everything this script installs; editing the pins re-runs the install.
STAMP="$VENV/.gsgn-setup-$(cat scripts/setup.sh requirements.txt setup.py | sha1sum | cut -c1-12)"
if [ -f "$STAMP" ]; then
  log "environment up to date ($STAMP)"
  exit 0
fi

log "installing torch==$TORCH_VERSION torchaudio==$TORCH_VERSION and build tools"
$PIP install -q --disable-pip-version-check \
  "torch==$TORCH_VERSION" "torchaudio==$TORCH_VERSION" \
  numpy==1.26.4 cython==3.0.12 setuptools==75.8.0 wheel==0.45.1 ninja==1.11.1.4

if ! "$VENV/bin/python" -c "import fairseq, sys; sys.exit(fairseq.__version__ < '0.12')" 2>/dev/null; then
  log "building fairseq-fixed==$FAIRSEQ_VERSION against torch $TORCH_VERSION (about 2 minutes)"
  $PIP install -q --disable-pip-version-check --no-build-isolation \
    --no-binary fairseq-fixed "fairseq-fixed==$FAIRSEQ_VERSION"
fi

log "installing pinned requirements and gsgn_fairseq (editable)"
$PIP install -q --disable-pip-version-check -r requirements.txt
$PIP install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import gsgn_fairseq, fairseq, torch, torchaudio; print('gsgn_fairseq OK: torch', torch.__version__, 'fairseq', fairseq.__version__)"
rm -f "$VENV"/.gsgn-setup-*
touch "$STAMP"
log "done"
