"""tpu/*.sh: --dry-run output, usage errors, and the remote commands run locally."""
import os
import pathlib
import shlex
import subprocess
import time

import pytest

TPU_DIR = pathlib.Path(__file__).resolve().parent.parent / "tpu"
SCOPE = ["--name", "heph-8b", "--zone", "us-east5-a", "--project", "my-proj"]
LAUNCH = ["--config", "configs/llama3_8b_stage1.py", "--workdir",
          "gs://my-bucket/runs/8b-stage1"]


@pytest.fixture(autouse=True, scope="module")
def no_real_gcloud(tmp_path_factory):
  """A gcloud first on PATH that fails, so no test can reach the real one."""
  global GUARD_BIN
  GUARD_BIN = tmp_path_factory.mktemp("guard_bin")
  guard = GUARD_BIN / "gcloud"
  guard.write_text("#!/bin/bash\necho 'test called the real gcloud' >&2\nexit 99\n")
  guard.chmod(0o755)


def run_script(script, *args, env=None, check=True):
  clean = {k: v for k, v in os.environ.items() if not k.startswith("HEPH_TPU_")}
  clean["PATH"] = f"{GUARD_BIN}:{os.environ['PATH']}"
  clean.update(env or {})
  result = subprocess.run(["bash", str(TPU_DIR / script), *args], env=clean,
                          capture_output=True, text=True, timeout=60)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def dry_run(script, *args, env=None):
  """The printed commands, each split into words as a shell would."""
  out = run_script(script, "--dry-run", *args, env=env).stdout
  return [shlex.split(line) for line in out.splitlines() if line.strip()]


def flag(words, name):
  """Value of --name=value in a command's words (None if absent)."""
  values = [w.split("=", 1)[1] for w in words if w.startswith(f"--{name}=")]
  assert len(values) <= 1, words
  return values[0] if values else None


def remote_command(words):
  assert words[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], words
  return flag(words, "command")


def assert_scoped(words, name="heph-8b"):
  assert name in words
  assert flag(words, "zone") == "us-east5-a"
  assert flag(words, "project") == "my-proj"


# --- create / delete -----------------------------------------------------------

def test_create_tpu_vm():
  (cmd,) = dry_run("create.sh", *SCOPE, "--accelerator", "v5p-64", "--spot")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "heph-8b"]
  assert_scoped(cmd)
  assert flag(cmd, "accelerator-type") == "v5p-64"
  assert flag(cmd, "version") == "v2-alpha-tpuv5"
  assert "--spot" in cmd


def test_create_queued_resource_with_runtime_version():
  (cmd,) = dry_run("create.sh", *SCOPE, "--accelerator=v6e-256", "--queued",
                   "--runtime-version", "v2-alpha-tpuv6e-custom")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create",
                     "heph-8b"]
  assert_scoped(cmd)
  assert flag(cmd, "node-id") == "heph-8b"
  assert flag(cmd, "accelerator-type") == "v6e-256"
  assert flag(cmd, "runtime-version") == "v2-alpha-tpuv6e-custom"
  assert "--spot" not in cmd


@pytest.mark.parametrize("accelerator, runtime", [
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v4-32", "tpu-ubuntu2204-base")])
def test_create_picks_runtime_by_family(accelerator, runtime):
  (cmd,) = dry_run("create.sh", *SCOPE, "--accelerator", accelerator)
  assert flag(cmd, "version") == runtime


def test_delete():
  (cmd,) = dry_run("delete.sh", *SCOPE)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "heph-8b"]
  assert_scoped(cmd)
  assert "--quiet" not in cmd  # Asks before deleting unless --yes.
  (cmd,) = dry_run("delete.sh", *SCOPE, "--queued", "--yes")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete",
                     "heph-8b"]
  assert "--force" in cmd and "--quiet" in cmd


