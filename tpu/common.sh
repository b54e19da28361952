# Shared by the tpu/*.sh scripts (sourced, not run): flag parsing, usage
# errors, and the runner that prints every command and, unless --dry-run,
# runs it.
#
# A flag --some-flag lands in OPT_SOME_FLAG; scripts set defaults before
# calling heph_parse_args and list the flags they accept.

HEPH_SCRIPT="$(basename "$0")"
HEPH_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Defaults shared by several scripts. Remote paths are expanded by the
# worker's shell, so $HOME stays literal here.
OPT_NAME="${HEPH_TPU_NAME:-}"
OPT_ZONE="${HEPH_TPU_ZONE:-}"
OPT_PROJECT="${HEPH_TPU_PROJECT:-}"
OPT_DRY_RUN=0
OPT_QUEUED=0
OPT_REMOTE_DIR='$HOME/heph_jax'
OPT_VENV='$HOME/heph_venv'
OPT_SESSION=heph
OPT_ENV=()            # --env KEY=VALUE, repeatable.
HEPH_EXTRA_ARGS=()    # Everything after "--".

# Flags that take no value.
HEPH_BOOL_FLAGS=" dry-run spot queued follow yes "
# Flags every script accepts.
HEPH_COMMON_FLAGS="name zone project dry-run"

heph_die() {
  echo "${HEPH_SCRIPT}: error: $*" >&2
  echo "Run '${HEPH_SCRIPT} --help' for usage." >&2
  exit 2
}

# heph_parse_args "flag names this script accepts" "$@"
heph_parse_args() {
  local allowed=" ${HEPH_COMMON_FLAGS} $1 "
  shift
  while (($#)); do
    local arg="$1" flag value has_value=0
    case "${arg}" in
      -h|--help) heph_usage; exit 0 ;;
      --) shift; HEPH_EXTRA_ARGS=("$@")
          # Safety: a --dry-run meant for us must not reach the remote command.
          [[ " $* " != *" --dry-run "* ]] || heph_die "--dry-run after -- \
would be passed on; put it before --"
          return 0 ;;
      --*=*) flag="${arg%%=*}"; value="${arg#*=}"; has_value=1 ;;
      --*) flag="${arg}" ;;
      *) heph_die "unexpected argument '${arg}' (flags start with --; \
training flags go after --)" ;;
    esac
    flag="${flag#--}"
    [[ "${allowed}" == *" ${flag} "* ]] || heph_die "unknown flag --${flag}"
    local var="OPT_${flag^^}"
    var="${var//-/_}"
    if [[ "${HEPH_BOOL_FLAGS}" == *" ${flag} "* ]]; then
      ((has_value)) && heph_die "--${flag} takes no value"
      printf -v "${var}" '%s' 1
    else
      if ((!has_value)); then
        (($# >= 2)) || heph_die "--${flag} needs a value"
        value="$2"
        shift
      fi
      [[ -n "${value}" ]] || heph_die "--${flag} needs a non-empty value"
      if [[ "${flag}" == env ]]; then
        OPT_ENV+=("${value}")
      else
        printf -v "${var}" '%s' "${value}"
      fi
    fi
    shift
  done
}

# heph_require flag... : dies naming the first missing required flag.
heph_require() {
  local flag var
  for flag in "$@"; do
    var="OPT_${flag^^}"
    var="${var//-/_}"
    [[ -n "${!var:-}" ]] || heph_die "missing required flag --${flag}"
  done
}

# heph_check_remote_path FLAG VALUE: remote paths are used unquoted so that
# $HOME expands on the worker; keep them to plain characters.
heph_check_remote_path() {
  [[ "$2" =~ ^[A-Za-z0-9_./~\$-]+$ ]] || heph_die "--$1 '$2': use letters, \
digits and _ . / - ~ \$HOME only"
}

# heph_quote WORD: the word as a shell would need it (single quotes if
# needed; --flag='value' keeps the flag name outside the quotes).
heph_quote() {
  local s="$1"
  if [[ "${s}" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "${s}"
  elif [[ "${s}" =~ ^(--[A-Za-z0-9_-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    heph_quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# heph_join WORD...: words quoted and joined by spaces, one shell line.
heph_join() {
  local out="" word
  for word in "$@"; do
    out+="$(heph_quote "${word}") "
  done
  printf '%s' "${out% }"
}

# heph_run CMD...: the command on stdout with --dry-run (nothing runs), else
# echoed to stderr with "+ " and run.
heph_run() {
  if ((OPT_DRY_RUN)); then
    heph_join "$@"
    echo
  else
    echo "+ $(heph_join "$@")" >&2
    "$@"
  fi
}

# gcloud scope flags: zone, and project when given.
heph_scope_flags() {
  HEPH_SCOPE=(--zone="${OPT_ZONE}")
  [[ -n "${OPT_PROJECT}" ]] && HEPH_SCOPE+=(--project="${OPT_PROJECT}")
  return 0
}

# heph_ssh WORKER REMOTE_COMMAND: one command on one worker (or "all").
heph_ssh() {
  heph_scope_flags
  heph_run gcloud compute tpus tpu-vm ssh "${OPT_NAME}" "${HEPH_SCOPE[@]}" \
    --worker="$1" --command="$2"
}

# heph_check_worker VALUE: "all" or a worker index.
heph_check_worker() {
  [[ "$1" == all || "$1" =~ ^[0-9]+$ ]] || heph_die "--worker '$1': expected \
'all' or a worker index (0 is the primary)"
}

# heph_env_prefix: "K=V ..." for the remote command, from --env flags.
heph_env_prefix() {
  local pair out=""
  for pair in "${OPT_ENV[@]}"; do
    [[ "${pair}" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || heph_die "--env '${pair}': \
expected KEY=VALUE"
    out+="${pair%%=*}=$(heph_quote "${pair#*=}") "
  done
  printf '%s' "${out}"
}

# Remote file names of a run session (log and pid of the training process).
heph_log_dir() { printf '%s' '$HOME/heph_logs'; }
heph_log_file() { printf '%s/%s.log' "$(heph_log_dir)" "${OPT_SESSION}"; }
heph_pid_file() { printf '%s/%s.pid' "$(heph_log_dir)" "${OPT_SESSION}"; }

heph_check_session() {
  [[ "${OPT_SESSION}" =~ ^[A-Za-z0-9_-]+$ ]] || heph_die "--session \
'${OPT_SESSION}': use letters, digits, _ and - only"
}
