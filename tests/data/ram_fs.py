"""TensorFlow's in-memory filesystem (ram://) as an etils.epath scheme, for tests that a run has
nothing left that only works on local disk: ram:// is served by tf.io.gfile exactly as gs:// is
(epath's tf backend), needs no network, and os.path/open/os.rename/shutil do not understand it."""
from etils.epath import backend as backend_lib
from etils.epath import gpath, register


class _RamBackend(type(backend_lib.tf_backend)):
  """tf_backend with GCS's directory semantics, which ram:// lacks: renaming a directory moves
  its contents (ram:// renames only the directory's own entry), and rmtree of a directory whose
  contents are gone is a no-op."""

  def rename(self, path, dst) -> None:
    if not self.gfile.isdir(path):
      return super().rename(path, dst)
    if self.gfile.exists(dst):
      raise FileExistsError(str(dst))
    for root, _, files in self.gfile.walk(path):
      target = str(dst) + root[len(str(path)):]
      self.gfile.makedirs(target)
      for name in files:
        self.gfile.rename(f"{root}/{name}", f"{target}/{name}")
    self.rmtree(path)

  def rmtree(self, path) -> None:
    try:
      super().rmtree(path)
    except FileNotFoundError:
      pass


_RAM = _RamBackend()


class RamPath(gpath.PosixGPath):
  @property
  def _backend(self):
    return _RAM if self._uri_scheme == "ram" else super()._backend


def enable() -> str:
  """Teaches epath the ram:// scheme (once); returns the prefix."""
  if "ram" not in gpath._URI_SCHEMES:
    gpath._URI_SCHEMES = gpath._URI_SCHEMES | {"ram"}
    gpath._URI_PREFIXES = gpath._URI_PREFIXES + ("ram://",)
    gpath._URI_MAP_ROOT["ram://"] = "/ram/"
    register.register_path_cls("ram://")(RamPath)
  return "ram://"
