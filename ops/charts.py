"""Small server-rendered SVG charts for the ops dashboard: a line (or step) chart and a bar chart.

Pure Python, no JavaScript and nothing fetched from elsewhere, so the dashboard works offline. Every
piece of text that goes into the SVG (titles, axis labels, tick labels, tooltips) is escaped here, so a
caller may mark the returned string safe.
"""

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape

WIDTH = 640
HEIGHT = 260
# Room around the plot for tick labels and axis labels.
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 48
LINE_COLOUR = "#417690"  # the admin's own blue
BAR_COLOUR = "#79aec8"
AXIS_COLOUR = "#666"
GRID_COLOUR = "#ddd"
FONT = 'font-family="sans-serif" font-size="11"'


# Characters XML 1.0 does not allow even escaped (control characters but tab and newlines, lone
# surrogates): one in a title (`?sku=%00`) made the whole SVG unreadable to the browser.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def _num(value: float) -> str:
    """A coordinate: short, and never in exponent notation (SVG accepts it, people reading it do not)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_ticks(low: float, high: float, count: int = 5, *, integers: bool = False) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten (whole steps only
    with integers=True, for things counted, where a tick at 0.2 sales would mean nothing)."""
    if high < low:
        low, high = high, low
    if high == low:
        high = low + 1
    raw_step = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    # The nice step nearest the raw one (rounding down to 2 or 5 means a tick or two more, not fewer).
    nice = next(m for limit, m in ((1.5, 1), (3, 2), (7, 5), (math.inf, 10)) if raw_step / magnitude < limit)
    step = max(nice * magnitude, 1) if integers else nice * magnitude
    ticks = [round(math.floor(low / step) * step, 10)]
    while ticks[-1] < high - step * 1e-9:  # the last tick reaches the highest value, so nothing is drawn past it
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _tick_label(value: float) -> str:
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _frame(title: str, x_label: str, y_label: str, width: int, height: int, body: list[str]) -> str:
    plot_bottom = height - BOTTOM
    return "".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{_text(title)}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
            f"<title>{_text(title)}</title>",
            f'<text class="chart-title" x="{LEFT}" y="16" {FONT} font-weight="bold">{_text(title)}</text>',
            *body,
            # Axes last, so they are drawn over the bars.
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{plot_bottom}" stroke="{AXIS_COLOUR}"/>',
            f'<line class="axis" x1="{LEFT}" y1="{plot_bottom}" x2="{width - RIGHT}" y2="{plot_bottom}" '
            f'stroke="{AXIS_COLOUR}"/>',
            f'<text class="axis-label" x="{_num(LEFT + (width - LEFT - RIGHT) / 2)}" y="{height - 6}" '
            f'text-anchor="middle" {FONT}>{_text(x_label)}</text>',
            f'<text class="axis-label" x="12" y="{_num(TOP + (plot_bottom - TOP) / 2)}" text-anchor="middle" '
            f'transform="rotate(-90 12 {_num(TOP + (plot_bottom - TOP) / 2)})" {FONT}>{_text(y_label)}</text>',
            "</svg>",
        ]
    )


def _empty(title, x_label, y_label, width, height, message) -> str:
    body = [
        f'<text class="chart-empty" x="{_num(width / 2)}" y="{_num(height / 2)}" text-anchor="middle" '
        f'{FONT} fill="#999">{_text(message)}</text>'
    ]
    return _frame(title, x_label, y_label, width, height, body)


def _y_axis(ticks: list[float], scale_y: Callable[[float], float], width: int) -> list[str]:
    parts = []
    for tick in ticks:
        y = _num(scale_y(tick))
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{width - RIGHT}" y2="{y}" stroke="{GRID_COLOUR}"/>')
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y}" dy="0.35em" text-anchor="end" {FONT}>'
            f"{_text(_tick_label(tick))}</text>"
        )
    return parts


def _as_number(x) -> float:
    return x.timestamp() if isinstance(x, datetime) else float(x)


