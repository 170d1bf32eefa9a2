"""The app on a stack with exact-preference policies ([references]): sweeps add MORLHF where it was trained."""

import json

import pytest
from apputil import app_engine, launch

from app import controls

AXES = ("helpful", "humor", controls.NO_Z)


@pytest.fixture(scope="module")
def refs_client(tiny_dir, tmp_path_factory):
    from gradio_client import Client

    engine = app_engine(tiny_dir, "stack-refs.toml")
    demo, url = launch(engine, tmp_path_factory.mktemp("study") / "study.db")
    yield Client(url, verbose=False, analytics_enabled=False)
    demo.close()


@pytest.mark.slow
def test_a_pair_sweep_draws_the_morlhf_front_at_its_trained_points(refs_client):
    plot, sample, status = refs_client.predict("hello", 1.0, 8, 1.0, 4, 0, ["mavis"], controls.SWEEP_MODES[0], *AXES,
                                               api_name="/sweep")
    # MAVIS at the 11 λ points; MORLHF at helpful alone, humor alone and the reference at helpful 0.2 / humor 0.8
    # (the one at 0.75 / 0.25 is not on the grid of tenths)
    assert status.startswith("Swept 14 replies (11 λ points)"), status
    assert "MORLHF: the policy fine-tuned for exactly that preference, at the 3 λ points it was trained for" in status
    labels = [label for label, _ in sample["choices"]]
    morlhf = sorted(label.split(" λ ")[1] for label in labels if " morlhf " in label)
    assert morlhf == ["0.00, 0.00, 1.00", "0.20, 0.00, 0.80", "1.00, 0.00, 0.00"]
    names = {t.get("name") for t in json.loads(plot["plot"])["data"]}
    assert {"morlhf sweep", "morlhf front", "mavis sweep"} <= names
    # Generate has no MORLHF column: it has a policy for three λ points only
    with pytest.raises(Exception, match="is not in the list of choices"):
        refs_client.predict("hello", 1.0, 8, 1.0, 4, 0, ["morlhf"], *AXES, 0.5, 0.2, 0.3, api_name="/generate")
