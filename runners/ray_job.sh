#!/usr/bin/env bash
# Submit an experiment to an existing Ray cluster (its dashboard address in RAY_ADDRESS,
# for example http://head-node:8265). The job joins the cluster with ray.address=auto; every node
# needs selfcritic installed (scripts/setup.sh), as Ray ships only the working directory.
#   RAY_ADDRESS=http://head:8265 runners/ray_job.sh +experiment=nano model.path=/models/moonlight
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster's dashboard address}"
exec .venv/bin/ray job submit --address "$RAY_ADDRESS" --working-dir . -- \
  python -m selfcritic.run ray.address=auto "$@"
