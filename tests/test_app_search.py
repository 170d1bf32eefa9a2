"""The app's search selector through gradio_client: search, N and B after the weights, shown per column and
on the chart; old-style calls without them still sample."""

import pytest
from apputil import CHART, METHODS, SAMPLES, TOKENS, N

from app import controls

AXES = ("helpful", "humor", controls.NO_Z)


def generate_args(*search, methods=("mavis", "mod")):
    return ("hello there", 2.0, 8, 1.0, 6, 3, list(methods), *AXES, 0.5, 0.2, 0.3, *search)


@pytest.mark.slow
@pytest.mark.parametrize(("search", "label"), [(("best_of_n", 3, 4), "best-of-3"), (("beam", 4, 2), "beam-2"),
                                               ((), "sample")])
def test_generate_with_a_search_shows_it_per_column_and_on_the_chart(client, search, label):
    out = client.predict(*generate_args(*search), api_name="/generate")
    texts, stats = out[:N], out[N:TOKENS]
    for m, stat in zip(METHODS, stats, strict=True):
        assert (f"*{label}*" in stat) == (m in ("mavis", "mod")), (m, stat)
    assert texts[1] and texts[2]
    symbol = {"sample": "circle", "best-of-3": "diamond", "beam-2": "square"}[label]
    details = client.predict(out[SAMPLES]["value"], api_name="/show_sample")
    assert f"(generate, {label})" in details
    assert symbol in str(out[CHART])


@pytest.mark.slow
def test_bad_search_settings_get_a_plain_error(client):
    with pytest.raises(Exception, match="'greedy'.*not in the list of choices") as err:  # gradio checks first
        client.predict(*generate_args("greedy", 4, 4), api_name="/generate")
    assert "Traceback" not in str(err.value)
    with pytest.raises(Exception, match="greater than maximum"):
        client.predict(*generate_args("beam", 4, 20), api_name="/generate")


@pytest.mark.slow
def test_sweep_uses_the_chosen_search(client):
    client.predict(api_name="/clear")
    plot, sample, status = client.predict("hello", 1.0, 8, 1.0, 3, 0, ["base", "mavis"], controls.SWEEP_MODES[0], *AXES,
                                          "beam", 4, 2, api_name="/sweep")
    assert "Swept 12 replies (11 λ points), each by beam-2 in" in status
    assert all("beam-2" in label for label, _ in sample["choices"])
    assert "square" in str(plot)
    _, _, status = client.predict("hello", 1.0, 8, 1.0, 3, 0, ["base"], controls.SWEEP_MODES[0], *AXES,
                                  api_name="/sweep")
    assert "each by" not in status  # callers that leave the search out still sample
