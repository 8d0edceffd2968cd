"""The perf tests run tiny models: one torch thread is faster for them, and on a shared 2-core machine a
second OpenMP thread spinning against other processes can make them 5-10x slower."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
