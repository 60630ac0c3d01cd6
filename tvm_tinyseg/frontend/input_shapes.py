"""Model inputs with dynamic dimensions: a dynamic batch (TFLite ``shape_signature`` -1, an ONNX
symbolic dimension) is fixed to 1 with a warning (logged); any other dynamic dimension needs the
user's shape (``--input-shape NAME:1x128x128x3``, tvmc's convention; ``input_shapes=`` in the API)."""
import logging

from tvm_tinyseg.errors import TinySegError, UnsupportedModelError

OPTION = "--input-shape"
_log = logging.getLogger(__name__)


def parse_input_shape(text: str) -> tuple:
    """'x:1x128x128x3' → ('x', (1, 128, 128, 3)); the name may itself contain ':'."""
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) <= 0:
        raise TinySegError(f"{OPTION} {text!r}: expected NAME:DIMS, e.g. input_1:1x128x128x3")
    return name, shape


def resolve(path, name, dims, input_shapes) -> tuple:
    """The static shape of input ``name`` whose dimensions are ``dims`` (None = dynamic)."""
    given = (input_shapes or {}).get(name)
    if given is not None:
        given = tuple(int(d) for d in given)
        if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given)):
            shown = ["?" if d is None else d for d in dims]
            raise UnsupportedModelError(f"{path}: {OPTION} {name}:{'x'.join(map(str, given))} does not fit "
                                        f"the input's shape {shown}")
        return given
    if dims and dims[0] is None and all(d is not None for d in dims[1:]):
        _log.warning("note: %s: input '%s' has a dynamic batch dimension; fixed to 1", path, name)
        return (1, *dims[1:])
    if any(d is None for d in dims):
        shown = "x".join("?" if d is None else str(d) for d in dims)
        raise UnsupportedModelError(f"{path}: input '{name}' has dynamic dimensions ({shown}); give its shape "
                                    f"with {OPTION} {name}:{shown.replace('?', 'N')}")
    return tuple(dims)


def check_known(path, input_shapes, names) -> None:
    unknown = sorted(set(input_shapes or {}) - set(names))
    if unknown:
        raise UnsupportedModelError(f"{path}: {OPTION} names no input of the model: {', '.join(unknown)} "
                                    f"(inputs: {', '.join(names)})")
