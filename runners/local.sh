#!/usr/bin/env bash
# Run an experiment on this machine: set-up if needed, then the entry point with your overrides.
#   runners/local.sh +experiment=nano trainer.steps=20
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m selfcritic.run "$@"