def line_chart(
    points: Sequence[tuple[float | datetime, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_format: Callable[[float | datetime], str] | None = None,
    x_range: tuple[float | datetime, float | datetime] | None = None,
    step: bool = False,
    integers: bool = False,
    width: int = WIDTH,
    height: int = HEIGHT,
    empty_message: str = "No data",
) -> str:
    """A polyline through (x, y) points, x numbers or datetimes. With step=True the line holds each
    value until the next point (a level that changes in jumps, like stock). x_range widens the x axis
    (e.g. to a whole time window); x_format labels the x ticks (datetimes default to HH:MM); integers
    keeps the y ticks whole."""
    if not points:
        return _empty(title, x_label, y_label, width, height, empty_message)
    xs = [_as_number(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    x_low, x_high = min(xs), max(xs)
    if x_range is not None:
        x_low, x_high = min(x_low, _as_number(x_range[0])), max(x_high, _as_number(x_range[1]))
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    ticks = nice_ticks(min(0.0, min(ys)), max(ys), integers=integers)
    y_low, y_high = ticks[0], ticks[-1]
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def scale_x(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def scale_y(y: float) -> float:
        return TOP + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    coords: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if step and i:
            coords.append((scale_x(x), scale_y(ys[i - 1])))
        coords.append((scale_x(x), scale_y(y)))
    if step and x_range is not None and xs[-1] < x_high:
        coords.append((scale_x(x_high), scale_y(ys[-1])))  # the level holds until the end of the window
    polyline = " ".join(f"{_num(cx)},{_num(cy)}" for cx, cy in coords)

    is_time = isinstance(points[0][0], datetime)
    if x_format is None:
        x_format = (lambda x: x.strftime("%H:%M")) if is_time else _tick_label
    body = _y_axis(ticks, scale_y, width)
    tz = points[0][0].tzinfo if is_time else None
    for i in range(5):  # five evenly spaced x ticks across the axis
        x = x_low + (x_high - x_low) * i / 4
        label = x_format(datetime.fromtimestamp(x, tz) if is_time else x)
        body.append(
            f'<text class="tick" x="{_num(scale_x(x))}" y="{height - BOTTOM + 16}" text-anchor="middle" {FONT}>'
            f"{_text(label)}</text>"
        )
    body.append(f'<polyline class="series" fill="none" stroke="{LINE_COLOUR}" stroke-width="2" points="{polyline}"/>')
    last_x, last_y = coords[-1]
    body.append(
        f'<circle class="last-point" cx="{_num(last_x)}" cy="{_num(last_y)}" r="3" fill="{LINE_COLOUR}">'
        f"<title>{_text(_tick_label(ys[-1]))}</title></circle>"
    )
    return _frame(title, x_label, y_label, width, height, body)


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = WIDTH,
    height: int = HEIGHT,
    max_x_labels: int = 12,
    integers: bool = False,
    empty_message: str = "No data",
) -> str:
    """One bar per (label, value), left to right; values must not be negative. At most max_x_labels
    labels are written under the axis (every bar keeps its label as a tooltip); integers keeps the y
    ticks whole."""
    if not bars:
        return _empty(title, x_label, y_label, width, height, empty_message)
    values = [float(value) for _, value in bars]
    if min(values) < 0:
        raise ValueError("bar_chart draws non-negative values only")
    ticks = nice_ticks(0.0, max(values), integers=integers)
    y_high = ticks[-1]
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / len(bars)
    bar_w = max(slot * 0.8, 1.0)
    label_every = math.ceil(len(bars) / max_x_labels)

    def scale_y(y: float) -> float:
        return TOP + plot_h - y / y_high * plot_h

    body = _y_axis(ticks, scale_y, width)
    for i, ((label, _), value) in enumerate(zip(bars, values, strict=True)):
        x = LEFT + i * slot + (slot - bar_w) / 2
        top = scale_y(value)
        body.append(
            f'<rect class="bar" x="{_num(x)}" y="{_num(top)}" width="{_num(bar_w)}" '
            f'height="{_num(TOP + plot_h - top)}" fill="{BAR_COLOUR}">'
            f"<title>{_text(label)}: {_text(_tick_label(value))}</title></rect>"
        )
        if i % label_every == 0:
            body.append(
                f'<text class="tick" x="{_num(x + bar_w / 2)}" y="{height - BOTTOM + 16}" text-anchor="middle" '
                f"{FONT}>{_text(label)}</text>"
            )
    return _frame(title, x_label, y_label, width, height, body)
