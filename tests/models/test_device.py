"""lorank.models.device.resolve_device: argument > $LORANK_DEVICE > hardware; bad values and absent CUDA are errors."""
import pytest
import torch

from lorank.errors import ConfigError
from lorank.models.device import ENV, resolve_device


def test_explicit_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(ENV, "cuda:3")
    assert resolve_device("cpu") == torch.device("cpu")


def test_environment_then_hardware(monkeypatch):
    monkeypatch.setenv(ENV, "cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv(ENV, "auto")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if torch.cuda.is_available():
        monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device(None) == expected
    monkeypatch.delenv(ENV)
    assert resolve_device(None) == expected


@pytest.mark.parametrize("bad", ["gpu0", "tpu", "cuda:x"])
def test_a_bad_device_is_a_clear_error(monkeypatch, bad):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError, match="device"):
        resolve_device(bad)


def test_an_empty_environment_value_means_decide(monkeypatch):
    monkeypatch.setenv(ENV, "")
    assert resolve_device(None).type in ("cpu", "cuda")


def test_a_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV, "quantum")
    with pytest.raises(ConfigError, match=ENV):
        resolve_device(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_cuda_is_an_error_not_a_cpu_run(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError, match="no"):
        resolve_device("cuda")
    monkeypatch.setenv(ENV, "cuda:0")
    with pytest.raises(ConfigError, match=ENV):
        resolve_device(None)


def test_sharded_workers_take_one_gpu_each_unless_a_device_is_pinned(monkeypatch):
    from lorank.inference.shard import _worker_device

    monkeypatch.delenv(ENV, raising=False)
    assert _worker_device("cpu", 3) == "cpu"
    monkeypatch.setenv(ENV, "cpu")  # a device pinned in the environment holds for every worker
    assert _worker_device(None, 1) == "cpu"
    monkeypatch.delenv(ENV)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert [_worker_device(None, r) for r in range(2)] == [f"cuda:{0 % n}", f"cuda:{1 % n}"]
    else:
        assert _worker_device(None, 1) == "cpu"
