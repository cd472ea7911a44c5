"""Two GPUs: single-GPU tests run two at a time, each on its own device."""

import os
import time

import pytest


@pytest.mark.resource("gpu", slots=1)
@pytest.mark.parametrize("model", ["small", "medium", "large", "huge"])
def test_train(model, restask_slots):
    device = restask_slots["gpu"][0]
    assert os.environ["RESTASK_SLOTS_GPU"] == str(device)
    time.sleep(0.4)


@pytest.mark.resource("gpu", slots=2)
def test_train_on_both(restask_slots):
    assert restask_slots["gpu"] == [0, 1]
    time.sleep(0.4)
