"""`edgekit inspect`: I/O names, shapes, dtypes, layout and quantization read from real artifacts
(ONNX from torch export, a QDQ ONNX with uint8 NHWC input, OpenVINO IR, a TFLite flatbuffer that the
LiteRT interpreter runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from edgekit.errors import ModelLoadError, UsageError
from edgekit.inspect import inspect_artifact


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, model_files) -> dict[str, Path]:
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    d = tmp_path_factory.mktemp("inspect")
    out = {"onnx": model_files["onnx"], "onnx_ext": model_files["onnx_ext"]}
    ov.save_model(ov.convert_model(str(model_files["onnx"])), str(d / "tiny.xml"), compress_to_fp16=False)
    out["xml"] = d / "tiny.xml"
    # uint8 NHWC input -> DequantizeLinear -> Transpose to NCHW -> Conv -> QuantizeLinear int8 output
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    consts = [w, numpy_helper.from_array(np.array(0.02, np.float32), "s_in"),
              numpy_helper.from_array(np.array(128, np.uint8), "z_in"),
              numpy_helper.from_array(np.array(0.1, np.float32), "s_out"),
              numpy_helper.from_array(np.array(-3, np.int8), "z_out")]
    nodes = [helper.make_node("DequantizeLinear", ["img", "s_in", "z_in"], ["f"]),
             helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s_out", "z_out"], ["feat"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("img", TensorProto.UINT8, ["n", 8, 8, 3])],
                              [helper.make_tensor_value_info("feat", TensorProto.INT8, ["n", 4, 8, 8])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(d / "qdq.onnx"))
    out["qdq"] = d / "qdq.onnx"
    out["tflite"] = d / "tiny.tflite"
    out["tflite"].write_bytes(_tflite_model())
    return out


def _tflite_model() -> bytes:
    """int8 NHWC input (1,4,4,3) -> DEQUANTIZE -> CONV_2D 1x1 (2 filters) -> float (1,4,4,2)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name, shape, ttype, buffer, quant=None):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, ttype, buffer
        if quant:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = quant
            t.quantization = q
        return t

    bufs = [s.BufferT() for _ in range(6)]
    bufs[3].data = np.arange(6, dtype=np.float32).reshape(2, 1, 1, 3).tobytes()
    bufs[4].data = np.array([0.5, -0.5], np.float32).tobytes()
    sg = s.SubGraphT()
    sg.tensors = [tensor(b"image", [1, 4, 4, 3], s.TensorType.INT8, 1, ([0.5], [-3])),
                  tensor(b"image_f", [1, 4, 4, 3], s.TensorType.FLOAT32, 2),
                  tensor(b"w", [2, 1, 1, 3], s.TensorType.FLOAT32, 3),
                  tensor(b"b", [2], s.TensorType.FLOAT32, 4),
                  tensor(b"out", [1, 4, 4, 2], s.TensorType.FLOAT32, 5)]
    sg.inputs, sg.outputs = [0], [4]
    deq, conv = s.OperatorT(), s.OperatorT()
    deq.opcodeIndex, deq.inputs, deq.outputs = 0, [0], [1]
    conv.opcodeIndex, conv.inputs, conv.outputs = 1, [1, 2, 3], [4]
    conv.builtinOptionsType = s.BuiltinOptions.Conv2DOptions
    opts = s.Conv2DOptionsT()
    opts.padding, opts.strideW, opts.strideH = s.Padding.VALID, 1, 1
    conv.builtinOptions = opts
    sg.operators = [deq, conv]
    codes = []
    for op in (s.BuiltinOperator.DEQUANTIZE, s.BuiltinOperator.CONV_2D):
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = op, op, 1
        codes.append(c)
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers, m.description = 3, codes, [sg], bufs, b"edgekit test"
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_onnx_from_torch(artifacts):
    info = inspect_artifact(artifacts["onnx"])
    assert info["format"] == "onnx" and info["backend"] == "onnxruntime" and info["precision"] == "fp32"
    assert info["inputs"] == [{"name": "image", "shape": ["batch", 3, 16, 16], "dtype": "float32",
                               "layout": "NCHW", "quantization": None}]
    assert info["outputs"][0]["name"] == "out" and info["outputs"][0]["shape"] == ["batch", 5]
    assert info["outputs"][0]["layout"] is None  # rank 2: no image layout
    assert info["ops"]["Conv"] == 1 and info["metadata"]["producer"].startswith("pytorch")
    assert info["size_bytes"] == artifacts["onnx"].stat().st_size and len(info["sha256"]) == 64


def test_onnx_external_data_lists_both_files(artifacts):
    info = inspect_artifact(artifacts["onnx_ext"])
    assert [Path(f["path"]).name for f in info["files"]] == ["tiny_ext.onnx", "tiny_ext.onnx.data"]
    assert info["size_bytes"] == sum(f["size"] for f in info["files"])


