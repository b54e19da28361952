#!/usr/bin/env bash
# Runs one command in the code directory, with the venv, on TPU workers.
set -euo pipefail
source "$(dirname "$0")/common.sh"

heph_usage() {
  cat <<'USAGE'
Usage: tpu/run.sh --name NAME --zone ZONE [options] -- COMMAND [ARGS...]

Runs COMMAND in the code directory with the venv's bin first on PATH, in the
foreground, on one worker or on all (a multi-host JAX program must run on all
workers at once: --worker all). Examples:
  tpu/run.sh --name N --zone Z --worker 0 -- python -m heph_jax.aot \
    --config configs/llama3_8b_stage1.py --topology v5p-64
  tpu/run.sh --name N --zone Z -- python -c 'import jax; print(jax.devices())'

  --name NAME              TPU name (env HEPH_TPU_NAME)
  --zone ZONE              zone (env HEPH_TPU_ZONE)
  --project PROJECT        gcloud project (env HEPH_TPU_PROJECT)
  --worker W               worker index or "all" (default all)
  --env KEY=VALUE          environment for the command (repeatable)
  --remote-dir DIR         code directory on the workers (default $HOME/heph_jax)
  --venv DIR               virtual environment on the workers ($HOME/heph_venv)
  --dry-run                Print the commands, run nothing
USAGE
}

OPT_WORKER=all
heph_parse_args "worker env remote-dir venv" "$@"
heph_require name zone
heph_check_worker "${OPT_WORKER}"
heph_check_remote_path remote-dir "${OPT_REMOTE_DIR}"
heph_check_remote_path venv "${OPT_VENV}"
((${#HEPH_EXTRA_ARGS[@]})) || heph_die "no command: put it after --"

heph_ssh "${OPT_WORKER}" "set -e; cd ${OPT_REMOTE_DIR}; \
export PATH=${OPT_VENV}/bin:\$PATH; $(heph_env_prefix)$(heph_join \
"${HEPH_EXTRA_ARGS[@]}")"
