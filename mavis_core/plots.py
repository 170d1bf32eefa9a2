"""What the app draws: the live Pareto chart of samples and the per-token view of every method's reply.

A *sample* is a plain dict (so it can live in a user's ``gr.State`` and go through the API as JSON)::

    {"id": 3, "source": "generate" | "sweep", "method": "mavis", "prompt": "...", "text": "...",
     "weights": {"helpful": 0.5, ...}, "beta": 1.0, "seed": 0, "scores": {"helpful": 0.2, ...}, "kl": 1.3,
     "search": "sample" | "best-of-4" | "beam-4"}   # "search" may be missing: plain sampling

A sweep point made from several replies (prompts × seeds) carries their means in "scores" and "kl", their count
in "n" and the standard error of each mean in "se" ({"helpful": 0.04, ...}); the chart draws it with error bars.
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go
import plotly.io as pio

from . import pareto
from .config import search_kind
from .decoding import TokenEvent
from .sweep_plan import mean_and_se

METHOD_COLOURS = {"base": "#6b7280", "mavis": "#dc2626", "mod": "#2563eb", "rsoup": "#16a34a", "morlhf": "#7c3aed",
                  "prompted": "#d97706", "conditioned": "#0d9488"}
OBJECTIVE_COLOURS = ["#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4d7c0f"]
RAISED, LOWERED = (22, 163, 74), (220, 38, 38)  # green: the tilt made the token likelier; red: less likely
TILT_SCALE_FLOOR = 1.0  # tilts below this (in nats) never get full colour, so a flat reply looks flat
# Marker shape per search (first word of the sample's "search" label); shapes plotly draws in 2-D and 3-D.
SEARCH_SYMBOLS = {"sample": "circle", "best-of": "diamond", "beam": "square"}
SEARCH_NAMES = {"best-of": "best-of-N", "beam": "beam search"}
# Point labels are laid out in Python, which cannot see the page: it assumes a plot area of this many pixels
# (the chart at about 1000 px wide) and glyphs of this size; a label that would overlap another or a point is
# left off (its number stays in the hover).
LABEL_AREA = (520, 330)
LABEL_CHAR_PX, LABEL_HEIGHT_PX, MARKER_RADIUS_PX = 7.0, 14.0, 7.0
LABEL_POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "top left",
                   "bottom right", "bottom left")
ALTERNATIVES_SHOWN = 5
GENERATE_NOTE = "Generate to see every reply token by token; with MAVIS ticked, which objective pushed each token."
SPOT_DIGITS = 6  # scores equal to this many decimals are one point on the chart


def _search_kind(sample: dict) -> str:
    """The sample's search without its size (`search_kind`); samples without a search label were sampled."""
    return search_kind(sample.get("search", "sample"))


def _symbols(samples: list[dict]) -> list[str]:
    return [SEARCH_SYMBOLS.get(_search_kind(s), "circle") for s in samples]


def _search_legend(fig: go.Figure, samples: list[dict], scatter=go.Scatter) -> None:
    """One grey legend entry per search shape in use, so the shapes explain themselves."""
    for kind in sorted({_search_kind(s) for s in samples} - {"sample"}):
        fig.add_trace(scatter(x=[None], y=[None], **({"z": [None]} if scatter is go.Scatter3d else {}),
                              mode="markers", name=SEARCH_NAMES.get(kind, kind), hoverinfo="skip",
                              marker=dict(symbol=SEARCH_SYMBOLS.get(kind, "circle"), color="#6b7280", size=9)))


def _weights_text(weights: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in weights.items())


def _spot(scores: dict[str, float]) -> tuple:
    """Where scores put a point, to 1e-6: the same reply scored in batches of different sizes differs in about
    the 8th digit, and is still the same point."""
    return tuple(sorted((k, round(v, SPOT_DIGITS)) for k, v in scores.items()))


