"""Memoisation of analyses that depend only on a TIR PrimFunc (and plain arguments): memory planning
places a dozen trial modules that differ in a few kernels, and re-analysing every kernel of each
took half of a smallest-arena compile."""
import functools
from collections import OrderedDict

import tvm_ffi


def structural_memo(size: int = 4096):
    """Decorator: ``fn(func, *args)`` computed once per structurally equal ``func`` (and equal
    ``args``); the ``size`` least recently used results are kept."""

    def wrap(fn):
        cache = OrderedDict()  # (structural hash, args) → [(func, result)]

        @functools.wraps(fn)
        def memo(func, *args):
            key = (tvm_ffi.structural_hash(func), args)
            for seen, result in cache.get(key, ()):
                if tvm_ffi.structural_equal(seen, func):
                    cache.move_to_end(key)
                    return result
            result = fn(func, *args)
            cache.setdefault(key, []).append((func, result))
            cache.move_to_end(key)
            while len(cache) > size:
                cache.popitem(last=False)
            return result

        return memo

    return wrap