def test_without_dry_run_the_printed_command_is_what_runs(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  record = tmp_path / "gcloud_args"
  fake = bin_dir / "gcloud"
  fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {record}\n')
  fake.chmod(0o755)
  args = [*SCOPE, "--accelerator", "v5p-64", "--queued", "--spot"]
  (printed,) = dry_run("create.sh", *args)
  assert not record.exists()  # --dry-run ran nothing.
  env = {"PATH": f"{bin_dir}:{GUARD_BIN}:{os.environ['PATH']}"}
  result = run_script("create.sh", *args, env=env)
  assert ["gcloud", *record.read_text().splitlines()] == printed
  assert "+ gcloud compute tpus queued-resources create" in result.stderr


# --- setup / launch / logs / stop / run ---------------------------------------

def test_setup_copies_checkout_and_installs_on_all_workers():
  tar, scp, unpack, remove, install = dry_run("setup.sh", *SCOPE)
  assert tar[0] == "tar" and tar[-1] == "."
  assert "--exclude=./.venv" in tar and "--exclude=./.git" in tar
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert scp[5] == tar[2] and scp[6] == "heph-8b:heph_jax_src.tar.gz"
  assert remove == ["rm", "-f", tar[2]]
  for cmd in (scp, unpack, install):
    assert flag(cmd, "worker") == "all"
    assert flag(cmd, "zone") == "us-east5-a"
  assert "tar -xzf $HOME/heph_jax_src.tar.gz -C $HOME/heph_jax" in remote_command(unpack)
  assert 'pip install -q -e ".[tpu]"' in remote_command(install)


def test_setup_from_git_with_uv_python():
  clone, install = dry_run("setup.sh", *SCOPE, "--repo",
                           "https://github.com/org/heph_jax.git", "--branch",
                           "v0.1", "--python-version", "3.12")
  for cmd in (clone, install):
    assert_scoped(cmd)
    assert flag(cmd, "worker") == "all"
  assert ("git clone --depth 1 --branch v0.1 https://github.com/org/heph_jax.git"
          in remote_command(clone))
  assert "uv venv --seed --python 3.12 $HOME/heph_venv" in remote_command(install)


def test_launch_runs_the_training_command_on_all_workers():
  (cmd,) = dry_run("launch.sh", *SCOPE, *LAUNCH, "--coordinator-port", "8476",
                   "--env", "LIBTPU_INIT_ARGS=--xla_a=1 --xla_b=2", "--",
                   "--config.train.steps=100")
  assert_scoped(cmd)
  assert flag(cmd, "worker") == "all"
  remote = remote_command(cmd)
  assert ("$HOME/heph_venv/bin/python -m heph_jax.train --config "
          "configs/llama3_8b_stage1.py --workdir gs://my-bucket/runs/8b-stage1 "
          "--config.distributed.coordinator_port=8476 --config.train.steps=100"
          in remote)
  assert "setsid nohup" in remote and ">> $HOME/heph_logs/heph.log" in remote


def test_logs_stop_and_run_address_the_right_workers():
  (logs,) = dry_run("logs.sh", *SCOPE)
  assert flag(logs, "worker") == "0"  # The primary logs the metrics.
  assert "tail -n 100 $HOME/heph_logs/heph.log" in remote_command(logs)
  (logs,) = dry_run("logs.sh", *SCOPE, "--worker", "all", "--follow",
                    "--lines", "20", "--session", "exp2")
  assert flag(logs, "worker") == "all"
  assert "tail -n 20 -F $HOME/heph_logs/exp2.log" in remote_command(logs)
  (stop,) = dry_run("stop.sh", *SCOPE)
  assert_scoped(stop)
  assert flag(stop, "worker") == "all"
  assert "kill -TERM" in remote_command(stop)
  (run,) = dry_run("run.sh", *SCOPE, "--worker", "0", "--", "python", "-m",
                   "heph_jax.aot", "--config", "configs/llama3_8b_stage1.py",
                   "--topology", "v5p-64")
  assert_scoped(run)
  assert flag(run, "worker") == "0"
  assert remote_command(run).endswith(
      "python -m heph_jax.aot --config configs/llama3_8b_stage1.py "
      "--topology v5p-64")


def test_environment_supplies_name_and_zone():
  env = {"HEPH_TPU_NAME": "from-env", "HEPH_TPU_ZONE": "europe-west4-b"}
  (cmd,) = dry_run("delete.sh", env=env)
  assert "from-env" in cmd and flag(cmd, "zone") == "europe-west4-b"


# --- usage errors ----------------------------------------------------------------

@pytest.mark.parametrize("script, args, message", [
    ("create.sh", ["--name", "n", "--zone", "z"], "missing required flag --accelerator"),
    ("create.sh", ["--zone", "z", "--accelerator", "v5p-8"], "missing required flag --name"),
    ("create.sh", ["--name", "n", "--zone", "z", "--accelerator", "v5e-8"], "v5litepod"),
    ("create.sh", ["--name", "n", "--zone", "z", "--accelerator", "big"], "expected a gcloud type"),
    ("setup.sh", ["--name", "n"], "missing required flag --zone"),
    ("launch.sh", ["--name", "n", "--zone", "z", "--workdir", "gs://b/r"],
     "missing required flag --config"),
    ("launch.sh", ["--name", "n", "--zone", "z", "--config", "c.py", "--workdir",
                   "/local/dir"], "expected gs://BUCKET/PATH"),
    ("launch.sh", ["--name", "n", "--zone", "z", *LAUNCH, "--coordinator-port",
                   "99999"], "expected a TCP port"),
    ("launch.sh", ["--name", "n", "--zone", "z", *LAUNCH, "--env", "1X=2"],
     "expected KEY=VALUE"),
    ("logs.sh", ["--name", "n", "--zone", "z", "--worker", "first"], "expected 'all' or"),
    ("stop.sh", ["--name", "n", "--zone", "z", "--bogus"], "unknown flag --bogus"),
    ("delete.sh", ["--name", "n", "--zone"], "--zone needs a value"),
    ("delete.sh", ["--name", "n", "--zone", "z", "--yes=1"], "--yes takes no value"),
    ("run.sh", ["--name", "n", "--zone", "z"], "no command: put it after --"),
])
def test_usage_errors(script, args, message):
  result = run_script(script, "--dry-run", *args, check=False)
  assert result.returncode == 2
  assert message in result.stderr and result.stdout == ""


@pytest.mark.parametrize("script", ["create.sh", "setup.sh", "launch.sh",
                                    "logs.sh", "stop.sh", "delete.sh", "run.sh"])
def test_help_and_strict_mode(script):
  assert "Usage: tpu/" + script in run_script(script, "--help").stdout
  assert "set -euo pipefail" in (TPU_DIR / script).read_text()


# --- the remote commands, run on this machine ---------------------------------

def test_launched_run_is_detached_logged_refused_twice_and_stopped(tmp_path):
  """Runs launch.sh's and stop.sh's remote commands locally, with a fake python."""
  code_dir, venv_bin = tmp_path / "code", tmp_path / "venv" / "bin"
  code_dir.mkdir()
  venv_bin.mkdir(parents=True)
  (venv_bin / "python").write_text(
      '#!/bin/bash\necho "fake-python $* | $LIBTPU_INIT_ARGS | $PWD"\n'
      'trap \'echo "fake-python got TERM"; exit 0\' TERM\n'
      'while true; do sleep 0.1; done\n')
  (venv_bin / "python").chmod(0o755)
  paths = ["--remote-dir", str(code_dir), "--venv", str(tmp_path / "venv")]
  (launch,) = dry_run("launch.sh", *SCOPE, *LAUNCH, *paths,
                      "--env", "LIBTPU_INIT_ARGS=--a=1 --b='x y'")
  (stop,) = dry_run("stop.sh", *SCOPE, "--grace-s", "10")
  env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
  log = tmp_path / "heph_logs" / "heph.log"
  pid_file = tmp_path / "heph_logs" / "heph.pid"

  def remote(command):
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                          text=True, timeout=30)

  started = remote(remote_command(launch))
  assert started.returncode == 0, started.stderr
  pid = int(pid_file.read_text())
  try:
    deadline = time.monotonic() + 20
    while "fake-python" not in log.read_text() and time.monotonic() < deadline:
      time.sleep(0.1)
    text = log.read_text()
    assert "=== launch " in text
    assert ("fake-python -m heph_jax.train --config configs/llama3_8b_stage1.py"
            " --workdir gs://my-bucket/runs/8b-stage1 | --a=1 --b='x y' | "
            f"{code_dir}") in text
    again = remote(remote_command(launch))
    assert again.returncode == 1 and "still going" in again.stderr
    stopped = remote(remote_command(stop))
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped pid {pid}" in stopped.stdout
    assert "fake-python got TERM" in log.read_text()
    assert not pid_file.exists()
    assert "no run heph going" in remote(remote_command(stop)).stdout
  finally:
    try:
      os.kill(pid, 9)  # Only if the test failed before stop.sh's command did.
    except ProcessLookupError:
      pass


def test_dry_run_after_double_dash_is_refused():
  result = run_script("launch.sh", *SCOPE, *LAUNCH, "--", "--dry-run",
                      check=False)
  assert result.returncode == 2 and "put it before --" in result.stderr


@pytest.mark.parametrize("script", sorted(p.name for p in TPU_DIR.glob("*.sh") if p.name != "common.sh"))
def test_help_examples_name_real_config_keys(script):
  """Every `--config.key=value` a script's --help shows parses as a heph_jax.train override: the
  trainer's own flag parser (with the config the launch example names) accepts the command."""
  from heph_jax import cli, train
  import re
  help_text = run_script(script, "--help").stdout
  overrides = re.findall(r"--config\.[\w.]+=\S+", help_text)
  argv = ["--config", str(TPU_DIR.parent / "configs" / "llama3_8b_stage1.py"),
          "--workdir", "gs://b/run", *overrides]
  values, _ = cli.parse("heph_jax.train", train.define_flags, argv)
  for override in overrides:  # the value reached the config, so the key exists
    key, value = override[len("--config."):].split("=", 1)
    node = values.config
    for part in key.split("."):
      node = node[part]
    assert str(node) == value, (script, override)
