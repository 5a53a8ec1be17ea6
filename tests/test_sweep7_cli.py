"""The CLI contract as a build script sees it: exit codes, one JSON document on stdout under --json
(also for errors click itself raises, and for Ctrl-C), every command's --help lists the exit codes,
and bad artifact files are exit code 2 with one line, never a crash or a success."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]


def _edgekit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CI="true", EDGEKIT_CACHE_DIR=str(cwd / ".cache"))  # never the user's
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_help_lists_exit_codes(name: str) -> None:
    res = CliRunner().invoke(cli, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Exit codes:" in res.output and "internal error" in res.output and "130" in res.output


@pytest.mark.parametrize("args", [
    ["convert", "m.onnx", "-t", "onnxruntime", "--precision", "int4", "--json"],  # bad choice
    ["convert", "m.onnx", "-t", "onnxruntime", "--frobnicate", "--json"],  # unknown flag
    ["profile", "m.onnx", "--runs", "many", "--json"],  # not an integer
    ["cache", "clean", "--older-than", "x", "--json"],  # nested group
    ["cache", "clean", "--older-than", "-1", "--json"],  # removed every entry
    ["frobnicate", "--json"],  # unknown command
    ["convert", "m.onnx", "-t", "onnxruntime", "--seed", "-1", "--json"],  # was an internal error (exit 1)
    ["distill", "zoo:mnist_cnn", "--prune", "0.3", "-o", "s.pt2", "--seed", "-1", "--json"],
    ["profile", "m.onnx", "--timeout", "-1", "--json"],  # was 'device unavailable' (exit 6): timed out after -1 s
])
def test_click_usage_errors_still_print_one_json_error(args: list[str], tmp_path: Path) -> None:
    res = _edgekit(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    err = json.loads(res.stdout)["error"]  # exactly one JSON document
    assert err["exit_code"] == 2 and err["type"] == "UsageError" and err["message"]
    assert "Error:" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["inspect", "profile"])
@pytest.mark.parametrize("files,arg,problem", [
    ({"m.onnx": b""}, "m.onnx", "empty"),
    ({"m.tflite": b""}, "m.tflite", "empty"),
    ({"m.xml": b"<net/>"}, "m.xml", "m.bin is missing"),
    ({"m.xml": b"<net/>", "m.bin": b""}, "m.xml", "m.bin is empty"),
])
def test_bad_artifact_files_are_bad_input(command: str, files: dict, arg: str, problem: str,
                                          tmp_path: Path) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    res = _edgekit(command, arg, "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr  # not 0 (inspect of an empty .onnx) nor 4 (profile)
    assert problem in json.loads(res.stdout)["error"]["message"]
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; a build system cancelling the step
def test_interrupt_mid_conversion_exits_128_plus_signal_and_leaves_the_output_folder_as_it_was(
        sig: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "mnist_cnn.arm.int8.tflite"
    mine.write_bytes(b"the user's file")
    env = dict(os.environ, PYTHONPATH=str(ROOT), CI="true")
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "convert", "zoo:mnist_cnn", "-t", "arm", "-o", str(out),
                             "--json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen = []
    for line in proc.stderr:  # interrupt once the work (and its temp folder in out/) has started
        seen.append(line)
        if "exporting to ONNX" in line:
            break
    proc.send_signal(sig)
    stdout, rest = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, "".join(seen) + rest  # SIGINT was exit 1; SIGTERM left .edgekit-tmp-*
    assert json.loads(stdout)["error"]["exit_code"] == 128 + sig
    assert "interrupted" in rest and "Traceback" not in rest and "Aborted" not in rest
    assert sorted(p.name for p in out.iterdir()) == [mine.name]  # no temp folder, no partial artifact
    assert mine.read_bytes() == b"the user's file"


def _save_ort(model, tmp_path: Path, name: str) -> Path:
    import onnx
    import onnxruntime as ort

    src = tmp_path / f"{name}.onnx"
    onnx.save(model, src)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.optimized_model_filepath = str(tmp_path / f"{name}.ort")
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return tmp_path / f"{name}.ort"


def test_inspect_reads_precision_and_ops_of_ort_files(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.inspect import inspect_artifact

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    bias = numpy_helper.from_array(np.ones((1, 4), np.float32), "b")
    fp32 = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"])], "g", [x], [y], [bias]),
                             opset_imports=[helper.make_opsetid("", 17)])
    scale, zp = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(128), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    int8 = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scale, zp]),
                             opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(int8)
    a = inspect_artifact(_save_ort(fp32, tmp_path, "a"))
    b = inspect_artifact(_save_ort(int8, tmp_path, "b"))
    assert (a["precision"], a["ops"]) == ("fp32", {"Add": 1})  # were None and {}
    assert (b["precision"], b["ops"]) == ("int8", {"QuantizeLinear": 1, "DequantizeLinear": 1})


def test_ort_files_are_byte_identical_from_save_to_save(tmp_path: Path) -> None:
    """ONNX Runtime serialises the .ort kernel-type resolver from a hash map: same content, other bytes
    from one save to the next (seen here 3 different files from 3 saves of one model)."""
    import hashlib

    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgekit.backends.ort_format import canonicalize_ort

    ops = ["Relu", "Sigmoid", "Neg", "Abs", "Exp", "Tanh", "Softplus", "Floor", "Ceil", "Sqrt"]
    nodes = [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"]) for i, op in enumerate(ops)]
    nodes.append(helper.make_node("Add", [f"t{len(ops)}", "t0"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"t0": np.linspace(0.1, 2.0, 8, dtype=np.float32)[None]}
    hashes = set()
    for i in range(4):
        path = _save_ort(model, tmp_path, f"m{i}")
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]
        assert canonicalize_ort(path)
        assert canonicalize_ort(path)  # idempotent
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]
        np.testing.assert_array_equal(got, want)
        hashes.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(hashes) == 1
    assert not list(tmp_path.glob(".canonical-*"))


def test_convert_twice_gives_the_same_bytes_and_the_json_hashes_match(tmp_path: Path) -> None:
    import hashlib

    src = _tiny_onnx(tmp_path / "dir with spaces ü" / "m.onnx")
    digests = []
    for run in ("a", "b"):
        res = _edgekit("convert", str(src), "-t", "onnxruntime", "-t", "ort-mobile", "-t", "openvino", "-t", "tflite",
                       "-o", str(tmp_path / run), "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        for art in json.loads(res.stdout)["artifacts"]:
            assert art["sha256"] == hashlib.sha256(Path(art["path"]).read_bytes()).hexdigest()
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / run).iterdir()})
    assert any(n.endswith(".ort") for n in digests[0]) and digests[0] == digests[1]


@pytest.mark.parametrize("out", ["taken.pt2", "a_file/m.pt2"])
def test_distill_output_that_cannot_be_a_file_fails_before_the_work(out: str, tmp_path: Path) -> None:
    (tmp_path / "taken.pt2").mkdir()
    (tmp_path / "a_file").write_text("the user's file")
    res = _edgekit("distill", "zoo:mnist_cnn", "--prune", "0.3", "-o", out, "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr  # was an internal error (exit 1) after pruning had run
    assert json.loads(res.stdout)["error"]["type"] == "UsageError"
    assert "Traceback" not in res.stderr and "pruning" not in res.stderr
    assert (tmp_path / "a_file").read_text() == "the user's file" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a_file", "taken.pt2"]


def _tiny_onnx(path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_folder_where_an_artifact_goes_fails_before_anything_is_replaced(tmp_path: Path) -> None:
    src = _tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "out"
    (out / "m.openvino.bin").mkdir(parents=True)  # the second file of the second target
    (out / "m.onnxruntime.onnx").write_bytes(b"the user's file")
    res = _edgekit("convert", str(src), "-t", "onnxruntime", "-t", "openvino", "-o", str(out), "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr  # was exit 1 with the .onnx replaced and a lone .xml written
    assert "is a folder" in json.loads(res.stdout)["error"]["message"]
    assert sorted(p.name for p in out.iterdir()) == ["m.onnxruntime.onnx", "m.openvino.bin"]
    assert (out / "m.onnxruntime.onnx").read_bytes() == b"the user's file"


def test_commit_undoes_the_renames_already_done_when_one_fails(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from edgekit import pipeline
    from edgekit.errors import UsageError

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (out / "a.onnx").write_bytes(b"old a")
    staged = []
    for name in ("a.onnx", "b.xml", "b.bin"):
        (work / name).write_bytes(b"new " + name.encode())
        staged.append((work / name, out / name))
    real = os.replace

    def flaky(src, dst):
        if Path(dst).name == "b.bin":
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(pipeline.os, "replace", flaky)
    with pytest.raises(UsageError, match="No space left on device; nothing was changed"):
        pipeline.commit(SimpleNamespace(staged=staged, work=work))
    assert sorted(p.name for p in out.iterdir()) == ["a.onnx"] and (out / "a.onnx").read_bytes() == b"old a"


def test_build_with_a_folder_where_an_artifact_goes_installs_nothing(tmp_path: Path) -> None:
    _tiny_onnx(tmp_path / "m.onnx")
    (tmp_path / "edgekit.toml").write_text('[[models]]\nname = "m"\nsource = "m.onnx"\n'
                                           'targets = ["onnxruntime", "tflite"]\n')
    out = tmp_path / "out"
    (out / "m.tflite").mkdir(parents=True)
    res = _edgekit("build", "-o", str(out), "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr  # was exit 1 (IsADirectoryError) with the .onnx already installed
    assert "is a folder" in json.loads(res.stdout)["error"]["message"]
    assert [p.name for p in out.iterdir()] == ["m.tflite"]


def test_calibration_size_beyond_the_data_says_so(tmp_path: Path) -> None:
    import numpy as np

    src = _tiny_onnx(tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).random((10, 3, 8, 8), dtype=np.float32))
    res = _edgekit("convert", str(src), "-t", "onnxruntime", "--calibration", "cal.npz", "--calibration-size", "50",
                   "-o", "out", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "--calibration-size 50 is more than the data holds" in res.stderr and "using all 10" in res.stderr
    assert json.loads(res.stdout)["artifacts"][0]["verification"]["samples"] == 10


@pytest.mark.parametrize("name", ["../escaped", "sub/m", ""])
def test_a_name_that_is_not_a_file_name_is_refused(name: str, tmp_path: Path) -> None:
    src = _tiny_onnx(tmp_path / "in" / "m.onnx")
    res = _edgekit("convert", str(src), "-t", "onnxruntime", "--name", name, "-o", "out/deeper", "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr  # '../escaped' wrote out/escaped.* plus a leftover temp graph
    assert "bad --name" in json.loads(res.stdout)["error"]["message"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in", "m.onnx"]


@pytest.mark.parametrize("kw", [{"lr": -1.0}, {"lr": 0.0}, {"temperature": 0.0}])
def test_distill_refuses_a_non_positive_lr_or_temperature(kw: dict) -> None:
    from edgekit.distill import distill
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="--lr and --temperature must be positive"):
        distill(None, None, [], steps=2, **kw)  # lr -1 was an internal error; temperature 0 trained on NaN


def test_int8_only_options_on_an_fp32_run_say_they_are_ignored(tmp_path: Path) -> None:
    src = _tiny_onnx(tmp_path / "m.onnx")
    res = _edgekit("convert", str(src), "-t", "onnxruntime", "--max-drop", "0.01", "--eval", "missing.npz",
                   "-o", "out", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr  # silently ignored before, even the missing --eval file
    assert "--max-drop, --eval only act on int8 artifacts" in res.stderr
    assert json.loads(res.stdout)["artifacts"][0]["precision"] == "fp32"


def test_a_missing_eval_file_is_named_as_the_eval_data(tmp_path: Path) -> None:
    from edgekit.resources import data_dir

    cal = str(data_dir("calibration") / "mnist" / "train_sample.npz")
    res = _edgekit("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "--precision", "int8", "--calibration", cal,
                   "--calibration-size", "16", "--eval", "missing.npz", "-o", "out", "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    msg = json.loads(res.stdout)["error"]["message"]
    assert msg.startswith("--eval data:") and "missing.npz" in msg and "calibration" not in msg
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
