"""Fits of step-time tables in relative error: the linear decode form and the prefill roofline.

Every fit minimises *relative* error (rows weighted by 1/y): step times span 6 ms to seconds and
the simulator needs the same relative accuracy everywhere. Coefficients are constrained
non-negative so that no profile predicts shorter steps for more work.

Decode fits minimise squared relative error: their tables have 10-60 rows spread over batch and
context, and least squares matches the reference fits the data ships with. The prefill roofline
minimises the mean absolute relative error (MAPE) itself: its tables have 7 rows, and one row off
the convex form (Llama-2-70B H100 TP8 at 4,096 tokens, see docs/LATENCY_MODEL.md) pulls every
least-squares coefficient towards it, spreading its error over the rows a simulator hits most.
The L1 fit is robust to such a row: it leaves that row's error where it is and fits the others.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
CoefLike = Sequence[float] | Floats


@dataclass(frozen=True, slots=True)
class Table:
    """A design matrix (columns: 1, b-term, c-term) and the measured milliseconds."""

    x: Floats
    y: Floats


@dataclass(frozen=True, slots=True)
class FitResult:
    """Fitted coefficients in milliseconds and how well they reproduce their table.

    `coef` is (a, b, c) for the linear forms and (a, b, c, floor) for the prefill roofline.
    """

    coef: tuple[float, ...]
    mape: float
    r2: float
    max_ape: float
    n: int


def least_squares(x: Floats, y: Floats) -> Floats:
    """Non-negative least squares on relative error, exact by active-set enumeration.

    With three coefficients, trying every subset of free columns and keeping the best feasible
    solution is the exact NNLS optimum and cheaper to trust than an iterative solver.
    """
    w = 1.0 / y
    xw, yw = x * w[:, None], y * w
    best: Floats | None = None
    best_rss = np.inf
    for k in range(x.shape[1], 0, -1):
        for cols in itertools.combinations(range(x.shape[1]), k):
            sol = np.linalg.lstsq(xw[:, cols], yw, rcond=None)[0]
            if (sol < 0.0).any():
                continue
            full = np.zeros(x.shape[1])
            full[list(cols)] = sol
            rss = float(np.sum((xw @ full - yw) ** 2))
            if rss < best_rss:
                best, best_rss = full, rss
        if best is not None:
            return best
    return np.zeros(x.shape[1])


def predict(x: Floats, coef: CoefLike) -> Floats:
    """Milliseconds for the rows of design matrix `x`: linear in its columns, floored by a
    fourth coefficient if there is one."""
    c = np.asarray(coef, dtype=np.float64)
    out: Floats = x @ c[:3]
    if len(c) > 3:
        out = np.maximum(out, c[3])
    return out


def _relative_rss(x: Floats, y: Floats, coef: CoefLike) -> float:
    return float(np.sum(((predict(x, coef) - y) / y) ** 2))


def floored_least_squares(x: Floats, y: Floats) -> Floats:
    """(a, b, c, floor) minimising the squared relative error of max(floor, x @ (a, b, c)).

    With non-negative coefficients the compute branch grows with the prompt (column 1), so the
    rows on the floor are the shortest k. For each k the floor is the constant with the least
    relative error on those rows and (a, b, c) the NNLS fit of the others (at least three); each
    candidate is scored as the max() it really is. k = 0 is the plain quadratic, so the roofline
    never fits worse than it.
    """
    order = np.argsort(x[:, 1], kind="stable")
    x, y = x[order], y[order]
    best = np.append(least_squares(x, y), 0.0)
    best_rss = _relative_rss(x, y, best)
    for k in range(1, len(y) - 2):
        inverse = 1.0 / y[:k]
        floor = float(inverse.sum() / (inverse * inverse).sum())
        candidate = np.append(least_squares(x[k:], y[k:]), floor)
        rss = _relative_rss(x, y, candidate)
        if rss < best_rss:
            best, best_rss = candidate, rss
    return best


def _mape(x: Floats, y: Floats, coef: CoefLike) -> float:
    return float(np.mean(np.abs(predict(x, coef) - y) / y))


def least_absolute(x: Floats, y: Floats) -> Floats:
    """Non-negative coefficients minimising the mean absolute relative error, exactly.

    The problem is a linear program, and an LP's optimum lies on a vertex: with k free columns
    (the others held at zero by their bound), k rows are fitted exactly. Enumerating every
    (columns, rows) pair of a 3-column, few-row table is a few hundred 3x3 solves.
    """
    best, best_mape = np.zeros(x.shape[1]), math.inf
    for k in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), k):
            for rows in itertools.combinations(range(len(y)), k):
                system = x[np.ix_(rows, cols)]
                if abs(np.linalg.det(system)) < 1e-12:
                    continue
                sol = np.linalg.solve(system, y[list(rows)])
                if (sol < 0.0).any():
                    continue
                full = np.zeros(x.shape[1])
                full[list(cols)] = sol
                mape = _mape(x, y, full)
                if mape < best_mape:
                    best, best_mape = full, mape
    return best


def floored_least_absolute(x: Floats, y: Floats) -> Floats:
    """(a, b, c, floor) minimising the MAPE of max(floor, x @ (a, b, c)).

    As `floored_least_squares`, the rows on the floor are the shortest k; the L1-optimal constant
    for them is a weighted median, i.e. one of their own values, so each is tried with the exact
    L1 fit of the remaining rows, and every candidate is scored as the max() it really is. k = 0
    is the plain quadratic, so the roofline never fits worse than it.
    """
    order = np.argsort(x[:, 1], kind="stable")
    x, y = x[order], y[order]
    best = np.append(least_absolute(x, y), 0.0)
    best_mape = _mape(x, y, best)
    for k in range(1, len(y) - 2):
        compute = least_absolute(x[k:], y[k:])
        for floor in y[:k]:
            candidate = np.append(compute, floor)
            mape = _mape(x, y, candidate)
            if mape < best_mape:
                best, best_mape = candidate, mape
    return best


def evaluate(table: Table, coef: CoefLike) -> FitResult:
    """MAPE, R^2 and max absolute percentage error of `coef` against `table`."""
    pred = predict(table.x, coef)
    ape = np.abs(pred - table.y) / table.y
    ss_res = float(np.sum((pred - table.y) ** 2))
    ss_tot = float(np.sum((table.y - table.y.mean()) ** 2))
    return FitResult(
        coef=tuple(float(v) for v in coef),
        mape=float(ape.mean()),
        r2=1.0 - ss_res / ss_tot,
        max_ape=float(ape.max()),
        n=len(table.y),
    )


def fit(table: Table) -> FitResult:
    """Fit (a, b, c), linear in the table's columns, and score the fit against it."""
    return evaluate(table, least_squares(table.x, table.y))


def fit_prefill(table: Table) -> FitResult:
    """Fit the prefill roofline (a, b, c, floor) at least MAPE and score it against `table`."""
    return evaluate(table, floored_least_absolute(table.x, table.y))


def knee_tokens(coef: Sequence[float]) -> float:
    """Prompt length at which the roofline's compute branch reaches its floor (0: no flat part)."""
    a, b, c, floor = coef
    rise = floor - a
    if rise <= 0.0:
        return 0.0
    if c == 0.0:
        return rise / b if b > 0.0 else math.inf
    return (-b + math.sqrt(b * b + 4.0 * c * rise)) / (2.0 * c)
