"""edgekit.toml / [tool.edgekit] parsing: every error names the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from edgekit.build.cache import cache_key, key_parts
from edgekit.build.config import load_config
from edgekit.errors import ConfigError, UsageError

GOOD = """
[build]
output = "out/models"

[[models]]
name = "digits"
source = "zoo:mnist_cnn"
targets = ["ort", "openvino"]
precision = "fp32"
calibration = "calib/digits.npz"
max_size_mb = 1.5
"""


def write(tmp_path: Path, text: str, name: str = "edgekit.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_config_paths_relative_to_the_file(tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "digits.npz").write_bytes(b"x")
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.output == (tmp_path / "out" / "models").resolve()
    m = cfg.models[0]
    assert m.name == "digits" and m.source == "zoo:mnist_cnn"
    assert m.targets == ["onnxruntime", "openvino"]  # alias normalized
    assert m.get("calibration") == str((tmp_path / "calib" / "digits.npz").resolve())
    assert m.get("max_size_mb") == 1.5


def test_config_found_in_folder_and_pyproject(tmp_path):
    with pytest.raises(UsageError, match="no edgekit.toml"):
        load_config(tmp_path)
    write(tmp_path, '[project]\nname = "app"\n\n[[tool.edgekit.models]]\nname = "d"\nsource = "zoo:mnist_cnn"\n',
          "pyproject.toml")
    cfg = load_config(tmp_path)
    assert cfg.path.name == "pyproject.toml" and cfg.models[0].targets == ["onnxruntime"]
    write(tmp_path, '[[tool.edgekit.models]]\nname = "d"\nsource = "zoo:mnist_cnn"\nprecison = "int8"\n',
          "pyproject.toml")
    with pytest.raises(ConfigError, match=r"pyproject.toml: tool.edgekit.models\[0\].*'precison'.*did you mean 'precision'"):
        load_config(tmp_path / "pyproject.toml")


@pytest.mark.parametrize("body, pattern", [
    ('precison = "int8"', r"unknown key 'precison'.*did you mean 'precision'.*allowed keys: name, source"),
    ('precision = "bf16"', r"bad value for 'precision': 'bf16'.*expected one of 'fp32', 'fp16', 'int8'"),
    ('targets = ["coreml"]', r"bad value for 'targets'.*onnxruntime.*openvino.*got 'coreml'"),
    ("max_size_mb = -1", r"bad value for 'max_size_mb'.*a number > 0"),
    ("max_accuracy_drop = 2", r"'max_accuracy_drop'.*<= 0.99"),
    ("calibration_size = 0", r"'calibration_size'.*integer >= 1"),
    ("prune = 1.5", r"'prune'.*fraction between 0 and 1"),
    ('tolerances = { cosinus = 0.9 }', r"'tolerances'.*keys from: max_abs_error.*got 'cosinus'"),
    ('calibration = "missing/data.npz"', r"'calibration' not found: .*missing/data.npz"),
    ('latency_device = "local"', r"'latency_device' without 'max_latency_ms'"),
    ('input_shapes = { input = [1, 0, 28] }', r"'input_shapes'.*positive integer"),
    ('input_shapes = { ids = "1x12:int65" }', r"'input_shapes'.*unknown dtype 'int65'"),
])
def test_bad_model_keys(tmp_path, body, pattern):
    path = write(tmp_path, f'[[models]]\nname = "digits"\nsource = "zoo:mnist_cnn"\n{body}\n')
    with pytest.raises(ConfigError, match=pattern) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and "models[0] ('digits')" in str(exc.value)


@pytest.mark.parametrize("text, pattern", [
    ('[[models]]\nsource = "zoo:mnist_cnn"\n', r"missing key 'name'"),
    ('[[models]]\nname = "a b"\nsource = "zoo:mnist_cnn"\n', r"'name'.*letters, digits"),
    ('[[models]]\nname = "a"\nsource = "zoo:mnist_cnn"\n[[models]]\nname = "a"\nsource = "zoo:mnist_cnn"\n',
     r"duplicate model name 'a'"),
    ('[[models]]\nname = "a"\nsource = "nothere/model.onnx"\n', r"'source'.*does not exist"),
    ('[build]\nouput = "x"\n[[models]]\nname = "a"\nsource = "zoo:mnist_cnn"\n', r"\[build\]: unknown key 'ouput'.*did you mean 'output'"),
    ('[[model]]\nname = "a"\n', r"unknown key 'model'.*did you mean 'models'"),
    ('[build]\noutput = "x"\n', r"no \[\[models\]\] table"),
    ('[[models]\nname = "a"\n', r"not valid TOML"),
])
def test_bad_files(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, text))


def test_cli_config_error_exit_code_2(tmp_path):
    write(tmp_path, '[[models]]\nname = "digits"\nsource = "zoo:mnist_cnn"\ntargets = ["coreml"]\n')
    proc = run_cli("build", cwd=tmp_path, env={"EDGEKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stderr
    assert "edgekit.toml" in proc.stderr and "'targets'" in proc.stderr and "onnxruntime" in proc.stderr
    assert not (tmp_path / "edgekit-out").exists()


def test_cache_key_tracks_only_what_shapes_the_artifact(tmp_path):
    calib = tmp_path / "c.npz"
    calib.write_bytes(b"one")
    base = '[[models]]\nname = "d"\nsource = "zoo:mnist_cnn"\ncalibration = "c.npz"\n'

    def key(extra: str = "", target: str = "onnxruntime") -> tuple[str, dict]:
        m = load_config(write(tmp_path, base + extra)).models[0]
        parts = key_parts(m, target)
        return cache_key(parts), parts

    k0, p0 = key()
    assert key()[0] == k0  # stable
    # size/latency budgets and tolerances are checks, not inputs (max_accuracy_drop also steers int8
    # quantization, so it is an input)
    assert key("max_size_mb = 0.5\nmax_latency_ms = 3\ntolerances = { cosine = 0.99 }\n")[0] == k0
    assert key("max_accuracy_drop = 0.1\n")[0] != k0
    k1, p1 = key("seed = 3\n")
    assert k1 != k0 and [k for k in p0 if p0[k] != p1[k]] == ["config"]
    k2, p2 = key(target="openvino")
    assert k2 != k0 and [k for k in p0 if p0[k] != p2[k]] == ["config"]
    calib.write_bytes(b"two")  # same path, new content
    k3, p3 = key()
    assert k3 != k0 and [k for k in p0 if p0[k] != p3[k]] == ["calibration"]
    # content, not location: the same config and data in another folder give the same key
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "c.npz").write_bytes(b"two")
    m = load_config(write(other, base)).models[0]
    assert cache_key(key_parts(m, "onnxruntime")) == k3


def test_source_file_content_in_key(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model-a")
    cfg = write(tmp_path, '[[models]]\nname = "d"\nsource = "m.onnx"\n')
    k0 = cache_key(key_parts(load_config(cfg).models[0], "onnxruntime"))
    model.write_bytes(b"model-b")
    parts = key_parts(load_config(cfg).models[0], "onnxruntime")
    assert cache_key(parts) != k0
    (tmp_path / "m.onnx.data").write_bytes(b"weights")  # external data sidecar counts too
    assert cache_key(key_parts(load_config(cfg).models[0], "onnxruntime")) != cache_key(parts)


def test_fingerprint_memo_notices_edits(tmp_path):
    import os

    from edgekit.build.cache import FingerprintMemo

    model = tmp_path / "m.onnx"
    model.write_bytes(b"model-a")
    cfg = write(tmp_path, '[[models]]\nname = "d"\nsource = "m.onnx"\n')
    m = load_config(cfg).models[0]
    (tmp_path / "cache").mkdir()  # (the model's folder is watched too: a new sidecar file counts)
    memo = FingerprintMemo(tmp_path / "cache")
    k0 = cache_key(key_parts(m, "onnxruntime", memo))
    memo.save()
    memo = FingerprintMemo(tmp_path / "cache")  # a later build reads the remembered fingerprints
    assert cache_key(key_parts(m, "onnxruntime", memo)) == k0 and not memo.dirty
    st = model.stat()
    model.write_bytes(b"model-b")  # same size; only the mtime tells
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache_key(key_parts(m, "onnxruntime", memo)) != k0
    assert cache_key(key_parts(m, "onnxruntime")) == cache_key(key_parts(m, "onnxruntime", memo))


def test_input_shapes_with_a_dtype_reach_the_model(tmp_path):
    """`input_shapes = {ids = "1x7:int64"}` (a token-id input of a torch factory) is what --input-shape
    ids=1x7:int64 is on the command line."""
    import sys

    from edgekit.build.runner import _convert

    fixtures = str(Path(__file__).parent / "fixtures")
    sys.path.insert(0, fixtures)
    try:
        path = write(tmp_path, '[[models]]\nname = "tok"\nsource = "tinymodels:token_encoder"\n'
                               'targets = ["onnxruntime"]\ninput_shapes = { ids = "1x7:int64" }\n')
        model = load_config(path).models[0]
        assert model.options["input_shapes"] == {"ids": "1x7:int64"}
        out = _convert(model, ["onnxruntime"], tmp_path / "out")
        assert out["model"]["inputs"][0]["dtype"] == "int64" and out["artifacts"][0]["verification"]["passed"]
    finally:
        sys.path.remove(fixtures)
