"""A fixture that runs a test module on one torch thread (import it into the module to switch it on)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on shared cores: intra-op threads only add synchronisation (and stall when other jobs run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
