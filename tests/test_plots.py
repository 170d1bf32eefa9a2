"""Chart and per-token helpers: the Pareto front, one trace per method, duplicates once, labels that do not
overprint, every method's tokens with their numbers."""

from mavis_core.decoding import TokenEvent
from mavis_core.plots import (
    _label_box,
    _overlaps,
    dark_template,
    error_bars,
    explanation_html,
    label_layout,
    pareto_figure,
    same_point,
    token_explanation,
)

OBJ = ["helpful", "humor"]


def sample(i, method, source, h, u):
    return {"id": i, "source": source, "method": method, "prompt": "p", "text": f"<b>{i}</b>",
            "weights": {"helpful": 0.5, "humor": 0.5}, "beta": 1.0, "seed": 0, "scores": {"helpful": h, "humor": u},
            "kl": 0.1}


def test_pareto_front_keeps_non_dominated_points_sorted_by_x():
    from mavis_core.pareto import front

    assert front([(0, 1), (1, 0), (0.5, 0.5), (0.2, 0.2), (1, 0)]) == [0, 2, 1, 4]  # an exact tie stays
    assert front([]) == []


def test_figure_has_points_and_fronts_per_method():
    samples = [sample(1, "mavis", "generate", 0.1, 0.2)] + [
        sample(2 + i, "mod", "sweep", h, u) for i, (h, u) in enumerate([(0, 1), (1, 0), (0, 0)])]
    fig = pareto_figure(samples, "helpful", "humor", ["base", "mavis", "mod"])
    names = [t.name for t in fig.data]
    assert names == ["mavis", "mod sweep", "mod front"]
    front = fig.data[2]
    assert list(front.x) == [0, 1] and list(front.customdata) == [2, 3]
    assert "&lt;b&gt;1&lt;/b&gt;" in fig.data[0].hovertext[0]  # reply text is escaped in the hover
    assert fig.layout.xaxis.title.text == "helpful reward"
    assert pareto_figure([], "helpful", "humor", ["base"]).layout.annotations  # empty-chart hint


def test_explanation_shades_by_tilt_and_names_the_top_objective():
    events = [TokenEvent(1, "<hi>", -2.0, -1.0, {"helpful": 0.5, "humor": -2.0}),
              TokenEvent(2, " there", -1.0, -1.2, {"helpful": 0.1, "humor": 0.0})]
    tokens = token_explanation(events)
    assert tokens[0]["top"] == "humor" and tokens[0]["tilt"] == -1.5 and tokens[1]["top"] == "helpful"
    assert tokens[0]["delta"] == 1.0
    html = explanation_html({"mavis": tokens}, OBJ)
    assert "&lt;hi&gt;" in html and "<hi>" not in html
    assert "rgba(220, 38, 38, 0.75)" in html  # the most-lowered token gets full red
    assert "pushed most by humor" in html
    assert "with MAVIS ticked" in explanation_html({}, OBJ)


def test_every_column_gets_tokens_with_log_probs_and_escaped_alternatives():
    """A MOD token: no tilt, shaded by log π − log π_ref, its card shows both log-probs and the alternatives, the
    chosen one (same text and probability) in bold; every text escaped."""
    import math

    chosen = math.exp(-0.5)
    events = [TokenEvent(1, "<b>", -2.0, -0.5, None, alternatives=[("<b>", 0.2), ("<b>", chosen), ("x", 0.1)]),
              TokenEvent(2, "&", -1.0, -1.0, None, alternatives=[("<script>alert(1)</script>", 0.9)])]
    tokens = token_explanation(events)
    assert "tilt" not in tokens[0] and tokens[0]["delta"] == 1.5
    html = explanation_html({"base": [], "mod": tokens}, OBJ, {"mod": "MOD <i>"})
    assert '<div class="tv-cell" data-method="mod">' in html and "MOD &lt;i&gt;" in html
    assert "log π -0.50 (p 0.607) · log π_ref -2.00 (p 0.135)" in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>" not in html.replace("<b>&#x27;", "")
    rows = html.split('data-method="mod"')[1].split("</table>")[0].split("<tr ")
    assert ['class="chosen"' in r for r in rows[1:]] == [False, True, False]  # the second "<b>" was sampled
    assert "rgba(22, 163, 74, 0.75)" in html  # the token MOD made likelier than the base did: full green
    assert "(empty reply)" in html  # the base column, ticked but empty


def test_duplicates_are_drawn_once_with_their_count():
    a, b = sample(1, "mod", "generate", 0.3, 0.4), sample(2, "mod", "generate", 0.3 + 4e-9, 0.4)  # batch noise
    other = sample(3, "rsoup", "generate", 0.3, 0.4)  # one-hot MOD = RSoup: another method at the same spot
    fig = pareto_figure([a, b, other], "helpful", "humor", ["mod", "rsoup"])
    mod, rsoup = fig.data
    assert list(mod.x) == [0.3] and list(mod.customdata) == [1] and "×2 the same point: #1, #2" in mod.hovertext[0]
    assert list(mod.text) + list(rsoup.text) in (["#1 ×2 · #3", ""], ["", "#1 ×2 · #3"])  # one label for the spot
    assert [s["id"] for s in same_point(a, [a, b, other])] == [2, 3]


