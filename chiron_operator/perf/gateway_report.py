"""docs/GATEWAY_PERFORMANCE.md from the gateway benchmark's results (never edited by hand)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Final

from chiron_operator.perf.gateway_results import (
    ADDED_P50_GOAL_MS,
    ADDED_P99_GOAL_MS,
    CHUNKS_GOAL,
    REACHED_RATIO,
    RateResult,
    Results,
    Setup,
    StreamResult,
    judged_stream,
)

NEAR_SATURATION: Final = 0.8  # share of the machine's cores busy from which CPU is contended


def _at_most(value: float, goal: float, unit: str) -> str:
    if value <= goal:
        return f"met, {goal - value:.2f} {unit} under it"
    return f"**missed** by {value - goal:.2f} {unit}"


def _at_least(value: float, goal: float) -> str:
    if value >= goal:
        return f"met, {100 * (value / goal - 1):.0f}% above it"
    return f"**missed** by {goal - value:,.0f} ({100 * (1 - value / goal):.0f}% short)"


def _rate_verdict(r: RateResult, cores: int) -> str:
    where = f"At {r.rate:,.0f} requests/s"
    if not r.reached:
        where = (
            f"At {r.rate:,.0f} requests/s offered (**not reached**: the generator sent only "
            f"{r.reached_per_s:,.0f}/s, so these are the figures at that rate)"
        )
    failed = r.direct.failed + r.gateway.failed
    tail = f" {failed} requests failed." if failed else ""
    return (
        f"- {where}, the gateway added **{r.added_p50_ms:.2f} ms** to the time to first token "
        f"at p50 (goal <= {ADDED_P50_GOAL_MS:g} ms: "
        f"{_at_most(r.added_p50_ms, ADDED_P50_GOAL_MS, 'ms')}) and **{r.added_p99_ms:.2f} ms** "
        f"at p99 (goal <= {ADDED_P99_GOAL_MS:g} ms: "
        f"{_at_most(r.added_p99_ms, ADDED_P99_GOAL_MS, 'ms')}). {_cpu_context(r, cores)}{tail}"
    )


def _busy(cores: dict[str, float]) -> float:
    return sum(cores.values())


def _cpu_context(r: RateResult, cores: int) -> str:
    """The gateway's CPU per request and how busy the machine was: near saturation the added
    latency is mostly waiting for CPU, which a reader must not take for the gateway's work."""
    c, per_request_us = r.gateway.cores, _per_request_us(r)
    text = (
        f"The gateway used {c['gateway']:.2f} cores, {per_request_us:,.0f} µs of CPU per "
        f"request; the machine had {_busy(c):.2f} of {cores} cores busy through the gateway "
        f"({_busy(r.direct.cores):.2f} straight to the pods)."
    )
    if _busy(c) < NEAR_SATURATION * cores or per_request_us <= 0:
        return text
    return (
        f"{text} Near saturation (gateway {c['gateway']:.2f}, pods {c['pods']:.2f}, generator "
        f"{c['generator']:.2f}, everything else {c['others']:.2f}), much of the added latency "
        "is requests waiting for CPU in every process; at that CPU per request, a core of the "
        f"gateway's own would carry about {1e6 / per_request_us:,.0f} requests/s."
    )


def _per_request_us(r: RateResult) -> float:
    sent = r.gateway.sent_per_s
    return 1e6 * r.gateway.cores["gateway"] / sent if sent > 0 else 0.0


def _chunks_verdict(streams: Sequence[StreamResult]) -> list[str]:
    judged = judged_stream(streams)
    lines = [
        f"- Streamed chunks relayed per core: **{judged.chunks_per_cpu_s:,.0f}** server-sent "
        f"events per CPU-second of the gateway with {judged.concurrency} concurrent streams, "
        f"{judged.events_per_read:.2f} events per client read (goal >= {CHUNKS_GOAL:,.0f}: "
        f"{_at_least(judged.chunks_per_cpu_s, CHUNKS_GOAL)})."
    ]
    for s in streams:
        if s is not judged:
            lines.append(
                f"  With {s.concurrency} streams, whose events arrived {s.events_per_read:.2f} "
                f"to a read (so partly relayed in bulk): {s.chunks_per_cpu_s:,.0f}."
            )
    return lines


