"""paraqa_utils.finetune.config: 04_finetune.ipynb's parameters cell is the one default of every knob."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from paraqa_utils import params
from paraqa_utils.finetune import condition as finetune_cli
from paraqa_utils.finetune.config import (STAGE, ConfigError, FinetuneConfig, load_config, make_config,
                                          save_config)
from paraqa_utils.stages import notebook_path

PER_CONDITION = {"condition", "train_file", "test_files", "explicit", "base_path", "run_dir", "out_dir", "progress"}


@pytest.fixture(scope="module")
def nb_defaults() -> dict:
    return params.notebook_parameters(notebook_path(STAGE))


def knobs() -> list[str]:
    return params.knob_fields(FinetuneConfig)


# --- knobs and the notebook --------------------------------------------------------------------------------------
def test_knobs_have_no_dataclass_default_only_per_condition_fields_do():
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    assert set(knobs()) == set(fields) - PER_CONDITION
    assert len(knobs()) >= 30
    for name in PER_CONDITION:
        f = fields[name]
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, name
    with pytest.raises(TypeError):
        FinetuneConfig()  # type: ignore[call-arg]  # no knob may be filled silently by the dataclass


def test_every_knob_is_a_parameter_of_the_notebook_with_the_same_type(nb_defaults):
    missing = [k for k in knobs() if k not in nb_defaults]
    assert not missing, f"knobs not declared in {STAGE}.ipynb's parameters cell: {missing}"
    hints = {f.name: f.type for f in dataclasses.fields(FinetuneConfig)}
    for k in knobs():
        want = {"str": str, "int": int, "float": float, "bool": bool}[hints[k]]
        value = nb_defaults[k]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if want is float else (
            type(value) is want)
        assert ok, f"{STAGE}.ipynb: {k} = {value!r} is not a {want.__name__}"


def test_make_config_without_arguments_is_exactly_the_notebook(nb_defaults):
    cfg = make_config()
    assert {k: getattr(cfg, k) for k in knobs()} == {k: nb_defaults[k] for k in knobs()}
    # the per-condition fields keep the dataclass's own defaults
    assert (cfg.condition, cfg.train_file, cfg.test_files, cfg.explicit, cfg.out_dir, cfg.progress) == (
        "baseline", "", {}, False, ".", True)


def test_the_default_really_comes_from_the_notebook(monkeypatch, nb_defaults):
    """Change the notebook's cell (here: what the parser returns) and the config follows, for any knob."""
    real = params.notebook_parameters
    changed = {"n_steps": nb_defaults["n_steps"] + 7, "max_new_tokens": nb_defaults["max_new_tokens"] + 1,
               "max_test_items": nb_defaults["max_test_items"] + 2, "lora_target_modules": "q_proj"}

    def fake(path):
        out = real(path)
        return {**out, **changed} if path.stem == STAGE else out
    monkeypatch.setattr(params, "notebook_parameters", fake)
    cfg = make_config()
    assert {k: getattr(cfg, k) for k in changed} == changed
    assert make_config(n_steps=3).n_steps == 3  # an explicit value still wins


def test_a_knob_missing_from_the_notebook_is_refused_by_name(monkeypatch):
    real = params.notebook_parameters

    def without_lr(path):
        out = real(path)
        out.pop("lr", None)
        return out
    monkeypatch.setattr(params, "notebook_parameters", without_lr)
    with pytest.raises(ConfigError, match=r"\['lr'\] are not parameters of 04_finetune.ipynb"):
        make_config()


# --- YAML round trips --------------------------------------------------------------------------------------------
def custom_config() -> FinetuneConfig:
    return make_config(train_mode="adapter+lora", n_steps=5, lr=1e-5, lora_dropout=0.0, batch_size=2,
                       group_by_length=False, fsdp=True, dtype="bfloat16", lora_target_modules="q_proj, v_proj",
                       condition="explicit", train_file="train_explicit.jsonl", explicit=True,
                       test_files={"cpqa": "test_cpqa.jsonl", "emotion": "test_emotion.jsonl"},
                       run_dir="/runs/r1", out_dir="/runs/r1/04_finetune", progress=False)


def test_save_then_load_gives_identical_values(tmp_path):
    cfg = custom_config()
    path = tmp_path / "deep" / "explicit" / "config.yaml"
    save_config(cfg, path)
    assert path.exists()
    back = load_config(path)
    assert back == cfg and back.to_dict() == cfg.to_dict()
    assert type(back.lr) is float and back.lr == 1e-5 and back.test_files == cfg.test_files
    # the file lists every field in declaration order (readable, diffable)
    assert list(yaml.safe_load(path.read_text())) == [f.name for f in dataclasses.fields(FinetuneConfig)]
    assert FinetuneConfig(**back.to_dict()) == cfg  # to_dict holds every init field


def test_the_cli_parses_the_saved_config_and_overrides(tmp_path, monkeypatch, capsys):
    cfg = custom_config()
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    seen = []
    monkeypatch.setattr(finetune_cli, "run_condition", lambda c: seen.append(c) or {"ok": 1, "config": {}})
    assert finetune_cli.main(["--config", str(path)]) == 0
    assert seen == [cfg]
    assert finetune_cli.main(["--config", str(path), "--set", "n_steps=9", "--set", "resume=false",
                              "--set", "lr=0.5"]) == 0
    assert seen[-1] == dataclasses.replace(cfg, n_steps=9, resume=False, lr=0.5)
    assert "{'ok': 1}" in capsys.readouterr().out


