"""The one way every `python -m heph_jax...` tool reads its flags and reports errors.

Each tool declares its flags with absl (ml_collections `config_flags` where it reads a config file)
in a `define(flag_values, argv)` function, required ones through `flags.mark_flag_as_required`, and
hands it to `run` with its body. `run` parses into a fresh FlagValues on every call, so several
tools can run in one process (tests) and a second call never sees the first call's values. A flag
mistake or any HephError prints `prog: message` and returns 2; a ConfigError reads
`prog: configuration error: message`; an error class may name another status (`exit_code`).
"""
from __future__ import annotations

import re
import sys
import types
from typing import Callable, Sequence

from absl import flags

from heph_jax.errors import EXIT_USAGE, ConfigError, HephError

Define = Callable[[flags.FlagValues, list], None]
Body = Callable[[types.SimpleNamespace, list], "int | None"]


def parse(prog: str, define: Define, argv: Sequence[str] | None = None
          ) -> tuple[flags.FlagValues, list[str]]:
  """Parses argv (without the program name; default sys.argv[1:]); returns (flags, positional).

  Raises flags.Error for unknown or missing flags, SystemExit(0) after printing --help."""
  full = [prog, *(sys.argv[1:] if argv is None else argv)]
  values = flags.FlagValues()
  define(values, full)
  if any(a in ("-h", "--help", "-help", "--helpfull") for a in full[1:]):
    doc = sys.modules[define.__module__].__doc__ or ""
    print(f"{doc.strip()}\n\nflags:\n{values.get_help()}")
    raise SystemExit(0)
  positional = values(full)[1:]
  flags.FLAGS.mark_as_parsed()  # absl logging otherwise warns "before flag parsing"
  return values, positional


def namespace(values: flags.FlagValues) -> types.SimpleNamespace:
  """The parsed values as attributes (args.workdir), as a body reads them; a config-file flag also
  gives `<name>_filename`, the path it was read from."""
  from ml_collections import config_flags
  args = {name: values[name].value for name in values}
  for name in list(args):
    try:
      args[f"{name}_filename"] = config_flags.get_config_filename(values[name])
    except TypeError:  # not a config-file flag
      pass
  return types.SimpleNamespace(**args)


def run(prog: str, define: Define, body: Body, argv: Sequence[str] | None = None) -> int:
  """Parses the flags and runs body(args, positional); returns the exit status (see module doc)."""
  try:
    values, positional = parse(prog, define, argv)
  except flags.Error as e:
    print(f"{prog}: {_readable(e)}", file=sys.stderr)
    return EXIT_USAGE
  try:
    return body(namespace(values), positional) or 0
  except ConfigError as e:
    print(f"{prog}: configuration error: {e}", file=sys.stderr)
    return EXIT_USAGE
  except HephError as e:
    print(f"{prog}: {e}", file=sys.stderr)
    return getattr(e, "exit_code", EXIT_USAGE)


def _readable(error: flags.Error) -> str:
  """absl's "flag --x=None: Flag --x must have a value other than None." as "--x is required"."""
  missing = re.search(r"Flag --(\w+) must have a value other than None", str(error))
  return f"--{missing.group(1)} is required" if missing else str(error)


def main(prog: str, define: Define, body: Body) -> None:
  """`python -m` entry: run and exit with its status."""
  sys.exit(run(prog, define, body))
