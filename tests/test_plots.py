"""Chart and explanation helpers: the Pareto front, one trace per method, tokens shaded by their tilt."""

from mavis_core.decoding import TokenEvent
from mavis_core.plots import explanation_html, pareto_figure, pareto_front, token_explanation

OBJ = ["helpful", "humor"]


def sample(i, method, source, h, u):
    return {"id": i, "source": source, "method": method, "prompt": "p", "text": f"<b>{i}</b>",
            "weights": {"helpful": 0.5, "humor": 0.5}, "beta": 1.0, "seed": 0, "scores": {"helpful": h, "humor": u},
            "kl": 0.1}


def test_pareto_front_keeps_non_dominated_points_sorted_by_x():
    assert pareto_front([(0, 1), (1, 0), (0.5, 0.5), (0.2, 0.2), (1, 0)]) == [0, 2, 1]
    assert pareto_front([]) == []


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
    tokens = token_explanation(events, OBJ)
    assert tokens[0]["top"] == "humor" and tokens[0]["tilt"] == -1.5 and tokens[1]["top"] == "helpful"
    assert tokens[0]["delta"] == 1.0
    html = explanation_html(tokens, OBJ)
    assert "&lt;hi&gt;" in html and "<hi>" not in html
    assert "rgba(220, 38, 38, 0.75)" in html  # the most-lowered token gets full red
    assert "pushed most by humor" in html
    assert "Generate with MAVIS" in explanation_html([], OBJ)


def test_3d_view_has_one_trace_per_method_and_source():
    samples = [sample(1, "mavis", "generate", 0.1, 0.2), sample(2, "mavis", "sweep", 0.3, 0.1)]
    for s in samples:
        s["scores"]["harmless"] = 0.5
    fig = pareto_figure(samples, "helpful", "humor", ["mavis", "mod"], z="harmless")
    assert [t.type for t in fig.data] == ["scatter3d", "scatter3d"]
    assert [t.name for t in fig.data] == ["mavis sweep", "mavis"] and list(fig.data[1].z) == [0.5]
