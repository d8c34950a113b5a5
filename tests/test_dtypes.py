import warnings

import pytest
import torch

from mosaic_encoder import ConfigError
from mosaic_encoder.dtypes import (SlowDtypeWarning, cpu_matmul_gflops, native_cpu_bfloat16,
                                   resolve_dtype, warn_if_slow)

CPU = torch.device("cpu")


def test_names_and_dtypes_resolve_and_others_are_refused():
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ConfigError, match="--dtype 'float64' is not supported"):
        resolve_dtype("float64", what="--dtype")


def test_emulated_bfloat16_warns_once_with_measured_speeds():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            warn_if_slow(torch.bfloat16, CPU, native=False)
    assert [w.category for w in caught] == [SlowDtypeWarning]
    message = str(caught[0].message)
    assert torch.backends.cpu.get_cpu_capability() in message
    assert f"{cpu_matmul_gflops(torch.float32):.1f} in float32" in message
    assert "use dtype float32" in message


@pytest.mark.parametrize("dtype, device, native", [(torch.bfloat16, CPU, True),
                                                   (torch.float32, CPU, False),
                                                   (torch.float16, CPU, False),
                                                   (torch.bfloat16, torch.device("meta"), False)])
def test_no_warning_where_bfloat16_is_native_or_not_chosen(dtype, device, native):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_slow(dtype, device, native=native)


def test_detection_is_a_boolean_and_speeds_are_positive():
    assert isinstance(native_cpu_bfloat16(), bool)
    assert cpu_matmul_gflops(torch.float32) > 0
