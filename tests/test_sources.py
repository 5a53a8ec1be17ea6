"""Every model source kind converts to verified fp32 artifacts; unsafe pickles are refused."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

SHAPE = ["--input-shape", "1x3x16x16"]


@pytest.mark.parametrize("kind", ["onnx", "onnx_ext", "pt2", "ts"])
def test_file_sources_convert_and_verify(kind, model_files, invoke, tmp_path):
    extra = SHAPE if kind == "ts" else []
    res = invoke("convert", str(model_files[kind]), "-t", "onnxruntime", "-t", "openvino", "-o", str(tmp_path),
                 *extra, "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    assert {a["target"] for a in out["artifacts"]} == {"onnxruntime", "openvino"}
    for art in out["artifacts"]:
        v = art["verification"]
        assert v["passed"] and v["max_abs_error"] < 1e-4 and v["cosine"] > 0.99999
        assert (tmp_path / art["path"].split("/")[-1]).is_file()


def test_dynamic_batch_survives(model_files, invoke, tmp_path):
    res = invoke("convert", str(model_files["pt2"]), "-t", "onnxruntime", "-o", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    path = res.json()["artifacts"][0]["path"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "image"  # named after forward()'s parameter
    out = sess.run(None, {"image": np.random.rand(3, 3, 16, 16).astype(np.float32)})[0]
    assert out.shape == (3, 5)


@pytest.mark.parametrize("weights", ["sd", "safetensors"])
def test_factory_with_weights(weights, model_files, invoke, tmp_path):
    res = invoke("convert", "tinymodels:tiny_cnn", "--weights", str(model_files[weights]), "-t", "ort",
                 "-o", str(tmp_path), "--input-shape", "image=1x3x16x16", "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    assert out["model"]["inputs"][0]["name"] == "image"
    assert out["model"]["inputs"][0]["shape"] == ["batch", 3, 16, 16]
    assert out["artifacts"][0]["verification"]["passed"]


def test_factory_two_inputs_named_shapes(invoke, tmp_path):
    res = invoke("convert", "tinymodels:two_inputs", "-t", "ort", "-o", str(tmp_path),
                 "--input-shape", "left=1x6", "--input-shape", "right=1x3", "--json")
    assert res.returncode == 0, res.stderr
    assert [i["name"] for i in res.json()["model"]["inputs"]] == ["left", "right"]


def test_pickled_module_is_refused(model_files, invoke, tmp_path):
    res = invoke("convert", str(model_files["pickle"]), "-t", "ort", "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "pickled model is refused" in res.stderr
    assert not (tmp_path / "o").exists()


def test_pickled_weights_needing_code_are_refused(model_files, invoke, tmp_path):
    res = invoke("convert", "tinymodels:tiny_cnn", "--weights", str(model_files["pickle"]), "-t", "ort",
                 "-o", str(tmp_path / "o"), *SHAPE)
    assert res.returncode == 2
    assert "needs code to load" in res.stderr


def test_factory_errors(invoke, tmp_path):
    res = invoke("convert", "tinymodels:not_a_module", "-t", "ort", "-o", str(tmp_path), *SHAPE)
    assert res.returncode == 2 and "not a torch.nn.Module" in res.stderr
    res = invoke("convert", "nosuchpkg.mod:fn", "-t", "ort", "-o", str(tmp_path), *SHAPE)
    assert res.returncode == 2 and "cannot import" in res.stderr
    res = invoke("convert", "tinymodels:tiny_cnn", "-t", "ort", "-o", str(tmp_path))
    assert res.returncode == 2 and "--input-shape" in res.stderr


def test_factory_integer_input_dtype_and_torch_transformer_layer(invoke, tmp_path):
    """Token ids need `:int64` (torch forward() states no dtype); nn.TransformerEncoderLayer exports although
    it takes a fused kernel under no_grad."""
    res = invoke("convert", "tinymodels:token_encoder", "-t", "ort", "-o", str(tmp_path / "a"),
                 "--input-shape", "ids=1x7:int64", "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    assert out["model"]["inputs"][0]["dtype"] == "int64" and out["artifacts"][0]["verification"]["passed"]
    res = invoke("convert", "tinymodels:token_encoder", "-t", "ort", "-o", str(tmp_path / "b"), "--input-shape", "ids=1x7")
    assert res.returncode == 2 and "ids=1x128:int64" in res.stderr.replace("NAME", "ids")
    assert not (tmp_path / "b").exists()
    res = invoke("convert", "tinymodels:token_encoder", "-t", "ort", "-o", str(tmp_path / "c"),
                 "--input-shape", "ids=1x7:int65")
    assert res.returncode == 2 and "unknown dtype 'int65'" in res.stderr


def test_onnx_input_dtype_contradiction_is_refused(model_files, invoke, tmp_path):
    res = invoke("convert", str(model_files["onnx"]), "-t", "ort", "-o", str(tmp_path / "o"),
                 "--input-shape", "image=1x3x16x16:int64")
    assert res.returncode == 2 and "--input-shape says int64" in res.stderr


def test_float16_model_with_float32_io_converts_to_every_target(model_files, invoke, tmp_path):
    """A float16 conversion that keeps float32 inputs writes its input Cast after the nodes that read it
    (ONNX Runtime accepts it, the ONNX checker does not) and OpenVINO then names the input port after that
    Cast: the graph is put in order, the port found under the model's input name."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = tmp_path / "half.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(model_files["onnx"])), keep_io_types=True), str(src))
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(onnx.load(str(src)))
    res = invoke("convert", str(src), "-t", "onnxruntime", "-t", "openvino", "-t", "tflite", "-o",
                 str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    arts = res.json()["artifacts"]
    assert len(arts) == 3 and all(a["verification"]["passed"] for a in arts)


def test_factory_dict_outputs_and_defaulted_parameters(invoke, tmp_path):
    """A dict result becomes one named output per key; a parameter left at its default stays a constant
    (the TorchScript exporter used to make it a graph input that nothing feeds)."""
    res = invoke("convert", "tinymodels:dict_heads", "-t", "ort", "-t", "tflite", "-o", str(tmp_path), *SHAPE, "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    assert out["model"]["outputs"] == ["logits", "embedding"]
    assert [i["name"] for i in out["model"]["inputs"]] == ["image"]
    assert all(a["verification"]["passed"] for a in out["artifacts"])
    import onnx

    onnx_art = next(a for a in out["artifacts"] if a["target"] == "onnxruntime")
    graph = onnx.load(str(tmp_path / onnx_art["path"].split("/")[-1])).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits", "embedding"]


def test_a_pt2_programs_dynamic_batch_is_named_batch_in_the_artifact(invoke, tmp_path):
    """A torch.export program with a dynamic batch: the ONNX artifact named that axis after torch's symbol
    ('s31x3x16x16') while edgekit's JSON said 'batch'; the artifact now says 'batch' too, inputs and outputs."""
    import onnx
    import torch
    from torch import nn

    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    batch = torch.export.Dim("b", min=1, max=64)
    torch.export.save(torch.export.export(m, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: batch},)),
                      str(tmp_path / "dyn.pt2"))
    res = invoke("convert", str(tmp_path / "dyn.pt2"), "-t", "ort", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    assert res.json()["model"]["inputs"][0]["shape"][0] == "batch"
    g = onnx.load(res.json()["artifacts"][0]["path"]).graph
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert g.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
