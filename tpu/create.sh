#!/usr/bin/env bash
# Creates a TPU VM slice (or a queued resource that becomes one).
set -euo pipefail
source "$(dirname "$0")/common.sh"

heph_usage() {
  cat <<'USAGE'
Usage: tpu/create.sh --name NAME --zone ZONE --accelerator TYPE [options]

Creates the TPU VM slice NAME (all its workers).

  --name NAME              TPU name (env HEPH_TPU_NAME)
  --zone ZONE              e.g. us-east5-a (env HEPH_TPU_ZONE)
  --project PROJECT        gcloud project (env HEPH_TPU_PROJECT; default: gcloud's)
  --accelerator TYPE       gcloud accelerator type, e.g. v5p-64 (v4/v5p count
                           TensorCores, v5e "v5litepod-N" and v6e count chips)
  --runtime-version V      TPU software version; default by family: v5p
                           v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v6e
                           v2-alpha-tpuv6e, v4 and older tpu-ubuntu2204-base
  --spot                   Spot capacity (cheaper, can be preempted)
  --queued                 Request through queued resources (waits for
                           capacity; recommended for large slices)
  --dry-run                Print the commands, run nothing
USAGE
}

heph_parse_args "accelerator runtime-version spot queued" "$@"
heph_require name zone accelerator
OPT_RUNTIME_VERSION="${OPT_RUNTIME_VERSION:-}"
OPT_SPOT="${OPT_SPOT:-0}"

accelerator="${OPT_ACCELERATOR}"
[[ "${accelerator}" =~ ^(v[0-9]+[a-z]*)-([0-9]+)$ ]] || heph_die "--accelerator \
'${accelerator}': expected a gcloud type such as v5p-64, v5litepod-16, v6e-8"
family="${BASH_REMATCH[1]}"
if [[ -z "${OPT_RUNTIME_VERSION}" ]]; then
  case "${family}" in
    v5p) OPT_RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v5litepod) OPT_RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v6e) OPT_RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    v2|v3|v4) OPT_RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    v5e) heph_die "--accelerator '${accelerator}': gcloud calls v5e slices \
'v5litepod-N' (N chips)" ;;
    *) heph_die "no default runtime version for '${family}'; pass \
--runtime-version" ;;
  esac
fi

heph_scope_flags
spot=()
((OPT_SPOT)) && spot=(--spot)
if ((OPT_QUEUED)); then
  heph_run gcloud compute tpus queued-resources create "${OPT_NAME}" \
    --node-id="${OPT_NAME}" "${HEPH_SCOPE[@]}" \
    --accelerator-type="${accelerator}" \
    --runtime-version="${OPT_RUNTIME_VERSION}" "${spot[@]}"
  echo "Queued. Wait until the state is ACTIVE before tpu/setup.sh:" >&2
  echo "  $(heph_join gcloud compute tpus queued-resources describe \
"${OPT_NAME}" "${HEPH_SCOPE[@]}" --format='value(state.state)')" >&2
else
  heph_run gcloud compute tpus tpu-vm create "${OPT_NAME}" "${HEPH_SCOPE[@]}" \
    --accelerator-type="${accelerator}" --version="${OPT_RUNTIME_VERSION}" \
    "${spot[@]}"
fi