def duplicate_groups(samples: list[dict]) -> list[list[dict]]:
    """Samples that would be drawn on top of each other as the same point (same method, source, search and
    scores: the same seed twice, or λ changes too small to change the reply), grouped in order of first
    appearance. Each group is drawn once, with its count.

    >>> pts = [{"method": "mod", "source": "generate", "scores": {"h": 1.0}, "id": i} for i in (1, 2)]
    >>> [[s["id"] for s in g] for g in duplicate_groups(pts)]
    [[1, 2]]
    """
    groups: dict[tuple, list[dict]] = {}
    for s in samples:
        key = (s["method"], s["source"], s.get("search", "sample"), _spot(s["scores"]))
        groups.setdefault(key, []).append(s)
    return list(groups.values())


def _hover(group: list[dict], x: str, y: str) -> str:
    sample = group[0]
    # quote=False: plotly's hover decodes &amp; &lt; &gt; but not &quot;, which would show as written
    snippet = html.escape(sample["text"][:80] + ("…" if len(sample["text"]) > 80 else ""), quote=False)
    count = "" if len(group) == 1 else (f"<br>×{len(group)} the same point: "
                                        + ", ".join(f"#{s['id']}" for s in group[:8])
                                        + (" …" if len(group) > 8 else ""))
    se = sample.get("se")
    spread = "" if not se else (f"<br>mean of {sample['n']} replies · ± standard error: {x} {se[x]:.3f} · "
                                f"{y} {se[y]:.3f}")
    return (f"<b>#{sample['id']} {sample['method']}</b> ({sample['source']}, {sample.get('search', 'sample')})"
            f"<br>λ: {_weights_text(sample['weights'])} · seed {sample.get('seed', '?')}"
            f"<br>{x} {sample['scores'][x]:.3f} · {y} {sample['scores'][y]:.3f} · KL {sample['kl']:.2f}"
            f"{spread}{count}<br>{snippet}")


def error_bars(groups: list[list[dict]], *axes: str) -> dict:
    """Plotly's ``error_x`` / ``error_y`` (/ ``error_z``) for points that carry standard errors ("se"), one per
    axis in ``axes`` order; {} when none does, so points of single replies get no bars.

    >>> bars = error_bars([[{"se": {"helpful": 0.1, "humor": 0.2}}], [{}]], "helpful", "humor")
    >>> bars["error_y"]["array"]
    [0.2, 0]
    """
    if not any("se" in g[0] for g in groups):
        return {}
    return {f"error_{name}": dict(type="data", array=[g[0].get("se", {}).get(key, 0) for g in groups], visible=True,
                                  thickness=1.2, width=3)
            for name, key in zip("xyz", axes, strict=False)}


def _label(groups: list[list[dict]]) -> str:
    """"#3", "#3 ×2" for one point; "#3 · #4" for points of several methods at one spot."""
    parts = [f"#{g[0]['id']}" + (f" ×{len(g)}" if len(g) > 1 else "") for g in groups]
    return " · ".join(parts[:3]) + (f" +{len(parts) - 3}" if len(parts) > 3 else "")


