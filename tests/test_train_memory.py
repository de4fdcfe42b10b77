"""Pre-flight memory check (train/memory.py): refuse a step that cannot fit, name what fits."""

import types

import jax
import pytest

from moleblend_jax.errors import UserError
from moleblend_jax.train import memory

GIB = 2**30


def _analysis(arguments, outputs, temporaries, aliases=0.0):
    return types.SimpleNamespace(
        argument_size_in_bytes=int(arguments * GIB),
        output_size_in_bytes=int(outputs * GIB),
        temp_size_in_bytes=int(temporaries * GIB),
        alias_size_in_bytes=int(aliases * GIB),
    )


@pytest.fixture
def device_of_16_gib(monkeypatch):
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: 16 * GIB)


def test_a_step_that_fits_passes(device_of_16_gib):
    memory.check_fits(
        _analysis(1, 1, 10), what="train step", batch_size=64, grad_accum_steps=1, remat=False
    )


def test_donated_outputs_are_not_counted_twice(device_of_16_gib):
    analysis = _analysis(6, 6, 6, aliases=6)
    assert memory.step_bytes(analysis) == 12 * GIB
    memory.check_fits(analysis, what="train step", batch_size=64, grad_accum_steps=1, remat=True)


def test_too_large_a_step_names_the_need_and_settings_that_fit(device_of_16_gib):
    per_device = 64 * jax.device_count()
    with pytest.raises(UserError) as error:
        memory.check_fits(
            _analysis(1, 1, 54.6),
            what="train step for batch 4096x32",
            batch_size=per_device,
            grad_accum_steps=1,
            remat=False,
        )
    message = str(error.value)
    assert "\n" not in message
    assert "needs 56.6 GiB per device" in message and "16.0 GiB" in message
    # 2 GiB fixed + temporaries / 8 = 8.8 GiB fits 0.9 x 16 GiB; / 4 (15.7 GiB) does not.
    assert "--config.grad_accum_steps=8 (about 8.8 GiB" in message
    assert f"--config.batch_size={per_device // 8} (about 8.8 GiB)" in message
    assert "--config.model.remat=true" in message


def test_cpu_limit_is_the_hosts_available_memory_shared_by_its_devices():
    limit = memory.device_memory_bytes(jax.local_devices()[0])
    assert 0 < limit * jax.local_device_count() < 2**50
