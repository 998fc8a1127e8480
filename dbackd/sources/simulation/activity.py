"""The daily activity curve as a clock: how far real time must run for a given amount of activity.

A rate scaled by a multiplier m(t) is a plain rate in "activity time" Λ(t) = ∫ m. So the
engine draws each gap in activity time (exactly `interval` for fixed timing, an
exponential draw for Poisson timing) and `advance` maps it back to real time. That is
exact for both timings, and quiet hours (m = 0) are simply skipped. The curve is linear
between its points and wraps around midnight, in the configured time zone.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from datetime import datetime, timezone

from dbackd.config.model import Activity
from dbackd.config.values import zone

DAY = 86400.0


class ActivityCurve:
    def __init__(self, activity: Activity, epoch: float):
        """`epoch`: the Unix time at engine time 0."""
        self.epoch = epoch
        self.tz = zone(activity.timezone)
        points = list(activity.points)
        self.constant = points[0][1] if len(points) == 1 else None
        last_x, last_m = points[-1]
        first_x, first_m = points[0]
        self.xs = [last_x - DAY] + [x for x, _ in points] + [first_x + DAY]
        self.ms = [last_m] + [m for _, m in points] + [first_m]

    def _local(self, t: float) -> float:
        """Seconds after local midnight at engine time t."""
        wall = self.epoch + t
        offset = 0.0 if self.tz is timezone.utc else datetime.fromtimestamp(wall, self.tz).utcoffset().total_seconds()
        return (wall + offset) % DAY

    def multiplier(self, t: float) -> float:
        if self.constant is not None:
            return self.constant
        s = self._local(t)
        k = bisect_right(self.xs, s) - 1
        x0, x1, m0, m1 = self.xs[k], self.xs[k + 1], self.ms[k], self.ms[k + 1]
        return m0 + (m1 - m0) * (s - x0) / (x1 - x0)

    def advance(self, t: float, amount: float) -> float:
        """The engine time at which `amount` seconds of activity have passed since t (inf: never)."""
        if amount <= 0:
            return t
        if self.constant is not None:
            return t + amount / self.constant if self.constant > 0 else math.inf
        remaining = amount
        idle = 0.0  # real seconds walked without any activity
        while True:
            s = self._local(t)
            k = bisect_right(self.xs, s) - 1
            x0, x1, m0, m1 = self.xs[k], self.xs[k + 1], self.ms[k], self.ms[k + 1]
            slope = (m1 - m0) / (x1 - x0)
            a = m0 + slope * (s - x0)  # the multiplier now
            span = x1 - s
            area = (a + m1) / 2 * span
            if area >= remaining:
                # a·d + slope·d²/2 = remaining, in the form that stays exact when slope is 0 or a is 0.
                d = 2 * remaining / (a + math.sqrt(max(a * a + 2 * slope * remaining, 0.0)))
                return t + min(d, span)
            remaining -= area
            idle = idle + span if area == 0 else 0.0
            if idle > 2 * DAY:
                return math.inf
            t += max(span, 1e-6)  # a hair past the point, so float rounding cannot stall the walk