def _label_box(px: float, py: float, text: str, position: str) -> tuple[float, float, float, float]:
    """The (left, bottom, right, top) pixels plotly gives ``text`` at ``position`` around a marker at (px, py)."""
    w, h, r = LABEL_CHAR_PX * len(text) + 4, LABEL_HEIGHT_PX, MARKER_RADIUS_PX
    vertical, horizontal = position.split(" ")
    bottom = {"top": py + r, "bottom": py - r - h, "middle": py - h / 2}[vertical]
    left = {"center": px - w / 2, "right": px + (r if vertical == "middle" else 0),
            "left": px - w - (r if vertical == "middle" else 0)}[horizontal]
    return left, bottom, left + w, bottom + h


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_layout(groups: list[list[dict]], x: str, y: str, extent: list[dict]) -> dict[int, tuple[str, str]]:
    """Text and position of each generated point's label (keyed by the id of its group's first sample), so that
    no two labels overprint and no label covers a point, in a plot area of LABEL_AREA pixels whose axes span
    ``extent`` (every sample drawn). Points of several methods at one spot share one label; newest first gets
    the best place; a label with no free place is left off (the hover still names the point)."""
    def spread(key: str, size: float):
        values = [s["scores"][key] for s in extent]
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        return lambda v: 12 + (v - low + (span if high == low else 0) / 2) / span * (size - 24)

    to_x, to_y = spread(x, LABEL_AREA[0]), spread(y, LABEL_AREA[1])
    spots: dict[tuple[int, int], list[list[dict]]] = {}  # groups within ~2 px of each other
    for g in sorted(groups, key=lambda g: -max(s["id"] for s in g)):
        px, py = to_x(g[0]["scores"][x]), to_y(g[0]["scores"][y])
        spots.setdefault((round(px / 2), round(py / 2)), []).append(g)
    r = MARKER_RADIUS_PX
    points = {k: (to_x(v[0][0]["scores"][x]), to_y(v[0][0]["scores"][y])) for k, v in spots.items()}
    taken = [(px - r, py - r, px + r, py + r) for px, py in points.values()]
    out = {}
    for key, members in spots.items():
        px, py = points[key]
        text = _label(sorted(members, key=lambda g: g[0]["id"]))
        own = (px - r, py - r, px + r, py + r)
        free = (p for p in LABEL_POSITIONS
                if not any(_overlaps(_label_box(px, py, text, p), t) for t in taken if t != own))
        position = next(free, None)
        for g in members:
            out[g[0]["id"]] = ("", "top center")
        if position is not None:
            taken.append(_label_box(px, py, text, position))
            out[members[0][0]["id"]] = (text, position)
    return out


def _trace(groups: list[list[dict]], x: str, y: str, method: str, **kw) -> go.Scatter:
    """One method's points, each group of duplicates once; ``customdata`` is the id a click shows."""
    return go.Scatter(
        x=[g[0]["scores"][x] for g in groups], y=[g[0]["scores"][y] for g in groups],
        hovertext=[_hover(g, x, y) for g in groups], hoverinfo="text",
        customdata=[g[0]["id"] for g in groups], marker_color=METHOD_COLOURS.get(method, "#111827"),
        marker_symbol=_symbols([g[0] for g in groups]), **kw,
    )


def _figure_3d(samples: list[dict], x: str, y: str, z: str, methods: list[str]) -> go.Figure:
    """Three objectives at once: generated replies as large points, sweep replies as small ones."""
    fig = go.Figure()
    for method in methods:
        for source, size in (("sweep", 3), ("generate", 7)):
            groups = duplicate_groups([s for s in samples if s["method"] == method and s["source"] == source])
            if groups:
                fig.add_trace(go.Scatter3d(
                    x=[g[0]["scores"][x] for g in groups], y=[g[0]["scores"][y] for g in groups],
                    z=[g[0]["scores"][z] for g in groups],
                    mode="markers", name=method if source == "generate" else f"{method} sweep",
                    marker=dict(size=size, color=METHOD_COLOURS.get(method, "#111827"),
                                symbol=_symbols([g[0] for g in groups])), **error_bars(groups, x, y, z),
                    legendgroup=method, hoverinfo="text", customdata=[g[0]["id"] for g in groups],
                    hovertext=[_hover(g, x, y) + f"<br>{z} {g[0]['scores'][z]:.3f}" for g in groups]))
    _search_legend(fig, samples, go.Scatter3d)
    # The camera stands back and the margins leave room, so the axis titles at the cube's corners stay in view.
    fig.update_layout(scene=dict(xaxis_title=x, yaxis_title=y, zaxis_title=z, aspectmode="cube",
                                 camera=dict(eye=dict(x=1.6, y=1.6, z=1.1))),
                      height=520, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h"),
                      template="plotly_white")
    return fig


