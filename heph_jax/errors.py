"""The one family of user-facing errors.

Every error a user can cause (a config value, an input file, a checkpoint, a tokenizer, the pod's
processes) derives from HephError, and its message names the config key, file or line. Each CLI
catches HephError alone and exits 2 with `prog: message` (see `exit_on_error`); anything else is a
bug and keeps its traceback. Subclasses also keep a builtin base (ValueError, RuntimeError) so
callers that caught those still do.
"""
from __future__ import annotations

import contextlib
import sys

EXIT_USAGE = 2  # a mistake in what the user gave: config, flags, input data


class HephError(Exception):
  """Base of every user-facing heph_jax error."""


class ConfigError(HephError, ValueError):
  """A configuration value is invalid; the message names the config key."""


@contextlib.contextmanager
def exit_on_error(prog: str, prefix: str = ""):
  """Runs the body; a HephError becomes `prog: [prefix]message` on stderr and exit status 2."""
  try:
    yield
  except HephError as e:
    print(f"{prog}: {prefix}{e}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
