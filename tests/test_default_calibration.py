"""int8 without --calibration: a model with one RGB image input is calibrated on the shipped natural_images
photos (with a warning naming the assumption); any other model still gets the one-line usage error."""

from __future__ import annotations

import json


def test_image_model_int8_without_calibration_uses_the_shipped_photos(cnn, invoke, tmp_path):
    out = tmp_path / "o"
    res = invoke("convert", str(cnn), "-t", "arm", "-o", str(out), "--calibration-size", "48", "--json")
    assert res.returncode == 0, res.stderr
    assert "no --calibration: int8 ranges from the shipped natural_images photos" in res.stderr
    doc = json.loads(res.stdout)
    art = doc["artifacts"][0]
    assert art["precision"] == "int8" and art["verification"]["passed"]
    assert "natural" in art["quantization"]["calibration"]["description"].lower()
    assert [p.name for p in out.iterdir()] == ["cnn.arm.int8.tflite"]


def test_non_image_model_int8_without_calibration_is_a_usage_error(invoke, tmp_path):
    import torch

    path = tmp_path / "mlp.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval(), (torch.zeros(1, 16),),
                      str(path), dynamo=False, input_names=["x"], output_names=["y"])
    res = invoke("convert", str(path), "-t", "arm", "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "int8 needs calibration data" in res.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_uint8_pixel_model_gets_raw_photo_pixels(invoke, tmp_path):
    import torch
    from torch import nn

    class Pixels(nn.Module):  # NHWC uint8 camera frames, normalized inside the graph
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 16, 3, 2, 1), nn.Linear(16, 10)

        def forward(self, pixels):
            x = pixels.permute(0, 3, 1, 2).float() / 255.0
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    path = tmp_path / "pixels.onnx"
    torch.onnx.export(Pixels().eval(), (torch.zeros(1, 32, 32, 3, dtype=torch.uint8),), str(path), dynamo=False,
                      input_names=["pixels"], output_names=["logits"])
    res = invoke("convert", str(path), "-t", "arm", "-o", str(tmp_path / "o"), "--calibration-size", "48")
    assert res.returncode == 0, res.stderr
    assert "natural_images photos with raw RGB pixels" in res.stderr
