"""The checks of flatbuffers' C++ ``Verifier`` (flatbuffers/verifier.h), on a whole .tflite file.

LiteRT verifies every model with it before reading (``VerifyModelBuffer``); TFLite Micro does not,
and reads fields the compiler never does (``Model.metadata`` names, for its offline memory plan
and compression metadata) straight from the file. Python's flatbuffers package has no verifier,
so this module walks every table reachable from the root — whether or not anything here reads
it — and applies the Verifier's rules: each table's vtable, each scalar field, each offset,
vector and string in bounds and aligned, strings zero-terminated, vector lengths below 2 GiB, at
most 64 nested tables and 1,000,000 tables in all.

The schema is not written out here: it is read once from the ``tflite`` package's generated
accessors (each field's vtable slot, and whether it holds a scalar of which width, a string, a
table of which class, a union or a vector of those), so it follows the package's schema version.
"""
import functools
import importlib
import inspect
import pkgutil
import re
import struct
from dataclasses import dataclass

import flatbuffers.number_types

MAX_DEPTH = 64  # flatbuffers::Verifier::Options defaults, which LiteRT uses
MAX_TABLES = 1_000_000
MAX_BUFFER_SIZE = (1 << 31) - 1  # FLATBUFFERS_MAX_BUFFER_SIZE
FILE_IDENTIFIER = b"TFL3"

# Union field -> the enum naming its member tables (the generated code does not say which).
UNION_ENUMS = {"BuiltinOptions": "BuiltinOptions", "BuiltinOptions2": "BuiltinOptions2",
               "Details": "QuantizationDetails",
               "ArraySegments": "SparseIndexVector", "ArrayIndices": "SparseIndexVector"}


class FlatbufferError(Exception):
    """A rule of the Verifier is broken; the message names the field path and the byte."""


@dataclass(frozen=True)
class Field:
    name: str  # schema spelling (snake_case)
    vtable_offset: int
    kind: str  # scalar | string | table | union | vector | strings | tables
    width: int = 0  # scalar or vector element bytes
    fmt: str = ""  # struct format of a scalar or vector element
    table: str = ""  # class of a table or of a vector's tables; enum of a union


def _snake(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


_OFFSET = re.compile(r"self\._tab\.Offset\((\d+)\)")
_FLAGS = re.compile(r"Get\(flatbuffers\.number_types\.(\w+Flags)")
_IMPORT = re.compile(r"from tflite\.(\w+) import")
_HELPER_SUFFIXES = ("Length", "AsNumpy", "IsNone")


def _field(method_name, source):
    offset = _OFFSET.search(source)
    if offset is None:
        return None
    vtable_offset, name = int(offset.group(1)), _snake(method_name)
    element = "(self, j)" in source.splitlines()[0]
    imported = _IMPORT.search(source)
    if "self._tab.Union(" in source:
        return Field(name, vtable_offset, "union", table=UNION_ENUMS[method_name])
    if "self._tab.String(" in source:
        return Field(name, vtable_offset, "strings" if element else "string")
    if imported and "self._tab.Indirect(" in source:
        return Field(name, vtable_offset, "tables" if element else "table", table=imported.group(1))
    if imported and "obj.Init(" in source:
        raise NotImplementedError(f"struct field {method_name}: the tflite schema had none")
    flags = getattr(flatbuffers.number_types, _FLAGS.search(source).group(1))
    return Field(name, vtable_offset, "vector" if element else "scalar", flags.bytewidth, flags.packer_type.format[-1])


@functools.lru_cache(maxsize=None)
def _fields(class_name):
    """The fields of generated table class ``tflite.<class_name>``, by vtable slot."""
    cls = getattr(importlib.import_module("tflite." + class_name), class_name)
    methods = {n: m for n, m in vars(cls).items() if inspect.isfunction(m) and n[:1].isupper()}
    fields = []
    for name, method in methods.items():
        if any(name.endswith(s) and name[:-len(s)] in methods for s in _HELPER_SUFFIXES):
            continue
        field = _field(name, inspect.getsource(method))
        if field is not None:
            fields.append(field)
    return tuple(sorted(fields, key=lambda f: f.vtable_offset))


@functools.lru_cache(maxsize=None)
def _union_members(enum_name):
    enum = getattr(importlib.import_module("tflite." + enum_name), enum_name)
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and k != "NONE"}


def float_fields(class_name):
    """The float32 scalar fields of table ``tflite.<class_name>`` (e.g. LeakyReluOptions.alpha)."""
    return [f for f in _fields(class_name) if f.kind == "scalar" and f.fmt == "f"]