def _queue_note(results: Results) -> str:
    most = max(r.direct.most_in_flight for r in results.rates)
    queued = sum(r.gateway_queued + r.gateway_refused for r in results.rates)
    cap = results.setup.max_num_seqs
    if most < cap and not queued:
        return (
            f"- No request waited for a pod's slot: straight to the pods at most {most} were in "
            f"flight at once (each pod takes {cap}), and the gateway, which holds back what "
            "exceeds a pod's cap, queued or refused none."
        )
    return (
        f"- **Requests waited for a slot** (straight to the pods at most {most} in flight, "
        f"{cap} per pod; the gateway queued or refused {queued}): the latency includes that wait."
    )


def _latency_table(rates: Sequence[RateResult]) -> list[str]:
    rows = [
        "| offered req/s | sent req/s (direct / gateway) | requests per path "
        "| TTFT direct p50 / p99 (ms) | TTFT via gateway p50 / p99 (ms) "
        "| **added p50 (ms)** | **added p99 (ms)** | generator lag direct p50 / p99 (ms) "
        "| generator lag gateway p50 / p99 (ms) | failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rates:
        d, g = r.direct, r.gateway
        rows.append(
            f"| {r.rate:,.0f} | {d.sent_per_s:,.0f} / {g.sent_per_s:,.0f} "
            f"| {d.requests:,} | {d.ttft_p50_ms:.2f} / {d.ttft_p99_ms:.2f} "
            f"| {g.ttft_p50_ms:.2f} / {g.ttft_p99_ms:.2f} | **{r.added_p50_ms:.2f}** "
            f"| **{r.added_p99_ms:.2f}** | {d.lag_p50_ms:.2f} / {d.lag_p99_ms:.2f} "
            f"| {g.lag_p50_ms:.2f} / {g.lag_p99_ms:.2f} | {d.failed + g.failed} |"
        )
    return rows


def _round_spread(rates: Sequence[RateResult]) -> list[str]:
    parts = []
    for r in rates:
        p50, p99 = r.added_by_round(50), r.added_by_round(99)
        if p50:
            parts.append(
                f"at {r.rate:,.0f} requests/s, p50 {min(p50):.2f} to {max(p50):.2f} ms and p99 "
                f"{min(p99):.2f} to {max(p99):.2f} ms"
            )
    if not parts:
        return []
    return ["", f"The added latency of each round on its own ranged {'; '.join(parts)}."]


def _cpu_table(rates: Sequence[RateResult], cores: int) -> list[str]:
    rows = [
        "| offered req/s | path | gateway | pods | generator | everything else "
        f"| machine busy (of {cores}) | most requests in flight | gateway queued / refused |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rates:
        for p in (r.direct, r.gateway):
            c = p.cores
            counts = f"{r.gateway_queued} / {r.gateway_refused}" if p is r.gateway else "-"
            rows.append(
                f"| {r.rate:,.0f} | {p.path} | {c['gateway']:.2f} | {c['pods']:.2f} "
                f"| {c['generator']:.2f} | {c['others']:.2f} | {_busy(c):.2f} "
                f"| {p.most_in_flight} | {counts} |"
            )
    return rows


def _stream_table(streams: Sequence[StreamResult], tokens: int) -> list[str]:
    rows = [
        "| concurrent streams | tokens per stream | requests | events relayed "
        "| events per client read | events/s (wall) | gateway cores | gateway CPU s "
        "| **events per gateway CPU-second** |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in streams:
        rows.append(
            f"| {s.concurrency} | {tokens} | {s.requests:,} | {s.events:,} "
            f"| {s.events_per_read:.2f} | {s.events / s.wall_s:,.0f} "
            f"| {s.cores['gateway']:.2f} | {s.gateway_cpu_s:.2f} "
            f"| **{s.chunks_per_cpu_s:,.0f}** |"
        )
    return rows


def render(results: Results) -> str:
    """The whole document."""
    s = results.setup
    lines = [
        "# Gateway performance",
        "",
        "Generated by `make bench-gateway` (`python -m chiron_operator.perf.gateway`); do not",
        f"edit the numbers by hand. Measured {results.when} on {s.cores} cores ({s.cpu}),",
        f"Python {s.python}, niceness {s.niceness}, in {results.wall_s:.0f} s. The gateway, the",
        "emulator pods and the load generator share those cores with whatever else ran (the",
        "*everything else* column below), so the figures are what one small machine shows.",
        "",
        "## Summary",
        "",
        *(_rate_verdict(r, s.cores) for r in results.rates),
        *_chunks_verdict(results.streams),
        _queue_note(results),
        "",
        "## Latency the gateway adds",
        "",
        *_latency_table(results.rates),
        *_round_spread(results.rates),
        "",
        "CPU used meanwhile, in cores (CPU seconds per wall second, from /proc):",
        "",
        *_cpu_table(results.rates, s.cores),
        "",
        *_latency_method(s),
        "",
        "## Streamed chunks relayed per core",
        "",
        *_stream_table(results.streams, s.stream_tokens),
        "",
        *_stream_method(s),
        "",
    ]
    return "\n".join(_reflow(lines))


def _reflow(lines: Sequence[str], width: int = 100) -> list[str]:
    """Prose rewrapped to `width` (the parts above are cut where the code reads best);
    blank lines, headings and table rows stay as they are, a `- ` line starts a bullet."""
    out: list[str] = []
    block: list[str] = []

    def flush() -> None:
        if block:
            text = " ".join(part.strip() for part in block)
            indent = "  " if block[0].startswith("- ") else ""
            out.extend(
                textwrap.wrap(
                    text,
                    width,
                    subsequent_indent=indent,
                    break_on_hyphens=False,
                    break_long_words=False,
                )
            )
            block.clear()

    for line in lines:
        if not line or line.startswith(("|", "#", "- ")):
            flush()
        if not line or line.startswith(("|", "#")):
            out.append(line)
        else:
            block.append(line)
    flush()
    return out


def _latency_method(s: Setup) -> list[str]:
    return [
        f"{s.pods} `chiron-emulator` pods (`--max-num-seqs {s.max_num_seqs}`, priority",
        f"scheduling, `--time-scale {s.latency_time_scale:g}` so a prefill takes well under a",
        "millisecond) and one `chiron-gateway` with every pod as an interactive endpoint, each its",
        "own process on 127.0.0.1. The load generator (aiohttp, in the benchmark's process) sends",
        f"streamed `/v1/completions` requests (a prompt of about {s.prompt_tokens} tokens,",
        f"`max_tokens` {s.max_tokens}) at Poisson arrival times drawn in advance: an open loop,",
        "so a slow answer never delays the next request. *Direct* requests go round robin to the",
        "pods; *via gateway* ones to the gateway. Both paths get the same arrival times, back to",
        f"back, in {s.rounds} rounds of {s.duration_s / s.rounds:g} s per path, the order",
        "alternating between rounds so that drift in the machine's other load falls on both; a",
        f"warm-up of {s.warmup_s:g} s of each path at the rate comes first and is not counted.",
        "",
        "- *TTFT*: from the moment the generator sent a request to the first byte of its body",
        "  (the first token's event; the gateway sends its headers with it). *Added* is the",
        "  p50 (p99) through the gateway minus the p50 (p99) direct.",
        "- *Generator lag*: how late requests were sent against their schedule, on both paths;",
        "  the TTFT is measured from the real send, so lag does not inflate it, but a large lag",
        "  means the generator itself was short of CPU and its reads of the answers were late",
        "  too. *Sent req/s* is what was really sent; a rate counts as reached at",
        f"  {100 * REACHED_RATIO:.0f}% of the offered one.",
        "- *Queueing*: the pods' caps exceed the most requests ever in flight straight to them,",
        "  and through the gateway its own requests counter says what it queued or refused",
        "  (it holds back what exceeds a pod's cap), so the difference is the extra hop and the",
        "  gateway's work, not waiting for a slot. *Most requests in flight* counts what the",
        "  generator sent and has not finished reading, wherever it waits (a socket, an event",
        "  loop). With few cores the gateway's CPU competes with the pods' and the generator's:",
        "  once the machine is saturated, the added latency is mostly that competition, which",
        "  the CPU table shows.",
    ]


def _stream_method(s: Setup) -> list[str]:
    return [
        f"The same set-up with `--time-scale {s.stream_time_scale:g}` (each stream gets a token",
        "every few milliseconds, faster than real vLLM): that many concurrent streams through",
        f"the gateway, each of {s.stream_tokens} tokens and followed at once by the next, for",
        f"{s.stream_duration_s:g} s. Chunks are the server-sent events the clients received (one",
        "per token, plus `data: [DONE]`); the gateway's CPU time (user + system, /proc) over the",
        "same span includes everything it did for those requests, their routing and set-up",
        "too. Chunks per CPU-second is chunks per second on one core.",
        "",
        "The gateway relays whatever one read of the upstream socket returns in one write, so",
        "events that arrive faster than it reads are relayed several at a time, and cost less",
        "each. *Events per client read* bounds the events per gateway write from above (a client",
        "read takes at least one of the gateway's writes): near 1.00, every event was relayed on",
        "its own, as vLLM's tokens arrive (tens of milliseconds apart per stream). The goal is",
        "judged on the load with the fewest events per read.",
    ]
