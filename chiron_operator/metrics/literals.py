"""PromQL text: string and regex literals, range durations. Pure."""

from __future__ import annotations


def string_literal(value: str) -> str:
    """A PromQL double-quoted string holding `value` exactly."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex_literal(value: str) -> str:
    """`value` as an RE2 pattern matching only itself (pool names may contain dots)."""
    return "".join("\\" + ch if ch in r"\.+*?()|[]{}^$" else ch for ch in value)


def duration(seconds: float) -> str:
    """A PromQL range duration; PromQL has no fractional units, so sub-second parts use ms."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"a range must be positive, got {seconds} s")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"
