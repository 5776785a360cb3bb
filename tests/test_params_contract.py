"""Every shipped profile resolves against every notebook's parameters cell (unknown keys and types included)."""
import pytest

from paraqa_utils import params as P

PROFILES = sorted(P.PARAMS_DIR.glob("*.yaml")) + sorted((P.PARAMS_DIR / "exp").glob("*.yaml"))


def test_the_expected_profiles_exist():
    names = {p.stem for p in PROFILES}
    assert {"smoke", "demo", "full"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_matches_notebooks(path):
    prof = P.resolve(path)
    nb_params = P.all_notebook_parameters()
    for stage, declared in nb_params.items():
        flat = P.flat_params(prof, stage, declared, "RUN")
        assert set(flat) <= set(declared)
        for key, value in flat.items():
            assert P._type_ok(declared[key], value), (stage, key, value)


def test_profiles_hold_no_secrets():
    for path in PROFILES:
        text = path.read_text().lower()
        assert "sk-" not in text and "api_key:" not in text, path.name
