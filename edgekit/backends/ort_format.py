"""Byte-identical .ort files. ONNX Runtime writes the kernel-type-string resolver of an .ort file from a
hash map, so the same model saved twice (even in one process) gives different bytes (same content, other
layout); app builds expect the same bytes for the same inputs (caches, reproducible builds).

The resolver is the last thing ONNX Runtime serialises, so it and the root table sit at the front of the
flatbuffer (flatbuffers grow downwards) and the model is a self-contained block behind them. We keep
that block byte for byte and rebuild the front in a fixed order with the flatbuffer classes ONNX Runtime
ships. The result is checked (same resolver entries, same model bytes, ONNX Runtime opens it) before it
replaces the file; anything unexpected leaves the file as ONNX Runtime wrote it.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from edgekit.progress import log

_IDENT = b"ORTM"


def _resolver_entries(root: Any) -> list[tuple[bytes, list[tuple[bytes, list[tuple[int, int]]]]]]:
    res = root.KernelTypeStrResolver()
    out = []
    for i in range(res.OpKernelTypeStrArgsLength()):
        op = res.OpKernelTypeStrArgs(i)
        kinds = []
        for j in range(op.KernelTypeStrArgsLength()):
            k = op.KernelTypeStrArgs(j)
            kinds.append((k.KernelTypeStr(), [(k.Args(a).ArgType(), k.Args(a).Index()) for a in range(k.ArgsLength())]))
        out.append((op.OpId(), kinds))
    return out


def _field_pos(table: Any, vt_offset: int) -> int | None:
    """Absolute position of the object a table's offset field points to (None when absent)."""
    o = table._tab.Offset(vt_offset)
    return table._tab.Indirect(o + table._tab.Pos) if o else None


def _rebuild(buf: bytes) -> bytes | None:
    import flatbuffers
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        ArgTypeAndIndex as A,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        InferenceSession as S,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        KernelTypeStrArgsEntry as E,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        KernelTypeStrResolver as R,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        OpIdKernelTypeStrArgsEntry as O,
    )

    if buf[4:8] != _IDENT:
        return None
    root = S.InferenceSession.GetRootAs(buf, 0)
    vtable = root._tab.Pos - struct.unpack_from("<i", buf, root._tab.Pos)[0]
    if struct.unpack_from("<H", buf, vtable)[0] > 4 + 2 * 4 or root._tab.Offset(8):  # a field we do not know
        return None
    version, model, resolver = _field_pos(root, 4), _field_pos(root, 6), _field_pos(root, 10)
    if version is None or model is None or resolver is None:
        return None
    model_vtable = model - struct.unpack_from("<i", buf, model)[0]
    tail = min(model, model_vtable)
    if version < tail or resolver >= tail:
        return None
    entries = _resolver_entries(root)

    n = len(buf)
    b = flatbuffers.Builder(n + 1024)
    b.head -= n - tail  # the model block, verbatim, at the same distance from the end (keeps its alignment)
    b.Bytes[b.head:b.head + n - tail] = buf[tail:]
    b.minalign = 8

    def vector(start: Any, items: list[int]) -> int:
        start(b, len(items))
        for it in reversed(items):
            b.PrependUOffsetTRelative(it)
        return b.EndVector()

    def keyed(table: Any, add_key: Any, key: bytes, add_items: Any, start_items: Any, items: list[int]) -> int:
        """A {key string, vector of tables} entry (both resolver levels have this shape)."""
        vec = vector(start_items, items)
        key_str = b.CreateString(key)
        table.Start(b)
        add_key(b, key_str)
        add_items(b, vec)
        return table.End(b)

    def arg(arg_type: int, index: int) -> int:
        A.Start(b)
        A.AddArgType(b, arg_type)
        A.AddIndex(b, index)
        return A.End(b)

    op_offsets = [
        keyed(O, O.AddOpId, op_id, O.AddKernelTypeStrArgs, O.StartKernelTypeStrArgsVector,
              [keyed(E, E.AddKernelTypeStr, kind, E.AddArgs, E.StartArgsVector, [arg(*a) for a in args])
               for kind, args in kinds])
        for op_id, kinds in entries]
    ops_vec = vector(R.StartOpKernelTypeStrArgsVector, op_offsets)
    R.Start(b)
    R.AddOpKernelTypeStrArgs(b, ops_vec)
    new_resolver = R.End(b)
    S.Start(b)
    S.AddOrtVersion(b, n - version)  # offsets count from the end of the buffer while building
    S.AddModel(b, n - model)
    S.AddKernelTypeStrResolver(b, new_resolver)
    b.Finish(S.End(b), file_identifier=_IDENT)
    out = bytes(b.Output())

    check = S.InferenceSession.GetRootAs(out, 0)
    new_model = _field_pos(check, 6)
    if (_resolver_entries(check) != entries or new_model is None or len(out) - new_model != n - model
            or out[len(out) - (n - tail):] != buf[tail:]):
        return None
    return out


def canonicalize_ort(path: Path) -> bool:
    """Rewrite an .ort file ONNX Runtime just saved into its canonical bytes; False when left as written."""
    import onnxruntime as ort

    buf = path.read_bytes()
    try:
        out = _rebuild(buf)
    except Exception:  # noqa: BLE001 - a layout we do not expect: keep ONNX Runtime's file
        out = None
    if out is None:
        log(f"{path.name}: kept ONNX Runtime's .ort layout (not byte-reproducible)", verbose_only=True)
        return False
    if out == buf:
        return True
    tmp = path.with_name(f".canonical-{path.name}")  # keeps the .ort suffix ONNX Runtime goes by
    tmp.write_bytes(out)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.load_model_format", "ORT")
    try:
        ort.InferenceSession(str(tmp), so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(path)
    return True
