#!/usr/bin/env bash
# Stops a run on every worker of a TPU slice; the TPU keeps running.
set -euo pipefail
source "$(dirname "$0")/common.sh"

heph_usage() {
  cat <<'USAGE'
Usage: tpu/stop.sh --name NAME --zone ZONE [options]

Sends SIGTERM to the training process on every worker (--worker=all), waits up
to --grace-s seconds for it to end, then SIGKILLs what is left. The workdir
keeps the checkpoints: tpu/launch.sh resumes from the newest one.

  --name NAME              TPU name (env HEPH_TPU_NAME)
  --zone ZONE              zone (env HEPH_TPU_ZONE)
  --project PROJECT        gcloud project (env HEPH_TPU_PROJECT)
  --grace-s S              seconds to wait after SIGTERM (default 60)
  --session NAME           the run's session name (default heph)
  --dry-run                Print the commands, run nothing
USAGE
}

OPT_GRACE_S=60
heph_parse_args "grace-s session" "$@"
heph_require name zone
heph_check_session
[[ "${OPT_GRACE_S}" =~ ^[0-9]+$ ]] || heph_die "--grace-s '${OPT_GRACE_S}': \
expected a number of seconds"

pid="$(heph_pid_file)"
heph_ssh all "p=\$(cat ${pid} 2>/dev/null || true); \
if [ -n \"\$p\" ] && kill -0 \"\$p\" 2>/dev/null; then kill -TERM \"\$p\"; \
for i in \$(seq ${OPT_GRACE_S}); do kill -0 \"\$p\" 2>/dev/null || break; \
sleep 1; done; if kill -0 \"\$p\" 2>/dev/null; then kill -KILL \"\$p\"; \
echo \"\$(hostname): killed pid \$p\"; else echo \"\$(hostname): stopped pid \
\$p\"; fi; else echo \"\$(hostname): no run ${OPT_SESSION} going\"; fi; \
rm -f ${pid}"