def pareto_figure(samples: list[dict], x: str, y: str, methods: list[str], z: str | None = None) -> go.Figure:
    """Every sample as a point coloured by method (exact duplicates once, with their count); sweep samples also
    drawn as each method's front; generated points labelled with their number where a label fits.
    With ``z``, a 3-D scatter of the three objectives instead."""
    if z is not None:
        return _figure_3d(samples, x, y, z, methods)
    shown = [s for s in samples if s["method"] in methods]
    generated = {m: duplicate_groups([s for s in shown if s["method"] == m and s["source"] == "generate"])
                 for m in methods}
    labels = label_layout([g for gs in generated.values() for g in gs], x, y, shown) if shown else {}
    fig = go.Figure()
    for method in methods:
        swept = duplicate_groups([s for s in shown if s["method"] == method and s["source"] == "sweep"])
        if swept:
            front = [swept[i] for i in pareto.front([(g[0]["scores"][x], g[0]["scores"][y]) for g in swept])]
            fig.add_trace(_trace(swept, x, y, method, mode="markers", name=f"{method} sweep", opacity=0.45,
                                 marker_size=7, legendgroup=method, **error_bars(swept, x, y)))
            fig.add_trace(_trace(front, x, y, method, mode="lines+markers", name=f"{method} front",
                                 marker_size=7, line_width=2, legendgroup=method))
        if generated[method]:
            placed = [labels[g[0]["id"]] for g in generated[method]]
            fig.add_trace(_trace(generated[method], x, y, method, mode="markers+text", name=method, marker_size=13,
                                 marker_line=dict(width=1.5, color="white"), legendgroup=method, cliponaxis=False,
                                 text=[t for t, _ in placed], textposition=[p for _, p in placed]))
    _search_legend(fig, shown)
    fig.update_layout(  # the top margin keeps the highest tick clear of the app's "Pareto chart" label badge
        xaxis_title=f"{x} reward", yaxis_title=f"{y} reward", height=430, margin=dict(l=50, r=20, t=44, b=50),
        legend=dict(orientation="h", y=-0.18), template="plotly_white", hoverlabel=dict(align="left"),
    )
    if not shown:
        fig.add_annotation(text="Generate or sweep to add points", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(size=15, color="#6b7280"))
    return fig


def dark_template() -> dict:
    """The template the page's script swaps in when the page is dark: plotly_dark on a transparent background,
    so the chart sits on the page's own dark panel."""
    template = pio.templates["plotly_dark"].to_plotly_json()
    template["layout"] |= {"paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)"}
    return template


def chart_point(sample_id: int, source: str, prompt: str, replies: list, weights: dict[str, float], beta: float,
                seed: int) -> dict:
    """The sample (see the module docstring) of one chart point: one scored reply, or a sweep point's replies
    (prompts × seeds, each with ``method``, ``text``, ``scores``, ``kl``, ``search``) at their means with their
    standard errors ("se") and count ("n"); the text shown is the first reply's."""
    first = replies[0]
    means, errors = mean_and_se({k: [r.scores[k] for r in replies] for k in first.scores})
    point = {"id": sample_id, "source": source, "method": first.method, "prompt": prompt, "text": first.text,
             "weights": dict(weights), "beta": beta, "seed": seed, "scores": means,
             "kl": float(sum(r.kl for r in replies) / len(replies)), "search": first.search}
    if source == "sweep":
        point["n"] = len(replies)
    if len(replies) > 1:
        point["se"] = errors
    return point


def same_point(sample: dict, history: list[dict]) -> list[dict]:
    """The other samples drawn at ``sample``'s scores (of any method), which a click cannot reach."""
    spot = _spot(sample["scores"])
    return [s for s in history if _spot(s["scores"]) == spot and s["id"] != sample["id"]]


def token_explanation(events: list[TokenEvent]) -> list[dict]:
    """Per token of one reply: its text, log π (the method) and log π_ref (the base), their difference, the
    likeliest alternatives; for MAVIS also its tilt Σ_m β·λ_m·(Q_m − mean over the top-k) and the objective
    that pushed it most (largest |contribution|)."""
    out = []
    for e in events:
        token = {"text": e.text, "logprob": e.logprob, "base_logprob": e.base_logprob,
                 "delta": e.logprob - e.base_logprob, "alternatives": list(e.alternatives or [])}
        if e.contributions:
            top = max(e.contributions, key=lambda k: abs(e.contributions[k]))
            token |= {"tilt": sum(e.contributions.values()), "top": top, "top_value": e.contributions[top],
                      "contributions": dict(e.contributions)}
        out.append(token)
    return out


