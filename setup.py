"""Packaging of the data folders: targets/, devices/ and calibration/ ship inside the wheel as
edgekit._targets, edgekit._devices and edgekit._calibration (found by edgekit.resources.data_dir)."""

from setuptools import find_packages, setup

DATA = {"edgekit._targets": "targets", "edgekit._devices": "devices", "edgekit._calibration": "calibration"}

setup(
    packages=find_packages(include=["edgekit", "edgekit.*"]) + list(DATA),
    package_dir={"edgekit": "edgekit", **DATA},
    package_data={"edgekit.zoo.weights": ["*.safetensors"], **{pkg: ["*", "**/*"] for pkg in DATA}},
    exclude_package_data={"": ["__pycache__/*", "*.pyc", "**/__pycache__/*"]},
)