def test_labels_of_nearby_points_do_not_overprint():
    close = [sample(i, "mavis", "generate", 0.001 * i, 0.0005 * (i % 3)) for i in range(1, 13)]
    far = [sample(20, "mod", "generate", 1.0, 1.0)]
    layout = label_layout([[s] for s in close + far], "helpful", "humor", close + far)
    assert set(layout) == {s["id"] for s in close + far}

    def box(s):  # the label's pixels, in label_layout's own frame
        xs, ys = [p["scores"]["helpful"] for p in close + far], [p["scores"]["humor"] for p in close + far]
        px = 12 + (s["scores"]["helpful"] - min(xs)) / (max(xs) - min(xs)) * (520 - 24)
        py = 12 + (s["scores"]["humor"] - min(ys)) / (max(ys) - min(ys)) * (330 - 24)
        return _label_box(px, py, *layout[s["id"]])

    placed = [box(s) for s in close + far if layout[s["id"]][0]]
    assert len(placed) >= 3 and layout[20][0] == "#20"  # the lone point is always labelled
    assert not any(_overlaps(p, q) for i, p in enumerate(placed) for q in placed[i + 1:])


def test_3d_view_has_one_trace_per_method_and_source():
    samples = [sample(1, "mavis", "generate", 0.1, 0.2), sample(2, "mavis", "sweep", 0.3, 0.1)]
    for s in samples:
        s["scores"]["harmless"] = 0.5
    fig = pareto_figure(samples, "helpful", "humor", ["mavis", "mod"], z="harmless")
    assert [t.type for t in fig.data] == ["scatter3d", "scatter3d"]
    assert [t.name for t in fig.data] == ["mavis sweep", "mavis"] and list(fig.data[1].z) == [0.5]


def test_3d_view_leaves_room_for_axis_titles_and_dark_template_is_transparent():
    fig = pareto_figure([sample(1, "mavis", "generate", 0.1, 0.2) | {"scores": {"helpful": 0.1, "humor": 0.2,
                                                                                "harmless": 0.3}}],
                        "helpful", "humor", ["mavis"], z="harmless")
    assert fig.layout.scene.camera.eye.x > 1.25 and fig.layout.margin.t >= 20  # stands back from plotly's default
    dark = dark_template()
    assert dark["layout"]["paper_bgcolor"] == "rgba(0,0,0,0)" and dark["layout"]["font"]["color"]


def test_sweep_points_with_standard_errors_get_error_bars():
    means = [sample(1 + i, "mod", "sweep", h, u) | {"n": 4, "se": {"helpful": 0.1 * (i + 1), "humor": 0.05}}
             for i, (h, u) in enumerate([(0, 1), (1, 0)])]
    fig = pareto_figure(means + [sample(9, "mavis", "sweep", 0.5, 0.5)], "helpful", "humor", ["mavis", "mod"])
    mavis, mavis_front, mod, mod_front = fig.data
    assert list(mod.error_x.array) == [0.1, 0.2] and list(mod.error_y.array) == [0.05, 0.05] and mod.error_y.visible
    assert mavis.error_x.array is None and mod_front.error_x.array is None  # single replies; the front line: none
    assert "mean of 4 replies · ± standard error: helpful 0.100 · humor 0.050" in mod.hovertext[0]
    for s in means:
        s["scores"]["harmless"], s["se"]["harmless"] = 0.0, 0.3
    fig3d = pareto_figure(means, "helpful", "humor", ["mod"], z="harmless")
    assert list(fig3d.data[0].error_z.array) == [0.3, 0.3]
    assert error_bars([[sample(1, "mod", "sweep", 0, 0)]], "helpful", "humor") == {}


def test_the_per_token_view_can_say_it_is_waiting():
    html = explanation_html({}, OBJ, note="Generating <now>…")
    assert "Generating &lt;now&gt;…" in html and "tv-cell" not in html


def test_the_base_column_is_not_shaded_against_itself():
    """The base is π_ref: its log π − log π_ref is only the top-k truncation, so its tokens stay unshaded and its
    title says why; another method's same token is shaded."""
    events = [TokenEvent(1, "hi", -2.0, -0.5, None)]  # log π_ref −2, log π −0.5
    html = explanation_html({"base": token_explanation(events), "mod": token_explanation(events)}, OBJ,
                            {"base": "Base", "mod": "MOD"})
    base, mod = html.split('data-method="mod"')
    assert "Base (the reference: not shaded)" in base and "rgba(22, 163, 74, 0.00)" in base
    assert "rgba(22, 163, 74, 0.75)" in mod


def test_hovers_escape_markup_but_leave_quotes_as_they_are():
    """plotly's hover decodes &lt; and &amp; but shows &quot; as written."""
    s = sample(1, "mavis", "generate", 0.1, 0.2) | {"text": 'say "hi" & <b>'}
    hover = pareto_figure([s], "helpful", "humor", ["mavis"]).data[0].hovertext[0]
    assert 'say "hi" &amp; &lt;b&gt;' in hover and "&quot;" not in hover
