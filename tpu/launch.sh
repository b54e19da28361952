#!/usr/bin/env bash
# Starts the same training command on every worker of a TPU slice.
set -euo pipefail
source "$(dirname "$0")/common.sh"

heph_usage() {
  cat <<'USAGE'
Usage: tpu/launch.sh --name NAME --zone ZONE --config FILE --workdir gs://... \
         [options] [-- more training flags]

Runs `python -m heph_jax.train --config FILE --workdir gs://...` on every
worker at once (--worker=all), detached (setsid nohup), logging to
$HOME/heph_logs/SESSION.log on each worker. Run it again after a preemption
(on the recreated slice, after tpu/setup.sh): training resumes from the newest
checkpoint in the workdir.

  --name NAME              TPU name (env HEPH_TPU_NAME)
  --zone ZONE              zone (env HEPH_TPU_ZONE)
  --project PROJECT        gcloud project (env HEPH_TPU_PROJECT)
  --config FILE            config file, relative to the repo, e.g.
                           configs/llama3_8b_stage1.py
  --workdir gs://B/P       run directory (checkpoints, summaries); must be on
                           GCS so that every worker sees the same one
  --coordinator-port N     pin jax.distributed's coordinator port (e.g. 8476
                           where JAX's default 8482 is firewalled)
  --env KEY=VALUE          environment for the run (repeatable), e.g.
                           LIBTPU_INIT_ARGS=...
  --session NAME           names the log and pid files (default heph)
  --remote-dir DIR         code directory on the workers (default $HOME/heph_jax)
  --venv DIR               virtual environment on the workers ($HOME/heph_venv)
  --dry-run                Print the commands, run nothing
  -- FLAGS...              passed on to heph_jax.train, e.g.
                           -- --config.num_train_steps=2000
USAGE
}

OPT_CONFIG=""
OPT_WORKDIR=""
OPT_COORDINATOR_PORT=""
heph_parse_args "config workdir coordinator-port env session remote-dir venv" \
  "$@"
heph_require name zone config workdir
heph_check_remote_path remote-dir "${OPT_REMOTE_DIR}"
heph_check_remote_path venv "${OPT_VENV}"
heph_check_session
[[ "${OPT_WORKDIR}" =~ ^gs://[^/]+ ]] || heph_die "--workdir '${OPT_WORKDIR}': \
expected gs://BUCKET/PATH (every worker must see the same directory)"
if [[ -n "${OPT_COORDINATOR_PORT}" ]]; then
  [[ "${OPT_COORDINATOR_PORT}" =~ ^[0-9]+$ ]] \
    && ((OPT_COORDINATOR_PORT > 0 && OPT_COORDINATOR_PORT < 65536)) \
    || heph_die "--coordinator-port '${OPT_COORDINATOR_PORT}': expected a TCP \
port 1..65535"
fi

train=("${OPT_VENV}/bin/python" -m heph_jax.train --config "${OPT_CONFIG}"
       --workdir "${OPT_WORKDIR}")
if [[ -n "${OPT_COORDINATOR_PORT}" ]]; then
  train+=("--config.distributed.coordinator_port=${OPT_COORDINATOR_PORT}")
fi
train+=("${HEPH_EXTRA_ARGS[@]}")
# The venv path stays unquoted so that $HOME expands on the worker.
train_line="${OPT_VENV}/bin/python $(heph_join "${train[@]:1}")"

log="$(heph_log_file)"
pid="$(heph_pid_file)"
env_prefix="PYTHONUNBUFFERED=1 $(heph_env_prefix)"
remote="set -e; mkdir -p $(heph_log_dir); \
if [ -f ${pid} ] && kill -0 \"\$(cat ${pid})\" 2>/dev/null; then \
echo \"heph_jax: run ${OPT_SESSION} is still going on \$(hostname); stop it \
with tpu/stop.sh first\" >&2; exit 1; fi; \
cd ${OPT_REMOTE_DIR}; echo \"=== launch \$(date -u +%FT%TZ) ===\" >> ${log}; \
${env_prefix}setsid nohup ${train_line} >> ${log} 2>&1 < /dev/null & \
echo \$! > ${pid}; echo \"started on \$(hostname): pid \$(cat ${pid}), log ${log}\""
heph_ssh all "${remote}"
if ((!OPT_DRY_RUN)); then
  echo "Follow the primary's log: tpu/logs.sh --name ${OPT_NAME} --zone \
${OPT_ZONE} --follow" >&2
fi
