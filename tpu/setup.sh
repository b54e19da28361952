#!/usr/bin/env bash
# Installs heph_jax on every worker of a TPU slice (--worker=all).
set -euo pipefail
source "$(dirname "$0")/common.sh"

heph_usage() {
  cat <<'USAGE'
Usage: tpu/setup.sh --name NAME --zone ZONE [options]

Puts the code on every worker and installs it with pip install -e ".[tpu]"
into a virtual environment. The code comes from this checkout (copied as a
tarball) unless --repo names a git URL to clone on the workers.

  --name NAME              TPU name (env HEPH_TPU_NAME)
  --zone ZONE              zone (env HEPH_TPU_ZONE)
  --project PROJECT        gcloud project (env HEPH_TPU_PROJECT)
  --repo URL               git URL to clone instead of copying this checkout
  --branch BRANCH          branch or tag for --repo (default: main)
  --python-version X.Y     build the venv with this Python, fetched by uv
                           (e.g. 3.12, when the image's python3 is too old);
                           default: the image's python3
  --remote-dir DIR         code directory on the workers (default $HOME/heph_jax)
  --venv DIR               virtual environment on the workers ($HOME/heph_venv)
  --dry-run                Print the commands, run nothing
USAGE
}

OPT_BRANCH=main
OPT_REPO=""
OPT_PYTHON_VERSION=""
heph_parse_args "repo branch python-version remote-dir venv" "$@"
heph_require name zone
heph_check_remote_path remote-dir "${OPT_REMOTE_DIR}"
heph_check_remote_path venv "${OPT_VENV}"
if [[ -n "${OPT_PYTHON_VERSION}" && ! "${OPT_PYTHON_VERSION}" =~ ^3\.[0-9]+$ ]]; then
  heph_die "--python-version '${OPT_PYTHON_VERSION}': expected 3.N, e.g. 3.12"
fi
dir="${OPT_REMOTE_DIR}"
venv="${OPT_VENV}"
heph_scope_flags

# 1. Code onto every worker.
if [[ -n "${OPT_REPO}" ]]; then
  repo="$(heph_quote "${OPT_REPO}")"
  branch="$(heph_quote "${OPT_BRANCH}")"
  fetch="if [ -d ${dir}/.git ]; then git -C ${dir} fetch --depth 1 origin \
${branch} && git -C ${dir} reset --hard FETCH_HEAD; else git clone --depth 1 \
--branch ${branch} ${repo} ${dir}; fi"
  heph_ssh all "set -e; ${fetch}"
else
  archive="${TMPDIR:-/tmp}/heph_jax_src.tar.gz"
  # Build outputs, environments and local runs stay behind.
  heph_run tar -czf "${archive}" -C "${HEPH_REPO_ROOT}" --exclude=./.git \
    --exclude=./.venv --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.pytest_cache --exclude='./workdir*' --exclude=./runs .
  heph_run gcloud compute tpus tpu-vm scp "${archive}" \
    "${OPT_NAME}:heph_jax_src.tar.gz" "${HEPH_SCOPE[@]}" --worker=all
  heph_ssh all "set -e; mkdir -p ${dir} && tar -xzf \$HOME/heph_jax_src.tar.gz \
-C ${dir} && rm \$HOME/heph_jax_src.tar.gz"
  heph_run rm -f "${archive}"
fi

# 2. Environment and install, the same on every worker.
if [[ -n "${OPT_PYTHON_VERSION}" ]]; then
  make_venv="[ -x \$HOME/.local/bin/uv ] || curl -LsSf \
https://astral.sh/uv/install.sh | sh; \$HOME/.local/bin/uv venv --seed \
--python ${OPT_PYTHON_VERSION} ${venv}"
else
  make_venv="python3 -m venv ${venv} || { sudo apt-get update -qq && sudo \
apt-get install -y -qq python3-venv && python3 -m venv ${venv}; }"
fi
heph_ssh all "set -e; if [ ! -x ${venv}/bin/python ]; then ${make_venv}; fi; \
${venv}/bin/python -m pip install -q -U pip; cd ${dir}; \
${venv}/bin/python -m pip install -q -e \".[tpu]\"; ${venv}/bin/python -c \
\"import heph_jax, jax; print(heph_jax.__file__, jax.__version__)\""