def _shade(token: dict) -> float:
    """What a token's colour shows: MAVIS's tilt, else how much likelier the method made it than the base."""
    return token["tilt"] if "tilt" in token else token["delta"]


def _tip(token: dict) -> str:
    """A token's hover card (every text escaped): log π, log π_ref, MAVIS's push per objective, alternatives."""
    p, p_ref = math.exp(token["logprob"]), math.exp(token["base_logprob"])
    lines = [f"<b>{html.escape(repr(token['text']))}</b>",
             f"log π {token['logprob']:+.2f} (p {p:.3f}) · log π_ref {token['base_logprob']:+.2f} (p {p_ref:.3f})"]
    if "tilt" in token:
        pushes = " · ".join(f"{html.escape(k)} {v:+.2f}" for k, v in token["contributions"].items())
        lines.append(f"tilt {token['tilt']:+.2f} nats, pushed most by {html.escape(token['top'])} "
                     f"({token['top_value']:+.2f}): {pushes}")
    alternatives = token["alternatives"][:ALTERNATIVES_SHOWN]
    # The chosen token is the first alternative with its text and its probability (two tokens can read alike).
    chosen = next((i for i, (text, prob) in enumerate(alternatives)
                   if text == token["text"] and abs(prob - p) <= 1e-4 + 1e-3 * p), None)
    rows = "".join(f'<tr class="{"chosen" if i == chosen else ""}"><td>{html.escape(repr(text))}</td>'
                   f"<td>{prob:.3f}</td></tr>" for i, (text, prob) in enumerate(alternatives))
    table = f"<table><caption>likeliest tokens here (p; bold: chosen)</caption>{rows}</table>" if rows else ""
    return "<br>".join(lines) + table


def _token_span(token: dict, scale: float, colours: dict[str, str]) -> str:
    """One token with its shade (none when ``scale`` is infinite: the base's own column) and its hover card."""
    shade = _shade(token)
    alpha = min(1.0, abs(shade) / scale) * 0.75
    rgb = RAISED if shade >= 0 else LOWERED
    underline = f"border-bottom: 3px solid {colours[token['top']]}; " if "top" in token else ""
    style = f"background: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha:.2f}); {underline}"
    return (f'<span class="tok" tabindex="0" style="{style}">{html.escape(token["text"])}'
            f'<span class="tip" role="tooltip">{_tip(token)}</span></span>')


def _column_html(method: str, title: str, tokens: list[dict], colours: dict[str, str]) -> str:
    colour = METHOD_COLOURS.get(method, "#6b7280")
    if method == "base":  # π_ref itself: shading it "likelier than the base" would only show its top-k truncation
        title += " (the reference: not shaded)"
    if tokens:
        scale = math.inf if method == "base" else max(TILT_SCALE_FLOOR, *(abs(_shade(t)) for t in tokens))
        body = "".join(_token_span(t, scale, colours) for t in tokens)
    else:
        body = '<span class="tv-note">(empty reply)</span>'
    return (f'<div class="tv-cell" data-method="{html.escape(method)}"><div class="tv-title" '
            f'style="border-left: 4px solid {colour}">{html.escape(title)}</div><div class="tv-text">{body}</div>'
            f"</div>")