def test_qdq_onnx_nhwc_uint8_input_and_int8_output(artifacts):
    info = inspect_artifact(artifacts["qdq"])
    assert info["precision"] == "int8"
    (inp,), (out,) = info["inputs"], info["outputs"]
    assert inp["dtype"] == "uint8" and inp["layout"] == "NHWC"  # found through the Transpose to NCHW
    assert inp["quantization"] == {"scale": [pytest.approx(0.02)], "zero_point": [128]}
    assert out["dtype"] == "int8" and out["layout"] == "NCHW"
    assert out["quantization"] == {"scale": [pytest.approx(0.1)], "zero_point": [-3]}


def test_openvino_ir(artifacts):
    info = inspect_artifact(artifacts["xml"])
    assert info["format"] == "openvino" and info["precision"] == "fp32"
    assert [Path(f["path"]).name for f in info["files"]] == ["tiny.xml", "tiny.bin"]
    assert info["inputs"] == [{"name": "image", "shape": [None, 3, 16, 16], "dtype": "float32",
                               "layout": "NCHW", "quantization": None}]
    assert info["outputs"][0]["name"] == "out" and info["ops"]["Convolution"] == 1



def test_openvino_rt_info_is_plain_values(artifacts, tmp_path):
    """rt_info (e.g. framework facts an IR carries from its converter) comes out as values, not an OVAny repr."""
    import openvino as ov

    model = ov.Core().read_model(str(artifacts["xml"]))
    model.set_rt_info("onnxruntime.quant", ["framework", "onnx.infer"])
    ov.save_model(model, str(tmp_path / "rt.xml"), compress_to_fp16=False)
    assert inspect_artifact(tmp_path / "rt.xml")["metadata"]["framework"] == {"onnx.infer": "onnxruntime.quant"}


def test_tflite_int8_input(artifacts):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(artifacts["tflite"]))  # the test model is a real, runnable one
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.full((1, 4, 4, 3), 1, np.int8))
    interp.invoke()
    # dequantized input (1 - (-3)) * 0.5 = 2.0 per channel: filter 0 = 0+1+2 -> 6 + 0.5 bias
    assert np.allclose(interp.get_tensor(interp.get_output_details()[0]["index"])[0, 0, 0], [6.5, 23.5])

    info = inspect_artifact(artifacts["tflite"])
    assert info["format"] == "tflite" and info["backend"] == "tflite"
    assert info["inputs"] == [{"name": "image", "shape": [1, 4, 4, 3], "dtype": "int8", "layout": "NHWC",
                               "quantization": {"scale": [0.5], "zero_point": [-3]}}]
    assert info["outputs"] == [{"name": "out", "shape": [1, 4, 4, 2], "dtype": "float32", "layout": "NHWC",
                                "quantization": None}]
    assert info["ops"] == {"CONV_2D": 1, "DEQUANTIZE": 1} and info["metadata"]["description"] == "edgekit test"


def test_layout_from_transpose_permutations():
    from edgekit.inspect import layout_from_transpose

    assert layout_from_transpose("onnx", [0, 3, 1, 2], feeds_transpose=True) == "NHWC"
    assert layout_from_transpose("onnx", [0, 2, 3, 1], feeds_transpose=False) == "NHWC"
    assert layout_from_transpose("tflite", [0, 2, 3, 1], feeds_transpose=True) == "NCHW"
    assert layout_from_transpose("tflite", [0, 3, 1, 2], feeds_transpose=False) == "NCHW"


def test_bad_artifacts(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        inspect_artifact(tmp_path / "missing.onnx")
    (tmp_path / "m.pb").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"unknown artifact type '.pb'.*\.onnx, \.ort, \.xml, \.tflite"):
        inspect_artifact(tmp_path / "m.pb")
    (tmp_path / "bad.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError, match="not a TFLite flatbuffer"):
        inspect_artifact(tmp_path / "bad.tflite")
    (tmp_path / "bad.onnx").write_bytes(b"\x08garbage")
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        inspect_artifact(tmp_path / "bad.onnx")
    (tmp_path / "lonely.xml").write_text("<net/>")
    with pytest.raises(ModelLoadError, match="lonely.bin is missing"):
        inspect_artifact(tmp_path / "lonely.xml")


def test_cli_text_and_json(artifacts):
    proc = run_cli("inspect", str(artifacts["qdq"]))
    assert proc.returncode == 0, proc.stderr
    assert "img  nx8x8x3  uint8  NHWC  scale=0.02 zero_point=128" in proc.stdout.replace("?", "n")
    proc = run_cli("inspect", str(artifacts["tflite"]), "--json")
    assert json.loads(proc.stdout)["inputs"][0]["quantization"]["zero_point"] == [-3]
    proc = run_cli("inspect", str(artifacts["onnx"].parent / "nope.onnx"), "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["type"] == "UsageError"
