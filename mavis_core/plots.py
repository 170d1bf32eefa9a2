"""What the app draws: the live Pareto chart of samples and the MAVIS per-token explanation.

A *sample* is a plain dict (so it can live in a user's ``gr.State`` and go through the API as JSON)::

    {"id": 3, "source": "generate" | "sweep", "method": "mavis", "prompt": "...", "text": "...",
     "weights": {"helpful": 0.5, ...}, "beta": 1.0, "seed": 0, "scores": {"helpful": 0.2, ...}, "kl": 1.3,
     "search": "sample" | "best-of-4" | "beam ×4"}   # "search" may be missing: plain sampling
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from .decoding import TokenEvent

METHOD_COLOURS = {"base": "#6b7280", "mavis": "#dc2626", "mod": "#2563eb", "rsoup": "#16a34a"}
OBJECTIVE_COLOURS = ["#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4d7c0f"]
RAISED, LOWERED = (22, 163, 74), (220, 38, 38)  # green: the tilt made the token likelier; red: less likely
TILT_SCALE_FLOOR = 1.0  # tilts below this (in nats) never get full colour, so a flat reply looks flat
# Marker shape per search (first word of the sample's "search" label); shapes plotly draws in 2-D and 3-D.
SEARCH_SYMBOLS = {"sample": "circle", "best-of": "diamond", "beam": "square"}
SEARCH_NAMES = {"best-of": "best-of-N", "beam": "beam search"}


def _search_kind(sample: dict) -> str:
    """"best-of-4" -> "best-of", "beam ×4" -> "beam"; samples without a search label were sampled."""
    label = sample.get("search", "sample")
    return "best-of" if label.startswith("best-of") else label.split(" ")[0]


def _symbols(samples: list[dict]) -> list[str]:
    return [SEARCH_SYMBOLS.get(_search_kind(s), "circle") for s in samples]


def _search_legend(fig: go.Figure, samples: list[dict], scatter=go.Scatter) -> None:
    """One grey legend entry per search shape in use, so the shapes explain themselves."""
    for kind in sorted({_search_kind(s) for s in samples} - {"sample"}):
        fig.add_trace(scatter(x=[None], y=[None], **({"z": [None]} if scatter is go.Scatter3d else {}),
                              mode="markers", name=SEARCH_NAMES.get(kind, kind), hoverinfo="skip",
                              marker=dict(symbol=SEARCH_SYMBOLS.get(kind, "circle"), color="#6b7280", size=9)))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (both maximised), sorted by x.

    >>> pareto_front([(0, 1), (1, 0), (0.5, 0.5), (0.2, 0.2)])
    [0, 2, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:  # sweep from the right: a point is on the front if it is higher than all to its right
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front[::-1]


def _weights_text(weights: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in weights.items())


def _hover(sample: dict, x: str, y: str) -> str:
    snippet = html.escape(sample["text"][:80] + ("…" if len(sample["text"]) > 80 else ""))
    return (f"<b>#{sample['id']} {sample['method']}</b> ({sample['source']}, {sample.get('search', 'sample')})"
            f"<br>λ: {_weights_text(sample['weights'])}"
            f"<br>{x} {sample['scores'][x]:.3f} · {y} {sample['scores'][y]:.3f} · KL {sample['kl']:.2f}"
            f"<br>{snippet}")


def _trace(samples: list[dict], x: str, y: str, method: str, **kw) -> go.Scatter:
    return go.Scatter(
        x=[s["scores"][x] for s in samples], y=[s["scores"][y] for s in samples],
        hovertext=[_hover(s, x, y) for s in samples], hoverinfo="text",
        customdata=[s["id"] for s in samples], marker_color=METHOD_COLOURS.get(method, "#111827"),
        marker_symbol=_symbols(samples), **kw,
    )


def _figure_3d(samples: list[dict], x: str, y: str, z: str, methods: list[str]) -> go.Figure:
    """Three objectives at once: generated replies as large points, sweep replies as small ones."""
    fig = go.Figure()
    for method in methods:
        for source, size in (("sweep", 3), ("generate", 7)):
            pts = [s for s in samples if s["method"] == method and s["source"] == source]
            if pts:
                fig.add_trace(go.Scatter3d(
                    x=[s["scores"][x] for s in pts], y=[s["scores"][y] for s in pts], z=[s["scores"][z] for s in pts],
                    mode="markers", name=method if source == "generate" else f"{method} sweep",
                    marker=dict(size=size, color=METHOD_COLOURS.get(method, "#111827"), symbol=_symbols(pts)),
                    legendgroup=method,
                    hovertext=[_hover(s, x, y) + f"<br>{z} {s['scores'][z]:.3f}" for s in pts], hoverinfo="text",
                    customdata=[s["id"] for s in pts]))
    _search_legend(fig, samples, go.Scatter3d)
    fig.update_layout(scene=dict(xaxis_title=x, yaxis_title=y, zaxis_title=z), height=480,
                      margin=dict(l=0, r=0, t=20, b=0), legend=dict(orientation="h"), template="plotly_white")
    return fig


def pareto_figure(samples: list[dict], x: str, y: str, methods: list[str], z: str | None = None) -> go.Figure:
    """Every sample as a point coloured by method; sweep samples also drawn as each method's front.
    With ``z``, a 3-D scatter of the three objectives instead."""
    if z is not None:
        return _figure_3d(samples, x, y, z, methods)
    fig = go.Figure()
    for method in methods:
        generated = [s for s in samples if s["method"] == method and s["source"] == "generate"]
        swept = [s for s in samples if s["method"] == method and s["source"] == "sweep"]
        if swept:
            front = [swept[i] for i in pareto_front([(s["scores"][x], s["scores"][y]) for s in swept])]
            fig.add_trace(_trace(swept, x, y, method, mode="markers", name=f"{method} sweep", opacity=0.45,
                                 marker_size=7, legendgroup=method))
            fig.add_trace(_trace(front, x, y, method, mode="lines+markers", name=f"{method} front",
                                 marker_size=7, line_width=2, legendgroup=method))
        if generated:
            fig.add_trace(_trace(generated, x, y, method, mode="markers+text", name=method, marker_size=13,
                                 marker_line=dict(width=1.5, color="white"), legendgroup=method,
                                 text=[f"#{s['id']}" for s in generated], textposition="top center"))
    _search_legend(fig, samples)
    fig.update_layout(
        xaxis_title=f"{x} reward", yaxis_title=f"{y} reward", height=430, margin=dict(l=50, r=20, t=30, b=50),
        legend=dict(orientation="h", y=-0.18), template="plotly_white", hoverlabel=dict(align="left"),
    )
    if not samples:
        fig.add_annotation(text="Generate or sweep to add points", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(size=15, color="#6b7280"))
    return fig


def token_explanation(events: list[TokenEvent], objectives: list[str]) -> list[dict]:
    """Per MAVIS token: its tilt Σ_m β·λ_m·(Q_m − mean over the top-k), the objective that pushed it most
    (largest |contribution|), and log π − log π_ref."""
    out = []
    for e in events:
        contrib = e.contributions or dict.fromkeys(objectives, 0.0)
        top = max(contrib, key=lambda k: abs(contrib[k]))
        out.append({"text": e.text, "tilt": sum(contrib.values()), "top": top, "top_value": contrib[top],
                    "contributions": contrib, "delta": e.logprob - e.base_logprob})
    return out


def _token_span(token: dict, scale: float, colours: dict[str, str]) -> str:
    alpha = min(1.0, abs(token["tilt"]) / scale) * 0.75
    rgb = RAISED if token["tilt"] >= 0 else LOWERED
    parts = ", ".join(f"{k} {v:+.2f}" for k, v in token["contributions"].items())
    title = (f"tilt {token['tilt']:+.2f} nats, pushed most by {token['top']} ({token['top_value']:+.2f}); "
             f"{parts}; log p − log p_base {token['delta']:+.2f}")
    style = (f"background: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {alpha:.2f}); "
             f"border-bottom: 3px solid {colours[token['top']]}; white-space: pre-wrap; border-radius: 3px")
    return f'<span title="{html.escape(title)}" style="{style}">{html.escape(token["text"])}</span>'


def explanation_html(tokens: list[dict], objectives: list[str]) -> str:
    """The reply with each token shaded by its tilt (green raised, red lowered) and underlined in the colour of
    the objective that pushed it most; hover a token for the numbers."""
    colours = {k: OBJECTIVE_COLOURS[i % len(OBJECTIVE_COLOURS)] for i, k in enumerate(objectives)}
    legend = " ".join(f'<span style="border-bottom: 3px solid {c}; margin-right: 10px">{html.escape(k)}</span>'
                      for k, c in colours.items())
    if not tokens:
        body = ('<span style="color: #6b7280">Generate with MAVIS ticked to see which objective pushed each '
                'token.</span>')
    else:
        scale = max(TILT_SCALE_FLOOR, *(abs(t["tilt"]) for t in tokens))
        body = "".join(_token_span(t, scale, colours) for t in tokens)
    return (f'<div class="mavis-explain" style="line-height: 1.9; font-size: 15px">'
            f'<div style="font-size: 13px; color: #4b5563; margin-bottom: 6px">'
            f'<span style="background: rgba(22,163,74,0.5); padding: 0 4px">raised</span> '
            f'<span style="background: rgba(220,38,38,0.5); padding: 0 4px">lowered</span> vs the base · '
            f'underline = objective that pushed most: {legend}</div>{body}</div>')
