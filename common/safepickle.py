"""A restricted unpickler for data files that are pickles: CIFAR-10 batches and paddle .pdparams.

Only builtin containers and numpy array reconstruction are admitted; any other global (os.system,
builtins.eval, a class of some module, ...) is refused before it can run, so a hostile file
cannot execute code.
"""
import io
import pickle

from dualbench.common.errors import DataError

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),          # how protocol-2 pickles (CIFAR's python2 batches) store bytes
    ("collections", "OrderedDict"),
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global '{module}.{name}' (only numpy arrays and "
                                     "builtin containers are allowed)")


def loads(data, path="<bytes>", encoding="latin1"):
    """Unpickle `data` with the allowlist; any refusal or corruption is a DataError naming path."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except pickle.UnpicklingError as e:
        raise DataError(path, f"unsafe or corrupt pickle: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise DataError(path, f"corrupt pickle ({type(e).__name__}: {e})") from None


def load(path, encoding="latin1"):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror or e})") from None
    return loads(data, path, encoding)
