"""Test-wide set-up: no network, and the Triton interpreter on machines without a GPU.

TRITON_INTERPRET must be set before triton is first imported (gankd.kernels imports it), so it is set
here, at the top of the root conftest. With a CUDA device the same tests run the compiled kernels.
"""

import os
import socket
import tempfile
import urllib.request
from collections import defaultdict

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = torch.device("cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu")

_worst_errors: dict[str, float] = defaultdict(float)


_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_real_connect = socket.socket.connect


def _no_network(*args, **kwargs):
    raise RuntimeError("tests must not touch the network")


def _loopback_only_connect(sock, address):
    # Local sockets (loopback, unix) stay usable, e.g. for torch.distributed's rendezvous.
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and host not in _LOOPBACK:
        raise RuntimeError(f"tests must not touch the network (connect to {address!r})")
    return _real_connect(sock, address)


@pytest.fixture(autouse=True, scope="session")
def _offline():
    # Any download attempt fails loudly; torch hub caches point at an empty temporary folder.
    with tempfile.TemporaryDirectory() as torch_home, pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", torch_home)
        patch.setattr(urllib.request, "urlopen", _no_network)
        patch.setattr(socket.socket, "connect", _loopback_only_connect)
        yield


@pytest.fixture(scope="session")
def proxy_cache(tmp_path_factory):
    """The digits proxy classifier, trained once per session into a temporary GANKD_CACHE; returns its path.

    Tests that use it set GANKD_CACHE to `proxy_cache.parent` (monkeypatch) so nothing trains it again.
    """
    from gankd.metrics import proxy

    folder = tmp_path_factory.mktemp("gankd-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANKD_CACHE", str(folder))
        return proxy.digits_lenet_path(0)


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture
def record_error():
    """Record a relative error under a label; the worst per label is printed at the end of the run, and each
    error is also appended to the file GANKD_ERROR_LOG names, if set (pytest-xdist workers print no summary)."""

    def record(label: str, error: float) -> None:
        _worst_errors[label] = max(_worst_errors[label], float(error))
        if log := os.environ.get("GANKD_ERROR_LOG"):
            with open(log, "a") as handle:
                handle.write(f"{label}\t{float(error):.3e}\n")

    return record


def pytest_terminal_summary(terminalreporter):
    if not _worst_errors:
        return
    terminalreporter.section(f"worst relative errors seen (device: {DEVICE})")
    for label in sorted(_worst_errors):
        terminalreporter.write_line(f"{label:<48} {_worst_errors[label]:.3e}")
