"""docs/BATCH_PERFORMANCE.md from the batch benchmark's results (never edited by hand)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from chiron_operator.perf.batch_results import (
    INTAKE_GOAL_REQUESTS,
    INTAKE_GOAL_S,
    MEMORY_GOAL_BYTES,
    Dispatch,
    Intake,
    Results,
    Setup,
)
from chiron_operator.perf.gateway_report import _reflow as reflow

MIB: Final = 1024 * 1024
CONTENDED_CORES: Final = 0.25  # other load from which the dispatch figures carry a warning


def _mib(value: float) -> str:
    return f"{value / MIB:,.1f}"


def _under(value: float, goal: float, unit: str) -> str:
    if value < goal:
        return f"met, {goal - value:,.1f} {unit} under it"
    return f"**missed** by {value - goal:,.1f} {unit}"


def _judged(i: Intake, verdict: str) -> str:
    """The verdict, or why there is none: the goal is stated for a 50,000-request file."""
    if i.requests == INTAKE_GOAL_REQUESTS:
        return verdict
    return f"stated for {INTAKE_GOAL_REQUESTS:,} requests, not judged at {i.requests:,}"


def _intake_verdict(i: Intake) -> list[str]:
    took = _under(i.total_s, INTAKE_GOAL_S, "s")
    peak = _under(i.peak_rss_bytes / MIB, MEMORY_GOAL_BYTES / MIB, "MiB")
    return [
        f"- Intake ({i.store}): a {i.requests:,}-request input file ({_mib(i.file_bytes)} MiB)",
        f"was uploaded, made a batch and wholly queued in the gateway in **{i.total_s:.2f} s**",
        f"(goal < {INTAKE_GOAL_S:g} s: {_judged(i, took)}): the upload {i.upload_s:.2f} s, the",
        f"batch's creation {i.create_s:.2f} s, until it read `in_progress`",
        f"{i.to_in_progress_s:.2f} s, then until every request was in the queue",
        f"{i.to_queued_s:.2f} s.",
        f"- Memory ({i.store}): the gateway's peak RSS was **{_mib(i.peak_rss_bytes)} MiB**",
        f"(goal < {MEMORY_GOAL_BYTES / MIB:g} MiB: {_judged(i, peak)}); with every request",
        f"queued it held {_mib(i.rss_queued_bytes)} MiB against {_mib(i.rss_idle_bytes)} MiB",
        f"idle: **{i.bytes_per_queued:,.0f} bytes per queued request** of RSS. That is an upper",
        "bound: the queue's own Python objects, counted in-process, are",
        f"{i.queue.bytes_per_request:,.0f} bytes a request; the rest is memory the intake's",
        "parsing freed and Python keeps for reuse.",
    ]


def _by_round(rates: Sequence[float]) -> str:
    return " / ".join(f"{rate:,.0f}" for rate in rates)


def _range(rates: Sequence[float]) -> str:
    """`; rounds A to B` when there were several, else nothing."""
    return f"; rounds {min(rates):,.0f} to {max(rates):,.0f}" if len(rates) > 1 else ""


def _dispatch_verdict(x: Dispatch, results: Results) -> list[str]:
    t, d = x.total, results.direct
    share = 100 * t.per_s / d.per_s if d.per_s > 0 else 0.0
    one_core = 1e6 / t.window_us_per_request if t.window_us_per_request > 0 else 0.0
    direct_rates = [r.per_s for r in results.directs]
    return [
        f"- Dispatch ({x.store}): **{t.per_s:,.0f} requests/s** through the Batch API",
        f"({len(x.rounds)} batches{_range([r.per_s for r in x.rounds])}) against",
        f"**{d.per_s:,.0f}/s** straight to the same upstream from a plain client",
        f"({len(direct_rates)} runs{_range(direct_rates)}): {share:.0f}% of it, both with",
        f"{results.setup.concurrency} requests in flight. The gateway spent",
        f"**{t.us_per_request / 1000:.2f} ms of CPU per request** over the batches' whole life",
        f"({t.window_us_per_request:,.0f} µs in steady dispatch:",
        f"{t.window_loop_us_per_request:,.0f} on its event loop's thread,",
        f"{t.window_threads_us_per_request:,.0f} on its other threads, the store's worker",
        f"mostly); the plain client spent {d.client_us_per_request:,.0f} µs a request. The",
        f"store's two statements per request, run alone, cost {x.store_us_per_request:,.0f} µs.",
        f"In steady dispatch the gateway kept {t.window_cores:.2f} cores busy: its threads share",
        "one interpreter lock, so the gateway's CPU per request sets its rate, about",
        f"{one_core:,.0f} requests/s per core it gets.",
    ]


def _contention(results: Results) -> list[str]:
    """A warning when other processes took a noticeable share of the machine meanwhile."""
    others = [
        results.direct.others_cores,
        *(x.total.window_others_cores for x in results.dispatches),
    ]
    if max(others) < CONTENDED_CORES:
        return []
    return [
        f"- Other load kept up to {max(others):.2f} of the {results.setup.cores} cores busy",
        "while the dispatch was measured (*everything else* below): its rates and CPU times",
        "are what a shared machine gave, lower and noisier than an idle one's.",
    ]


def _failures(results: Results) -> list[str]:
    failed = results.direct.failed + sum(x.total.failed for x in results.dispatches)
    rounds = [r for x in results.dispatches for r in x.rounds]
    short = [r for r in rounds if r.completed + r.failed != r.requests]
    if not failed and not short:
        return ["- Every request was answered, and answered once (the batches' counts agree)."]
    return [f"- **{failed} requests failed**; batches with a count that disagrees: {len(short)}."]


def _intake_tables(intakes: Sequence[Intake]) -> list[str]:
    rows = [
        "| store | requests | file (MiB) | upload (s) | create (s) | until in_progress (s) "
        "| until all queued (s) | **total (s)** | gateway CPU (s) | of which its event loop (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in intakes:
        rows.append(
            f"| {i.store} | {i.requests:,} | {_mib(i.file_bytes)} | {i.upload_s:.2f} "
            f"| {i.create_s:.2f} | {i.to_in_progress_s:.2f} | {i.to_queued_s:.2f} "
            f"| **{i.total_s:.2f}** | {i.cpu_s:.2f} | {i.loop_cpu_s:.2f} |"
        )
    rows += [
        "",
        "| store | RSS idle (MiB) | peak after the upload (MiB) | **peak (MiB)** "
        "| RSS with all queued (MiB) | RSS per queued request (bytes) "
        "| the queue's objects per request (bytes) | Python memory at most, validating and "
        "queueing (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in intakes:
        rows.append(
            f"| {i.store} | {_mib(i.rss_idle_bytes)} | {_mib(i.peak_after_upload_bytes)} "
            f"| **{_mib(i.peak_rss_bytes)}** | {_mib(i.rss_queued_bytes)} "
            f"| {i.bytes_per_queued:,.0f} | {i.queue.bytes_per_request:,.0f} "
            f"| {_mib(i.queue.peak_bytes)} |"
        )
    return rows


def _dispatch_tables(results: Results) -> list[str]:
    d, cores = results.direct, results.setup.cores
    rows = [
        "| path | requests | failed | seconds | **requests/s** | by round | of direct "
        "| client or gateway CPU per request (µs) | upstream CPU per request (µs) "
        f"| machine busy (of {cores} cores) | of which everything else |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| direct (plain client) | {d.requests:,} | {d.failed} | {d.wall_s:.2f} "
        f"| **{d.per_s:,.0f}** | {_by_round([r.per_s for r in results.directs])} | 100% "
        f"| {d.client_us_per_request:,.0f} | {d.upstream_us_per_request:,.0f} "
        f"| {d.machine_cores:.2f} | {d.others_cores:.2f} |",
    ]
    for x in results.dispatches:
        t = x.total
        share = 100 * t.per_s / d.per_s if d.per_s > 0 else 0.0
        rows.append(
            f"| Batch API ({x.store}), steady | {t.window_requests:,} | {t.failed} "
            f"| {t.window_s:.2f} | **{t.per_s:,.0f}** | {_by_round([r.per_s for r in x.rounds])} "
            f"| {share:.0f}% | {t.window_us_per_request:,.0f} "
            f"| {t.upstream_us_per_request:,.0f} | {t.window_machine_cores:.2f} "
            f"| {t.window_others_cores:.2f} |"
        )
    return [*rows, "", *_cpu_table(results.dispatches)]


def _cpu_table(dispatches: Sequence[Dispatch]) -> list[str]:
    rows = [
        "| store | batches, create to completed (s) | gateway CPU (s) | **per request (µs)** "
        "| by round (µs) | steady: per request (µs) | event loop (µs) | other threads (µs) "
        "| store statements alone (µs) | gateway cores, steady |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in dispatches:
        t = x.total
        rows.append(
            f"| {x.store} | {t.batch_s:.2f} | {t.batch_cpu_s:.2f} | **{t.us_per_request:,.0f}** "
            f"| {_by_round([r.us_per_request for r in x.rounds])} "
            f"| {t.window_us_per_request:,.0f} | {t.window_loop_us_per_request:,.0f} "
            f"| {t.window_threads_us_per_request:,.0f} | {x.store_us_per_request:,.0f} "
            f"| {t.window_cores:.2f} |"
        )
    return rows


def render(results: Results) -> str:
    """The whole document."""
    s = results.setup
    lines = [
        "# Batch API performance",
        "",
        "Generated by `make bench-batch` (`python -m chiron_operator.perf.batch`); do not edit",
        f"the numbers by hand. Measured {results.when} on {s.cores} cores ({s.cpu}), Python",
        f"{s.python}, niceness {s.niceness}, in {results.wall_s:.0f} s. The gateway, the",
        "upstream and the benchmark's client share those cores, so the figures are what one",
        "small machine shows.",
        "",
        *_stores(s),
        "",
        "The goals: a 50,000-request input file accepted and queued in under 30 s, with the",
        "gateway under 300 MiB; and the dispatch overhead per request, measured.",
        "",
        "## Summary",
        "",
        *(line for i in results.intakes for line in _intake_verdict(i)),
        *(line for x in results.dispatches for line in _dispatch_verdict(x, results)),
        *_contention(results),
        *_failures(results),
        "",
        f"## Intake: {s.intake_requests:,} requests accepted and queued",
        "",
        *_intake_tables(results.intakes),
        "",
        *_intake_method(s),
        "",
        "## Dispatch overhead per request",
        "",
        *_dispatch_tables(results),
        "",
        *_dispatch_method(s),
        "",
    ]
    return "\n".join(reflow(lines))


def _stores(s: Setup) -> list[str]:
    sqlite = (
        "The gateway's store is SQLite (WAL, `synchronous=NORMAL`: a commit writes the log but "
        "does not flush it to disk)"
    )
    if not s.postgres:
        return [
            f"{sqlite}. `make bench-batch BENCH_POSTGRES_URL=postgresql://...` (a superuser's",
            "URL) measures PostgreSQL as well.",
        ]
    lines = [
        f"{sqlite}, and {s.postgres}, given by `make bench-batch BENCH_POSTGRES_URL=...`",
        "(`--postgres-url`).",
    ]
    if "fsync off" in s.postgres or "synchronous_commit off" in s.postgres:
        lines += [
            "With those settings a PostgreSQL commit does not wait for a disk flush either; with",
            "production settings each of the gateway's per-request commits would.",
        ]
    return lines


def _intake_method(s: Setup) -> list[str]:
    return [
        "One `chiron-gateway` process with a store of its own (a SQLite file in a temporary",
        "directory; on PostgreSQL, a new database) and one batch pod given without",
        "`max-num-seqs`, so its cap is 0: the gateway validates and queues the batch but sends",
        "nothing, and the queue keeps all of it while it is measured. The input file has",
        f"{s.intake_requests:,} chat-completion lines with distinct `custom_id`s and prompts of",
        f"varied length ({s.line_bytes_min} to {s.line_bytes_max} bytes a line,",
        f"{s.line_bytes_mean:.0f} on average). The official `openai` client uploads it",
        "(`files.create`, purpose `batch`: the gateway checks every line before it stores the",
        "file) and makes it a",
        "batch (`batches.create`, window `24h`); the benchmark then polls the batch until it is",
        "`in_progress` and the gateway's `chiron_gateway_batch_queued_requests` (summed over",
        f"its deadline groups) until it holds every request, every {s.poll_s:g} s. *Total* runs",
        "from the upload's start to that; the input file is built before the clock starts.",
        "The gateway's dispatcher looks for new batches once a second, so up to a second of",
        "*until in_progress* is that wait.",
        "",
        "- *RSS* is the gateway process's resident memory (/proc `VmRSS`), *peak* its high",
        "  water mark (`VmHWM`), which covers every moment of the intake, not just the",
        "  looks. *Idle* is read a second after the gateway answered its health check.",
        "- *RSS per queued request* is the RSS with every request queued minus the idle RSS,",
        "  over the requests: Python keeps freed memory for reuse, so this includes what the",
        "  upload's and the validation's parsing left behind, and overstates the queue's own",
        "  cost.",
        "- *The queue's objects per request*: the gateway's own code (`build_gateway`, then one",
        "  pass of its batch dispatcher, which validates the batch and loads it into the",
        "  router) run in the benchmark's process on a fresh store of the same kind, under",
        "  `tracemalloc`: the Python memory still alive after the pass (each request's ticket",
        "  in the router and its bookkeeping), over the requests. *Python memory at most* is",
        "  the most alive at once during that pass (the file read back from the store and",
        "  parsed). Memory outside Python's allocator (SQLite's page cache) is not in these.",
    ]


def _dispatch_method(s: Setup) -> list[str]:
    return [
        "An upstream that answers at once (`chiron_operator.perf.batch_upstream`: an aiohttp",
        "server in its own process that reads each request and returns one fixed chat",
        "completion with its `usage`), so what is measured is the path, not a model. *Direct*:",
        f"the first {s.dispatch_requests:,} lines' requests, exactly as the gateway sends them",
        f"upstream, posted by a plain aiohttp client on uvloop with {s.concurrency} in flight,",
        "each answer read and parsed. *Batch API*: a gateway in front of the same upstream as",
        f"its one batch pod with `max-num-seqs={s.concurrency}` (so {s.concurrency} in flight",
        "too), and those lines uploaded and made one batch, run until it reads `completed`.",
        f"Per store, {s.rounds} rounds on one gateway and one upstream, each a direct run then",
        "a batch, so that drift in the machine's other load falls on both; the figures pool",
        "the rounds (requests over their summed time), *by round* shows each on its own.",
        "",
        "- *Steady* is the span between the first look at the gateway's `/metrics` that saw a",
        "  request of the batch answered and the one that saw all of them; its rate is the",
        "  dispatch rate, free of the batch's validation before and its finalisation after.",
        f"  The looks cost the gateway a little CPU too ({1 / s.poll_s:g} a second).",
        "- *Per request* is the gateway's CPU time (user + system, /proc) from a batch's",
        "  creation to its completion over its requests: validation, queueing, reading each",
        "  body from the store, the upstream call, writing each answer once, and the output",
        "  file. The *event loop* is the gateway's main thread; its *other threads* are the",
        "  store's worker thread and the threads that parse input files and check the",
        "  dispatcher lock (idle during dispatch).",
        "- *Store statements alone*: the two statements the gateway runs for each request",
        "  (read its body; record its answer once) run straight on a fresh store of the same",
        "  kind in the benchmark's process, timed by that thread's CPU clock: the store's own",
        "  share, without the hand-over to its thread (on PostgreSQL, the client's side only;",
        "  the server is another process).",
        "- *Machine busy*: CPU seconds per second the whole machine spent (/proc/stat),",
        "  whoever spent them; *everything else* is what neither the gateway, the upstream nor",
        "  the benchmark's process spent (other processes, the kernel's network work not",
        "  charged to a process). Load from other processes slows both paths and is not",
        "  controlled for: this column says when there was some.",
        "- The upstream's CPU per request is higher through the gateway than direct although",
        "  both keep their connections open: at the gateway's lower rate, the upstream's event",
        "  loop wakes for fewer requests at a time.",
    ]
