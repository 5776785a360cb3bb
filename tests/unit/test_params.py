from pathlib import Path

import pytest
import yaml

from paraqa_utils import params as P


def write(tmp_path: Path, name: str, data) -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_extends_merges_blocks_child_wins(tmp_path):
    write(tmp_path, "base.yaml", {"common": {"scale": 1}, "01_annotate": {"label": "x", "scale": 3}})
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "common": {"scale": 5}})
    prof = P.load_profile(child)
    assert prof["name"] == "child"
    assert prof["common"] == {"scale": 5}
    assert prof["01_annotate"] == {"label": "x", "scale": 3}


def test_circular_extends_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", {"extends": "b.yaml"})
    write(tmp_path, "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(P.ParamsError, match="circular"):
        P.load_profile(tmp_path / "a.yaml")


def test_missing_and_malformed_profiles(tmp_path):
    with pytest.raises(P.ParamsError, match="unknown profile 'nope'"):
        P.load_profile("nope")
    bad = write(tmp_path, "bad.yaml", "common: [unclosed\n")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.load_profile(bad)
    lst = write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(P.ParamsError, match="must be a mapping"):
        P.load_profile(lst)


def test_unknown_top_level_key_suggests(tmp_path):
    p = write(tmp_path, "t.yaml", {"01_anotate": {"x": 1}})
    with pytest.raises(P.ParamsError, match="did you mean '01_annotate'"):
        P.load_profile(p)


def test_validate_names_key_and_notebook(tiny_notebooks, tmp_path):
    nbp = P.all_notebook_parameters(tiny_notebooks)
    p = write(tmp_path, "t.yaml", {"02_synthesize": {"scael": 2}})
    with pytest.raises(P.ParamsError) as exc:
        P.resolve(p, notebooks_dir=tiny_notebooks)
    msg = str(exc.value)
    assert "'scael'" in msg and "02_synthesize.ipynb" in msg and "did you mean 'scale'" in msg
    # the same profile with the right key passes
    P.validate(P.load_profile(write(tmp_path, "ok.yaml", {"02_synthesize": {"scale": 2}})), nbp)


def test_validate_types_and_runner_keys(tiny_notebooks, tmp_path):
    nbp = P.all_notebook_parameters(tiny_notebooks)
    with pytest.raises(P.ParamsError, match="expects int"):
        P.validate(P.load_profile(write(tmp_path, "a.yaml", {"common": {"scale": "big"}})), nbp)
    with pytest.raises(P.ParamsError, match="expects int"):
        P.validate(P.load_profile(write(tmp_path, "b.yaml", {"00_corpus": {"scale": True}})), nbp)
    with pytest.raises(P.ParamsError, match="set by the runner"):
        P.validate(P.load_profile(write(tmp_path, "c.yaml", {"00_corpus": {"run_dir": "/x"}})), nbp)
    with pytest.raises(P.ParamsError, match="parameter of no notebook"):
        P.validate(P.load_profile(write(tmp_path, "d.yaml", {"common": {"nonsense": 1}})), nbp)


def test_overrides_parse_yaml_values_and_stage_aliases(tiny_profile, tiny_notebooks):
    prof = P.resolve(tiny_profile, ["common.scale=7", "2.label=zz", "annotate.scale=3"], tiny_notebooks)
    assert prof["common"]["scale"] == 7
    assert prof["02_synthesize"]["label"] == "zz"
    assert prof["01_annotate"] == {"label": "b", "scale": 3}
    with pytest.raises(P.ParamsError, match="block.key=value"):
        P.apply_overrides(prof, ["scale=3"])
    with pytest.raises(ValueError, match="unknown stage"):
        P.apply_overrides(prof, ["99_nope.scale=3"])


def test_flat_params_only_declared_common_keys(tiny_profile, tiny_notebooks):
    prof = P.resolve(tiny_profile, notebooks_dir=tiny_notebooks)
    flat = P.flat_params(prof, "01_annotate", {"run_dir": "", "scale": 1, "label": "a"}, "/runs/x")
    assert flat == {"scale": 2, "label": "b", "run_dir": "/runs/x"}
    flat = P.flat_params(prof, "01_annotate", {"run_dir": "", "label": "a"}, "/runs/x")
    assert "scale" not in flat


def test_parameters_cell_must_be_literal(tmp_path):
    from tests.conftest import make_notebook
    make_notebook(tmp_path / "x.ipynb", "00_corpus", 'run_dir = ""\nn = 3 + len("ab")', "pass")
    with pytest.raises(P.ParamsError, match="not a literal"):
        P.notebook_parameters(tmp_path / "x.ipynb")
    make_notebook(tmp_path / "y.ipynb", "00_corpus", 'run_dir = ""\nimport os', "pass")
    with pytest.raises(P.ParamsError, match="name = literal"):
        P.notebook_parameters(tmp_path / "y.ipynb")


def test_stage_config_takes_knobs_from_the_notebook_and_names_what_is_wrong(tmp_path):
    import dataclasses

    from tests.conftest import make_notebook

    make_notebook(tmp_path / "01_annotate.ipynb", "01_annotate", 'run_dir = ""\nscale = 2\nlabel = "a"', "x = 1")

    @dataclasses.dataclass
    class Knobs:
        scale: int
        label: str
        where: str = "set by the stage"

    cfg = P.stage_config(Knobs, "01_annotate", {"label": "b", "unrelated": 1}, notebooks_dir=tmp_path)
    assert (cfg.scale, cfg.label, cfg.where) == (2, "b", "set by the stage")  # the notebook's default fills scale
    assert P.stage_config(Knobs, "01", {}, notebooks_dir=tmp_path, where="w").where == "w"
    with pytest.raises(P.ParamsError, match="did you mean 'scale'"):
        P.stage_config(Knobs, "01_annotate", {"scal": 3}, strict=True, notebooks_dir=tmp_path)

    @dataclasses.dataclass
    class Orphan:
        scale: int
        n_steps: int

    with pytest.raises(P.ParamsError, match=r"\['n_steps'\] are not parameters of 01_annotate.ipynb"):
        P.stage_config(Orphan, "01_annotate", {}, notebooks_dir=tmp_path)
    assert P.knob_fields(Knobs) == ["scale", "label"]
    assert P.check_types(Knobs(scale=True, label="x")) == ["scale=True: expected int"]
