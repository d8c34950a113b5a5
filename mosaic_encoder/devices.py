"""The devices a model can run on, checked before anything is allocated on them."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(value: str | torch.device, what: str = "device") -> torch.device:
    """The ``torch.device`` named by ``value``, refusing one this machine cannot compute on.

    Accepts ``"cpu"``, ``"cuda"``/``"cuda:N"`` (with that GPU present) and ``"mps"`` (where
    available), as a string or ``torch.device``. ``"meta"`` holds no data, so a model there
    cannot compute; any other value is a :class:`ConfigError` naming ``what``.
    """
    if isinstance(value, torch.device):
        device = value
    elif isinstance(value, str):
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            raise ConfigError(f"{what} {value[:40]!r} is not a device name (e.g. cpu, cuda, "
                              f"cuda:1).") from None
    else:
        raise ConfigError(f"{what} must be a device name such as 'cpu' or 'cuda:0' or a "
                          f"torch.device, got {type(value).__name__} {str(value)[:40]}.")
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {device} was asked for but no CUDA GPU is available.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{what} {device} does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA GPU(s).")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{what} {device} was asked for but Apple's MPS backend is not "
                              f"available here.")
        return device
    if device.type == "meta":
        raise ConfigError(f"{what} meta holds no data, so a model there cannot compute; use cpu "
                          f"or cuda.")
    raise ConfigError(f"{what} {device} is not supported; use cpu, cuda or mps.")