def union_member(enum_name, union_type):
    """The table class a union type value names (None for NONE or an unknown value)."""
    return _union_members(enum_name).get(union_type)


def schema_tables():
    """Every table class of the ``tflite`` package (for tests: each must derive)."""
    import tflite
    return sorted(m.name for m in pkgutil.iter_modules(tflite.__path__) if m.name[:1].isupper())


class _Verifier:
    def __init__(self, data):
        self.data, self.depth, self.tables = data, 0, 0

    def check(self, pos, nbytes, align, what):
        if pos < 0 or pos + nbytes > len(self.data):
            raise FlatbufferError(f"{what} at byte {pos} runs past the end of the file ({len(self.data)} bytes)")
        if pos % align:
            raise FlatbufferError(f"{what} at byte {pos} is not aligned to {align} bytes")

    def scalar(self, fmt, pos, what):
        self.check(pos, struct.calcsize(fmt), struct.calcsize(fmt), what)
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def offset(self, pos, what):
        """Where the uoffset at ``pos`` points; as Verifier::VerifyOffset."""
        target = self.scalar("I", pos, what)
        if target == 0 or target >= 1 << 31:
            raise FlatbufferError(f"{what} at byte {pos} has an invalid offset {target}")
        self.check(pos + target, 1, 1, what)
        return pos + target

    def vector(self, pos, width, what):
        """The length of the vector (or string) at ``pos``, checked to fit in the file."""
        length = self.scalar("I", pos, f"{what} length")
        if length >= MAX_BUFFER_SIZE // max(width, 1):
            raise FlatbufferError(f"{what} at byte {pos} has an invalid length {length}")
        self.check(pos + 4, length * width, 1, f"{what} ({length} elements)")
        return length

    def string(self, pos, what):
        length = self.vector(pos, 1, what)
        self.check(pos + 4 + length, 1, 1, f"{what} terminator")
        if self.data[pos + 4 + length] != 0:
            raise FlatbufferError(f"{what} at byte {pos} is not zero-terminated")

    def table(self, pos, class_name, what):
        self.depth += 1
        self.tables += 1
        if self.depth > MAX_DEPTH:
            raise FlatbufferError(f"{what}: tables nested more than {MAX_DEPTH} deep")
        if self.tables > MAX_TABLES:
            raise FlatbufferError(f"{what}: more than {MAX_TABLES} tables")
        vtable = pos - self.scalar("i", pos, f"{what} table")
        self.check(vtable, 2, 2, f"{what} vtable")
        vtable_bytes = self.scalar("H", vtable, f"{what} vtable")
        if vtable_bytes % 2:
            raise FlatbufferError(f"{what} vtable at byte {vtable} has an odd size {vtable_bytes}")
        self.check(vtable, vtable_bytes, 2, f"{what} vtable")
        present = {}
        for field in _fields(class_name):
            if field.vtable_offset + 2 <= vtable_bytes:
                at = struct.unpack_from("<H", self.data, vtable + field.vtable_offset)[0]
                if at:
                    present[field.name] = (field, pos + at)
        for name, (field, at) in present.items():
            self.field(field, at, present, f"{what}.{name}")
        self.depth -= 1

    def field(self, field, at, present, what):
        if field.kind == "scalar":
            self.check(at, field.width, field.width, what)
            return
        target = self.offset(at, what)
        if field.kind == "string":
            self.string(target, what)
        elif field.kind == "table":
            self.table(target, field.table, what)
        elif field.kind == "vector":
            self.vector(target, field.width, what)
        elif field.kind == "union":
            type_field = present.get(field.name + "_type")
            union_type = 0 if type_field is None else self.data[type_field[1]]
            member = _union_members(field.table).get(union_type)
            if member is not None:  # the Verifier accepts unknown members, as later readers ignore them
                self.table(target, member, what)
        else:  # a vector of strings or of tables
            for i in range(self.vector(target, 4, what)):
                element = f"{what}[{i}]"
                item = self.offset(target + 4 + 4 * i, element)
                if field.kind == "strings":
                    self.string(item, element)
                else:
                    self.table(item, field.table, element)


def verify_model_buffer(data: bytes) -> None:
    """Raise FlatbufferError unless ``data`` passes ``tflite::VerifyModelBuffer``'s checks."""
    if len(data) >= MAX_BUFFER_SIZE:
        raise FlatbufferError(f"the file is larger than a flatbuffer can be ({len(data)} bytes)")
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise FlatbufferError("file identifier 'TFL3' missing")
    verifier = _Verifier(data)
    verifier.table(verifier.offset(0, "the root offset"), "Model", "Model")