def explanation_html(columns: dict[str, list[dict]], objectives: list[str],
                     titles: dict[str, str] | None = None, note: str | None = None) -> str:
    """Every method's reply token by token (``columns``: method -> `token_explanation`), side by side. A token
    is shaded green when the method made it likelier than the base did, red when less likely (for MAVIS: by
    its tilt, and underlined in the colour of the objective that pushed it most); hovering or focusing a
    token shows its numbers and the likeliest alternatives. With no columns, ``note`` (escaped) says why."""
    colours = {k: OBJECTIVE_COLOURS[i % len(OBJECTIVE_COLOURS)] for i, k in enumerate(objectives)}
    legend = " ".join(f'<span style="border-bottom: 3px solid {c}; margin-right: 8px">{html.escape(k)}</span>'
                      for k, c in colours.items())
    if columns:
        cells = "".join(_column_html(m, (titles or {}).get(m, m), tokens, colours) for m, tokens in columns.items())
        body = f'<div class="tv-grid">{cells}</div>'
    else:
        body = f'<div class="tv-note">{html.escape(note or GENERATE_NOTE)}</div>'
    return (f'<div class="mavis-explain"><div class="tv-caption">Hover or tap a token for log π (the method), '
            f"log π_ref (the base) and the likeliest tokens. "
            f'<span class="tv-chip" style="background: rgba(22,163,74,0.5)">likelier</span> '
            f'<span class="tv-chip" style="background: rgba(220,38,38,0.5)">less likely</span> than under the '
            f"base (MAVIS: its tilt) · MAVIS underline = objective that pushed most: {legend}</div>{body}</div>")


# The page's CSS for explanation_html (app.py adds it to the page, and lets the view's container overflow so the
# cards are not cut off): colours from the theme's variables, so the view reads in light and dark mode; the hover
# card opens below its token, leftwards in the last column.
TOKEN_VIEW_CSS = """
.mavis-explain { line-height: 1.9; font-size: 15px; }
.mavis-explain .tv-caption { font-size: 13px; line-height: 1.6; color: var(--body-text-color); opacity: 0.85;
  margin-bottom: 6px; }
.mavis-explain .tv-chip { padding: 0 4px; border-radius: 3px; color: var(--body-text-color); }
.mavis-explain .tv-note { color: var(--body-text-color-subdued); }
.mavis-explain .tv-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 10px; }
.mavis-explain .tv-cell { min-width: 0; }
.mavis-explain .tv-text { overflow-wrap: anywhere; word-break: break-word; }
.mavis-explain .tv-title { font-size: 13px; font-weight: 600; padding-left: 6px; margin-bottom: 2px; }
.mavis-explain .tok { position: relative; white-space: pre-wrap; border-radius: 3px; cursor: help; }
.mavis-explain .tok:focus { outline: 2px solid var(--color-accent); }
.mavis-explain .tip { display: none; position: absolute; left: 0; top: 1.6em; z-index: 60; width: max-content;
  max-width: 280px; min-width: 180px; padding: 6px 8px; font-size: 12px; line-height: 1.45; white-space: normal;
  background: var(--background-fill-primary); color: var(--body-text-color);
  border: 1px solid var(--border-color-primary); border-radius: 6px; box-shadow: 0 4px 14px rgba(0, 0, 0, 0.25); }
.mavis-explain .tv-cell:last-child:not(:first-child) .tip { left: auto; right: 0; }
.mavis-explain .tok:hover .tip, .mavis-explain .tok:focus .tip { display: block; }
.mavis-explain .tip table { margin: 4px 0 0 0 !important; border: none !important; border-collapse: collapse;
  font-size: 12px; width: auto !important; background: none !important; }
.mavis-explain .tip caption { text-align: left; white-space: nowrap; color: var(--body-text-color-subdued); }
.mavis-explain .tip tr, .mavis-explain .tip td { padding: 0 12px 0 0 !important; border: none !important;
  background: none !important; white-space: pre; }
.mavis-explain .tip tr.chosen td { font-weight: 700; }
@media (max-width: 600px) {  /* a phone: the card is a sheet along the bottom of the screen */
  .mavis-explain .tip, .mavis-explain .tv-cell:last-child:not(:first-child) .tip {
    position: fixed; left: 8px; right: 8px; top: auto; bottom: 8px; max-width: none; width: auto; }
}
"""