def test_the_cli_returns_2_and_names_a_bad_key(tmp_path, monkeypatch, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("condition: baseline\nmax_new_token: 10\n")
    monkeypatch.setattr(finetune_cli, "run_condition", lambda c: pytest.fail("must not train on a bad config"))
    assert finetune_cli.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "max_new_token" in err and "did you mean 'max_new_tokens'" in err
    assert finetune_cli.main(["--config", str(tmp_path / "none.yaml"), "--set", "n_step=2"]) == 2
    assert "none.yaml" in capsys.readouterr().err
    path.write_text("condition: baseline\n")
    assert finetune_cli.main(["--config", str(path), "--set", "n_step=2"]) == 2
    assert "did you mean 'n_steps'" in capsys.readouterr().err
    assert finetune_cli.main(["--config", str(path), "--set", "batch_size=four"]) == 2
    assert "batch_size='four': expected int" in capsys.readouterr().err


def test_a_yaml_with_only_per_condition_fields_takes_every_knob_from_the_notebook(tmp_path, nb_defaults):
    """The bug being fixed: the notebook said n_steps=12, max_new_tokens=32, max_test_items=6 while the
    dataclass said 0/48/0, so a hand-written config and the notebook trained and predicted differently."""
    path = tmp_path / "config.yaml"
    path.write_text("condition: implicit\ntrain_file: train_implicit.jsonl\nrun_dir: /runs/r2\n"
                    "out_dir: /runs/r2/04_finetune\n")
    cfg = load_config(path)
    assert (cfg.condition, cfg.train_file, cfg.run_dir, cfg.out_dir) == (
        "implicit", "train_implicit.jsonl", "/runs/r2", "/runs/r2/04_finetune")
    for k in knobs():
        assert getattr(cfg, k) == nb_defaults[k], k
    for k in ("n_steps", "max_new_tokens", "max_test_items"):
        assert getattr(cfg, k) == nb_defaults[k]
    assert cfg == make_config(condition="implicit", train_file="train_implicit.jsonl", run_dir="/runs/r2",
                              out_dir="/runs/r2/04_finetune")


def test_an_empty_yaml_is_the_notebook_defaults(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("")
    assert load_config(path) == make_config()
    path.write_text("# only a comment\n")
    assert load_config(path) == make_config()


# --- errors ------------------------------------------------------------------------------------------------------
def test_unknown_key_names_it_with_the_closest_field():
    with pytest.raises(ConfigError, match=r"'lora_rank' \(did you mean 'lora_r'\?\)"):
        FinetuneConfig.from_dict({"lora_rank": 4})
    with pytest.raises(ConfigError, match=r"'warmup' \(did you mean 'warmup_ratio'\?\)"):
        make_config(warmup=0.2)
    with pytest.raises(ConfigError, match="'zzzzzz'") as info:
        make_config(zzzzzz=1)
    assert "did you mean" not in str(info.value)


def test_unknown_key_in_a_file_and_in_an_override(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("n_epoch: 2.0\n")
    with pytest.raises(ConfigError, match=r"'n_epoch' \(did you mean 'n_epochs'\?\)"):
        load_config(path)
    path.write_text("{}\n")
    with pytest.raises(ConfigError, match=r"'stack' \(did you mean 'stack_k'\?\)"):
        load_config(path, ["stack=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["stack_k"])
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="holds a list, not a mapping"):
        load_config(path)


@pytest.mark.parametrize("key, value, shown", [
    ("batch_size", "4", "batch_size='4': expected int"),
    ("n_steps", True, "n_steps=True: expected int"),  # a bool is no int
    ("lr", "fast", "lr='fast': expected float"),
    ("fsdp", "yes", "fsdp='yes': expected bool"),
    ("fsdp", 1, "fsdp=1: expected bool"),
    ("whisper_model", 3, "whisper_model=3: expected str"),
    ("test_files", ["a.jsonl"], "test_files=['a.jsonl']: expected dict"),
])
def test_wrong_type_names_the_field(key, value, shown):
    with pytest.raises(ConfigError) as info:
        make_config(**{key: value})
    assert shown in str(info.value)


def test_an_int_passes_for_a_float_knob(tmp_path):
    assert make_config(lr=1).lr == 1 and make_config(n_epochs=2).n_epochs == 2
    path = tmp_path / "config.yaml"
    path.write_text("weight_decay: 0\n")
    assert load_config(path).weight_decay == 0


@pytest.mark.parametrize("values, shown", [
    ({"train_mode": "full"}, "train_mode='full'"),
    ({"schedule": "sawtooth"}, "schedule='sawtooth'"),
    ({"dtype": "int8"}, "dtype='int8'"),
    ({"stack_k": 0}, "stack_k must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"warmup_ratio": 1.0}, "warmup_ratio must be in [0, 1)"),
    ({"n_steps": 0, "n_epochs": 0.0}, "set n_steps > 0 or n_epochs > 0"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ({"max_seq_len": 8}, "max_seq_len must be >= 16"),
    ({"train_mode": "adapter+lora", "lora_target_modules": " , "}, "adapter+lora needs lora_target_modules"),
])
def test_bad_values_are_refused_with_a_message(values, shown):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert shown in str(info.value)


def test_all_problems_are_listed_at_once():
    with pytest.raises(ConfigError) as info:
        make_config(stack_k=0, batch_size=0, dtype="int8")
    msg = str(info.value)
    assert all(s in msg for s in ("stack_k must be >= 1", "batch_size must be >= 1", "dtype='int8'"))


def test_target_modules_are_split_and_trimmed():
    assert make_config(lora_target_modules=" q_proj, v_proj ,,").target_modules() == ["q_proj", "v_proj"]
    assert make_config(lora_target_modules="").target_modules() == []  # fine for adapter-only training
