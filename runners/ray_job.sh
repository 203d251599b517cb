#!/usr/bin/env bash
# Submit an experiment to an existing Ray cluster as a Ray job and follow its output:
#   RAY_ADDRESS=http://head-node:8265 runners/ray_job.sh +experiment=nano trainer.steps=20
#
# The job's driver runs on the head node: it changes to SELFCRITIC_DIR, runs
# `python -m selfcritic.run ray.address=auto ARGS...` with that checkout's .venv, and so joins the
# cluster it was submitted to. Nothing is uploaded (no --working-dir: a 3.8 GB .venv cannot
# travel, and a job's working directory is deleted after it): this repository and its .venv
# (scripts/setup.sh) must be at SELFCRITIC_DIR on every node of the cluster, for example on a
# shared filesystem. Outputs go to SELFCRITIC_DIR/runs/DATE/TIME/ on the head node unless
# trainer.output_dir=... or hydra.run.dir=... says otherwise. The exit status is 1 when the job
# fails.
#
# Variables:
#   RAY_ADDRESS        the cluster's dashboard (job server) address, e.g. http://head:8265; required
#   SELFCRITIC_DIR     the repository's path on the cluster's nodes (default: this checkout's path)
#   SELFCRITIC_PYTHON  the Python the job runs (default: $SELFCRITIC_DIR/.venv/bin/python)
#   RAY_JOB_ARGS       more `ray job submit` options, split on spaces, e.g.
#                      "--no-wait --submission-id nano-1" (then: ray job logs -f nano-1)
#   RAY_AUTH_MODE, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
#                      Ray's token authentication; when RAY_AUTH_MODE is unset and a token is at
#                      hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), it is sent:
#                      `ray start` turns token authentication on by itself when it finds a token,
#                      but `ray job submit` (Ray 2.60) does not look for one unless told.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RAY_ADDRESS:?set RAY_ADDRESS to the dashboard address of the cluster, e.g. http://head:8265}"
dir=${SELFCRITIC_DIR:-$(pwd)}
python=${SELFCRITIC_PYTHON:-$dir/.venv/bin/python}

if [ -x .venv/bin/ray ]; then
  ray=.venv/bin/ray
elif command -v ray >/dev/null 2>&1; then
  ray=ray
else
  echo "ray_job.sh: no ray command: run scripts/setup.sh (or pip install 'ray[default]')" >&2
  exit 2
fi

if [ -z "${RAY_AUTH_MODE:-}" ] \
  && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; }; then
  export RAY_AUTH_MODE=token
fi

# shellcheck disable=SC2206  # RAY_JOB_ARGS is a list of options, split on purpose
extra=(${RAY_JOB_ARGS:-})
# `ray job submit` quotes each word of the entrypoint (shlex.join), so overrides with spaces or
# shell characters reach Hydra as typed.
# shellcheck disable=SC2016  # $1 and $@ are the job shell's, expanded on the head node
exec "$ray" job submit --address "$RAY_ADDRESS" "${extra[@]}" -- \
  bash -c 'cd "$1" && shift && exec "$@"' selfcritic-job "$dir" \
  "$python" -u -m selfcritic.run ray.address=auto "$@"
