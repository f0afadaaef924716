"""Shared fixtures: no network, real data location, tiny BIDS datasets."""
from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) and address else None
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing may download: any attempt to open a network connection to another host fails the
    test. Local Unix sockets (multiprocessing's fork server) and loopback connections
    (127.0.0.0/8, ::1, "localhost": Selenium talking to chromedriver) stay allowed."""
    connect = socket.socket.connect

    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            raise RuntimeError(f"network access attempted during a test: {address!r}")
        return connect(self, address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (tests/browser.py), started once per test file (about a second). Without
    it the test fails, telling to run tests/report/install_browser.sh, unless CONNTOOL_NO_BROWSER=1."""
    from tests.browser import open_browser, require_browser

    require_browser()
    with open_browser() as driver:
        yield driver


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("CONNTOOL_TEST_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "bids-xa30").is_dir():
        pytest.skip(f"real test data not found at {path}")
    return path


def write_tiny_bids(root: Path, bold_shape=(8, 8, 6, 12), tr: float | None = 2.0, t1w: bool = True,
                    slice_timing: bool = True) -> Path:
    """A minimal BIDS dataset (random data) for input-validation tests."""
    rng = np.random.default_rng(0)
    (root / "sub-01" / "func").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    if t1w:
        (root / "sub-01" / "anat").mkdir()
        nib.save(nib.Nifti1Image(rng.random((10, 10, 10)).astype(np.float32), np.diag([2, 2, 2, 1.0])),
                 root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    bold = root / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    img = nib.Nifti1Image(rng.random(bold_shape).astype(np.float32), np.diag([3, 3, 3, 1.0]))
    if len(bold_shape) == 4:
        img.header.set_zooms((3.0, 3.0, 3.0, tr or 1.0))  # the header TR agrees with the sidecar
    nib.save(img, bold)
    meta = {"TaskName": "rest"}
    if tr is not None:
        meta["RepetitionTime"] = tr
    if slice_timing and len(bold_shape) == 4:
        meta["SliceTiming"] = list(np.linspace(0, 1.8, bold_shape[2]))
    (root / "sub-01" / "func" / "sub-01_task-rest_bold.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def tiny_bids(tmp_path) -> Path:
    return write_tiny_bids(tmp_path / "bids")
