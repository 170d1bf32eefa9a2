"""The app through gradio_client, launched in-process on the tiny stack: every endpoint, bad inputs, the CLI."""

import csv

import pytest
from apputil import TOKEN

import app

METHODS = ["base", "mavis", "mod", "rsoup"]
AXES = ("helpful", "humor", app.NO_Z)


def generate_args(prompt="hello there", methods=METHODS, weights=(0.5, 0.2, 0.3), **kw):
    s = {"beta": 2.0, "top_k": 8, "temperature": 1.0, "max_new_tokens": 12, "seed": 3, **kw}
    return (prompt, s["beta"], s["top_k"], s["temperature"], s["max_new_tokens"], s["seed"], methods, *AXES, *weights)


@pytest.mark.slow
def test_every_endpoint_is_named(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/sweep", "/normalise", "/redraw", "/clear", "/show_sample", "/study_new", "/study_submit",
            "/study_results", "/study_export"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("methods", [[m] for m in METHODS] + [METHODS])
def test_generate_streams_each_method(client, methods):
    job = client.submit(*generate_args(methods=methods), api_name="/generate")
    out = job.result()
    texts, stats = out[:4], out[4:8]
    for m, text, stat in zip(METHODS, texts, stats, strict=True):
        assert (text != "") == (m in methods), m
        assert ("KL" in stat) == (m in methods) and ("not selected" in stat) == (m not in methods)
    assert len(job.outputs()) >= 2  # a first round of tokens went out before the scored replies
    assert "mavis-explain" in out[8] and out[10]["choices"]


@pytest.mark.slow
def test_same_seed_same_text_and_sample_details(client):
    first = client.predict(*generate_args(), api_name="/generate")
    again = client.predict(*generate_args(), api_name="/generate")
    assert first[:4] == again[:4]
    newest = again[10]["value"]  # the dropdown points at the newest MAVIS sample
    details = client.predict(newest, api_name="/show_sample")
    assert f"#{newest} mavis" in details and "KL" in details and "helpful 0.50" in details


@pytest.mark.slow
def test_sweep_fills_the_chart(client):
    client.predict(api_name="/clear")
    plot, sample, status = client.predict("hello", 1.0, 8, 1.0, 4, 0, ["base", "mavis"], app.SWEEP_MODES[0],
                                          *AXES, api_name="/sweep")
    assert status.startswith("Swept 12 replies (11 λ points)") and len(sample["choices"]) == 12
    plot, sample, status = client.predict("hello", 1.0, 8, 1.0, 4, 0, ["mod"], app.SWEEP_MODES[1], *AXES,
                                          api_name="/sweep")
    assert "(15 λ points)" in status and len(sample["choices"]) == 12 + 15
    assert client.predict("humor", "harmless", app.NO_Z, api_name="/redraw") is not None
    assert client.predict("humor", "harmless", "helpful", api_name="/redraw") is not None  # the 3-D view
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict("humor", "harmless", "fun", api_name="/redraw")


@pytest.mark.slow
def test_study_flow_and_admin_gate(client, tmp_path):
    shown = client.predict("p1", "", api_name="/study_new")
    header, texts = shown[0], shown[1:5]
    assert "**Prompt:**" in header and "**Weights:**" in header and all(isinstance(t, str) for t in texts)
    assert not any(m in header for m in ("mavis", "rsoup"))  # blinded
    ratings = [3] * 12
    with pytest.raises(Exception, match="no harmless rating"):
        client.predict("B", *ratings[:1], None, *ratings[2:], api_name="/study_submit")
    status = client.predict("B", *ratings, api_name="/study_submit")  # the trial id lives in gr.State
    assert "saved" in status
    with pytest.raises(Exception, match="New trial"):  # the trial was consumed: no double submission
        client.predict("B", *ratings, api_name="/study_submit")
    for endpoint in ("/study_results", "/study_export"):
        with pytest.raises(Exception, match="Wrong admin token"):
            client.predict("guess", api_name=endpoint)
    table = client.predict(TOKEN, api_name="/study_results")
    assert sorted(row[0] for row in table["data"]) == sorted(METHODS)
    path = client.predict(TOKEN, api_name="/study_export")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["method"] for r in rows} == set(METHODS) and rows[0]["participant"] == "p1"


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": " \n\t "}, "prompt is empty"),
    ({"prompt": "hi\x07there"}, "control characters"),
    ({"weights": (0, 0, 0)}, "weights are zero"),
    ({"weights": (5, 0, 0)}, "greater than maximum"),
    ({"top_k": 0}, "less than minimum"),
    ({"temperature": 50}, "greater than maximum"),
    ({"max_new_tokens": 1000}, "greater than maximum"),
    ({"seed": -1}, "less than minimum"),
    ({"methods": []}, "No method selected"),
    ({"methods": ["beam"]}, "beam"),
    ({"max_new_tokens": 2.5}, "whole number"),
])
def test_bad_inputs_get_plain_errors_and_app_keeps_serving(client, change, message):
    with pytest.raises(Exception, match=message) as err:
        client.predict(*generate_args(**change), api_name="/generate")
    assert "Traceback" not in str(err.value)
    assert client.predict(*generate_args(methods=["base"]), api_name="/generate")[0]


@pytest.mark.slow
def test_overlong_prompt_is_cut_not_refused(client):
    out = client.predict(*generate_args(prompt="tell me a joke " * 2000, methods=["mavis"]), api_name="/generate")
    assert out[1] and "KL" in out[5]


def test_cli_missing_or_broken_stack_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="cannot load stack .*not found"):
        app.main(["--stack", str(tmp_path / "nope.toml")])
    bad = tmp_path / "bad.toml"
    bad.write_text("[base\n")
    with pytest.raises(SystemExit, match="not valid TOML"):
        app.main(["--stack", str(bad)])


def test_cli_default_stack_missing_says_how_to_pick(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAVIS_STACK", raising=False)
    with pytest.raises(SystemExit, match="--stack PATH or MAVIS_STACK"):
        app.main([])


@pytest.mark.parametrize("values, policies, methods", [(True, False, ["base", "mavis"]),
                                                       (False, True, ["base", "mod", "rsoup"])])
def test_layout_follows_the_stack(tiny_dir, tmp_path, values, policies, methods):
    import torch

    from mavis_core import load_stack
    from mavis_core.engine import Engine
    from mavis_core.testing import OBJECTIVES, write_stack

    path = write_stack(tiny_dir, f"stack-{values}-{policies}.toml",
                       {n: f"values/{n}" for n in OBJECTIVES} if values else None, policies=policies)
    engine = Engine(load_stack(path, device=torch.device("cpu")))
    assert engine.methods == methods
    demo = app.build_demo(engine, tmp_path / "study.db")
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    assert {f"reply-{m}" for m in methods} <= ids
    assert not {f"reply-{m}" for m in set(app.METHOD_TITLES) - set(methods)} & ids


@pytest.mark.slow
def test_concurrent_users_with_different_weights(client):
    from gradio_client import Client

    other = Client(client.src, verbose=False, analytics_enabled=False)
    jobs = [c.submit(*generate_args(weights=w, seed=i), api_name="/generate")
            for i, (c, w) in enumerate([(client, (1, 0, 0)), (other, (0, 1, 0)), (other, (0.2, 0.3, 0.5))])]
    for job in jobs:  # all served by the one shared engine, none failing
        out = job.result(timeout=300)
        assert all(out[:4]) and all("KL" in s for s in out[4:8])
