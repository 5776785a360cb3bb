"""Stages 00-03 and 05: each config is built from its notebook's parameters (one default per knob) and checked.

(04's FinetuneConfig has its own tests in test_finetune_config.py.)"""
import dataclasses

import pytest

from paraqa_utils import annotate, corpus, explicit_merge, judge, params, synthesize
from paraqa_utils.stages import notebook_path

CONFIGS = [(corpus.CorpusConfig, "00_corpus"), (annotate.AnnotateConfig, "01_annotate"),
           (synthesize.SynthesizeConfig, "02_synthesize"), (synthesize.FilterConfig, "02_synthesize"),
           (synthesize.LLMSettings, "02_synthesize"), (explicit_merge.MergeConfig, "03_explicit_merge"),
           (judge.JudgeSettings, "05_judge")]


@pytest.mark.parametrize("cls,stage", CONFIGS, ids=lambda x: getattr(x, "__name__", x))
def test_config_from_the_notebook_defaults_declares_every_knob(cls, stage):
    defaults = params.notebook_parameters(notebook_path(stage))
    knobs = params.knob_fields(cls)
    assert knobs and set(knobs) <= set(defaults), f"not parameters of {stage}: {set(knobs) - set(defaults)}"
    init = [f for f in dataclasses.fields(cls) if f.init]
    assert [f.name for f in init] == knobs, "a knob with a default in the dataclass (its default is the notebook's)"
    cfg = params.stage_config(cls, stage, {})
    assert {k: getattr(cfg, k) for k in knobs} == {k: defaults[k] for k in knobs}
    with pytest.raises(TypeError):
        cls()  # no defaults: a config is always built from the notebook (or a complete set of values)


@pytest.mark.parametrize("cls,stage,bad", [
    (corpus.CorpusConfig, "00_corpus", {"n_clips": "many"}),
    (annotate.AnnotateConfig, "01_annotate", {"window_s": "2"}),
    (synthesize.SynthesizeConfig, "02_synthesize", {"kinds": "cpqa"}),
    (synthesize.FilterConfig, "02_synthesize", {"require_question_mark": 1}),
    (synthesize.LLMSettings, "02_synthesize", {"llm_concurrency": 2.5}),
    (explicit_merge.MergeConfig, "03_explicit_merge", {"max_cpqa": "all"}),
    (explicit_merge.MergeConfig, "03_explicit_merge", {"conditions": "baseline"}),
    (judge.JudgeSettings, "05_judge", {"n_judge_runs": 1.5}),
    (judge.JudgeSettings, "05_judge", {"rubrics_on_label_sets": "yes"})], ids=lambda x: getattr(x, "__name__", None))
def test_values_of_the_wrong_type_are_clear_errors(cls, stage, bad):
    key = next(iter(bad))
    with pytest.raises((ValueError, corpus.CorpusError), match=key):
        params.stage_config(cls, stage, bad)


def test_synthesize_config_derives_its_per_kind_views_from_the_parameters():
    cfg = params.stage_config(synthesize.SynthesizeConfig, "02_synthesize",
                              {"n_qa_cpqa_per_clip": 3, "pqa_star_prompt": "mine.txt"})
    assert cfg.n_qa == {"cpqa": 3, "pqa_star": 2}
    assert cfg.prompt_files == {"cpqa": "cpqa_v1.txt", "pqa_star": "mine.txt"}
    assert cfg.type_weights["cpqa"] == {"C": 0.16, "CE": 0.65, "CG": 0.19}
    with pytest.raises(ValueError, match="unknown kind 'qa'"):
        params.stage_config(synthesize.SynthesizeConfig, "02_synthesize", {"kinds": ["cpqa", "qa"]})


def test_a_real_corpus_skips_the_synthetic_checks():
    cfg = params.stage_config(corpus.CorpusConfig, "00_corpus", {"source": "manifest", "n_clips": 0})
    assert not cfg.synthetic and cfg.clips_to_measure([{}] * 3) == [{}] * 3
    with pytest.raises(corpus.CorpusError, match="need at least 3"):
        params.stage_config(corpus.CorpusConfig, "00_corpus", {"n_clips": 0})
    few = params.stage_config(corpus.CorpusConfig, "00_corpus", {"n_measure_clips": 2})
    assert few.clips_to_measure([1, 2, 3]) == [1, 2]


def test_merge_config_derives_the_caps_and_checks_its_values():
    cfg = params.stage_config(explicit_merge.MergeConfig, "03_explicit_merge", {"max_cpqa": 5, "max_asr": 0})
    assert cfg.caps == {"asr": 0, "emotion": -1, "gender": -1, "pqa_star": -1, "cpqa": 5}
    assert cfg.audio_root is None
    for bad, msg in [({"conditions": ["baseline", "s99"]}, r"unknown condition\(s\) \['s99'\]; known: baseline"),
                     ({"conditions": []}, "conditions is empty"),
                     ({"conditions": ["baseline", "baseline"]}, r"\['baseline'\] listed more than once"),
                     ({"explicit_mode": "emoji"}, "explicit_mode='emoji'.*categories, numbers, words"),
                     ({"template_label_source": "truth"}, "template_label_source='truth': one of annotator"),
                     ({"export_formats": ["chat", "csv"]}, r"unknown export format\(s\) \['csv'\]"),
                     ({"max_gender": -2}, "max_gender=-2: a cap is >= 0, or -1 for all"),
                     ({"max_test_clips": -5}, "max_test_clips=-5")]:
        with pytest.raises(ValueError, match=msg):
            params.stage_config(explicit_merge.MergeConfig, "03_explicit_merge", bad)


def test_judge_settings_derive_the_judges_and_check_their_values():
    extra = [{"name": "b", "base_url": "http://b/v1", "model": "m", "api_key_env": "B_KEY"}]
    cfg = params.stage_config(judge.JudgeSettings, "05_judge", {"judge_name": "a", "extra_judges": extra})
    assert cfg.specs == [{"name": "a", "base_url": "", "model": "", "api_key_env": "OPENAI_API_KEY"}, *extra]
    for bad, msg in [({"rubrics": ["binary_v1"]}, "rubrics=.*0-5 rubrics of rubric_v1, rubric_para_v1"),
                     ({"rubrics": []}, "rubrics=\\[\\]"),
                     ({"binary_rubric": "rubric_v1"}, "binary_rubric='rubric_v1': one of binary_v1"),
                     ({"n_judge_runs": 0}, "n_judge_runs=0: must be >= 1"),
                     ({"min_label_similarity": 1.5}, "min_label_similarity=1.5"),
                     ({"judge_name": ""}, "judge_name is empty"),
                     ({"extra_judges": ["gpt4o"]}, r"extra_judges\[0\]='gpt4o': a mapping"),
                     ({"extra_judges": [{"name": "b", "model": "m"}]}, r"extra_judges\[0\]: needs base_url"),
                     ({"extra_judges": [{**extra[0], "modle": "m"}]}, "unknown key 'modle' \\(did you mean 'model'"),
                     ({"extra_judges": [{**extra[0], "name": "embedded"}]}, "judge name 'embedded' is used twice")]:
        with pytest.raises(ValueError, match=msg):
            params.stage_config(judge.JudgeSettings, "05_judge", bad)
