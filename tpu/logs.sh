#!/usr/bin/env bash
# Shows the training log of a run on a TPU slice.
set -euo pipefail
source "$(dirname "$0")/common.sh"

heph_usage() {
  cat <<'USAGE'
Usage: tpu/logs.sh --name NAME --zone ZONE [options]

Prints the end of $HOME/heph_logs/SESSION.log on a worker (default worker 0,
the primary, which logs the metrics).

  --name NAME              TPU name (env HEPH_TPU_NAME)
  --zone ZONE              zone (env HEPH_TPU_ZONE)
  --project PROJECT        gcloud project (env HEPH_TPU_PROJECT)
  --worker W               worker index, or "all" to see every worker's log
                           (default 0)
  --lines N                how many lines (default 100)
  --follow                 keep following the log (Ctrl-C stops)
  --session NAME           the run's session name (default heph)
  --dry-run                Print the commands, run nothing
USAGE
}

OPT_WORKER=0
OPT_LINES=100
OPT_FOLLOW=0
heph_parse_args "worker lines follow session" "$@"
heph_require name zone
heph_check_worker "${OPT_WORKER}"
heph_check_session
[[ "${OPT_LINES}" =~ ^[0-9]+$ ]] || heph_die "--lines '${OPT_LINES}': \
expected a number"

follow=""
((OPT_FOLLOW)) && follow=" -F"
log="$(heph_log_file)"
heph_ssh "${OPT_WORKER}" "echo \"== \$(hostname): ${log}\"; \
tail -n ${OPT_LINES}${follow} ${log}"
