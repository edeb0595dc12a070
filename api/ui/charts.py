"""Charts for the dashboard, drawn on the server as inline SVG: no script, nothing fetched.
Pure functions over plain numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 160
PAD = 28  # room for the axis labels


@dataclass(frozen=True)
class Series:
    """Values per equal interval from ``start``, each a rate per second over its interval."""

    start: datetime | None
    seconds: float  # one interval's length
    values: list[float]

    @property
    def span(self) -> float:
        return self.seconds * len(self.values)


def rates(spans: Sequence[tuple[datetime, float, float]], *, buckets: int = 40) -> Series:
    """``spans`` (end, seconds, amount), each amount spread evenly over the ``seconds`` before
    its end, summed into ``buckets`` equal intervals from the first start to the last end, each
    as amount per second."""
    if not spans:
        return Series(None, 0.0, [])
    start = min(end - timedelta(seconds=max(0.0, s)) for end, s, _ in spans)
    total = max((end - start).total_seconds() for end, _, _ in spans)
    if total <= 0:
        return Series(start, 0.0, [])
    width = total / buckets
    sums = [0.0] * buckets
    for end, seconds, amount in spans:
        b = (end - start).total_seconds()
        a = b - max(0.0, seconds)
        first, last = int(a / width), min(int(b / width), buckets - 1)
        if seconds <= 0 or first >= last:
            sums[min(first, buckets - 1)] += amount
            continue
        for i in range(first, last + 1):
            overlap = min(b, (i + 1) * width) - max(a, i * width)
            sums[i] += amount * max(0.0, overlap) / seconds
    return Series(start, width, [v / width for v in sums])


def bars(values: Sequence[float], *, title: str, unit: str, labels: tuple[str, str]) -> Markup:
    """A bar chart of ``values`` with its largest value and ``labels`` (left, right) on the axes."""
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    top = max(values, default=0.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" '
        f'y2="{HEIGHT - PAD}"/>',
    ]
    if values and top > 0:
        step = inner_w / len(values)
        for i, value in enumerate(values):
            h = inner_h * value / top
            parts.append(
                f'<rect class="bar" x="{PAD + i * step + step * 0.1:.1f}" '
                f'y="{HEIGHT - PAD - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}">'
                f"<title>{value:,.1f} {escape(unit)}</title></rect>"
            )
    left, right = labels
    parts += [
        f'<text class="label" x="{PAD}" y="{PAD - 8}">{top:,.1f} {escape(unit)}</text>',
        f'<text class="label" x="{PAD}" y="{HEIGHT - 8}">{escape(left)}</text>',
        f'<text class="label end" x="{WIDTH - PAD}" y="{HEIGHT - 8}">{escape(right)}</text>',
        "</svg>",
    ]
    return Markup("".join(parts))


def histogram(values: Sequence[int], *, bins: int = 12) -> list[tuple[str, int]]:
    """(range label, count) for ``values`` in at most ``bins`` equal integer ranges."""
    if not values:
        return []
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // bins))
    counts: dict[int, int] = {}
    for value in values:
        counts[(value - low) // width] = counts.get((value - low) // width, 0) + 1
    out = []
    for b in range((high - low) // width + 1):
        first = low + b * width
        last = first + width - 1
        out.append((str(first) if width == 1 else f"{first}-{last}", counts.get(b, 0)))
    return out
