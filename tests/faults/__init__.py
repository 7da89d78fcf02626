"""Fault injection for tests: things no well-behaved real server can be made to do on cue."""

from __future__ import annotations

from .proxy import (
    C2S,
    S2C,
    AfterBytes,
    ConnectionRecord,
    Corrupt,
    Cut,
    Delay,
    Direction,
    Fault,
    FaultProxy,
    OnPattern,
    Replace,
    Stall,
)

__all__ = [
    "C2S",
    "S2C",
    "AfterBytes",
    "ConnectionRecord",
    "Corrupt",
    "Cut",
    "Delay",
    "Direction",
    "Fault",
    "FaultProxy",
    "OnPattern",
    "Replace",
    "Stall",
]
