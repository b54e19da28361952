#!/usr/bin/env bash
# Deletes a TPU slice (or the queued resource that holds it).
set -euo pipefail
source "$(dirname "$0")/common.sh"

heph_usage() {
  cat <<'USAGE'
Usage: tpu/delete.sh --name NAME --zone ZONE [options]

Deletes the TPU VM slice NAME; with --queued, the queued resource NAME and
its slice. Data on the workers is lost; the gs:// workdir is not touched.

  --name NAME              TPU name (env HEPH_TPU_NAME)
  --zone ZONE              zone (env HEPH_TPU_ZONE)
  --project PROJECT        gcloud project (env HEPH_TPU_PROJECT)
  --queued                 the slice was made with create.sh --queued
  --yes                    do not ask for confirmation
  --dry-run                Print the commands, run nothing
USAGE
}

OPT_YES=0
heph_parse_args "queued yes" "$@"
heph_require name zone

heph_scope_flags
quiet=()
((OPT_YES)) && quiet=(--quiet)
if ((OPT_QUEUED)); then
  heph_run gcloud compute tpus queued-resources delete "${OPT_NAME}" \
    "${HEPH_SCOPE[@]}" --force "${quiet[@]}"
else
  heph_run gcloud compute tpus tpu-vm delete "${OPT_NAME}" "${HEPH_SCOPE[@]}" \
    "${quiet[@]}"
fi
