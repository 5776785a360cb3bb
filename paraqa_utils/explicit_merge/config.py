"""Stage 03's settings: every knob of 03_explicit_merge.ipynb, checked once, passed to the steps as one object."""
from __future__ import annotations

from dataclasses import dataclass

from paraqa_utils.explicit_merge import exports
from paraqa_utils.explicit_merge import labels as em
from paraqa_utils.params import check_types

LABEL_SOURCES = ("annotator", "ground_truth")  # where template emotion/gender QA take their labels from
TASKS = ("asr", "emotion", "gender", "pqa_star", "cpqa")  # what a training example can be


@dataclass
class MergeConfig:
    """Every knob of stage 03, each a parameter of 03_explicit_merge.ipynb of the same name and with no default
    here: its one default is the notebook's parameters cell (build it with `stage.config(MergeConfig, globals())`
    or `params.stage_config(MergeConfig, "03_explicit_merge", {...})`)."""
    seed: int
    conditions: list  # names from labels.CONDITIONS, in the order they are built
    explicit_mode: str  # categories | numbers | words
    explicit_gender: bool
    template_label_source: str  # annotator | ground_truth
    max_asr: int  # cap per task on training examples (-1: all)
    max_emotion: int
    max_gender: int
    max_pqa_star: int
    max_cpqa: int
    max_test_clips: int  # -1: every test-split clip
    human_qa_path: str  # empty: no cpqa_human test set
    human_qa_audio_root: str  # empty: audio paths as the set gives them
    export_formats: list  # from exports.FORMATS

    def __post_init__(self) -> None:
        problems = check_types(self)
        if problems:  # the value checks below assume the right types
            raise ValueError("merge settings:\n  - " + "\n  - ".join(problems))
        unknown = [c for c in self.conditions if c not in em.CONDITIONS]
        twice = sorted({c for c in self.conditions if self.conditions.count(c) > 1})
        formats = [f for f in self.export_formats if f not in exports.FORMATS]
        caps = {f"max_{t}": v for t, v in self.caps.items()}
        checks = [(not unknown, f"conditions: unknown condition(s) {unknown}; known: {', '.join(em.CONDITIONS)}"),
                  (bool(self.conditions), "conditions is empty: name at least one of " + ", ".join(em.CONDITIONS)),
                  (not twice, f"conditions: {twice} listed more than once"),
                  (self.explicit_mode in em.MODES,
                   f"explicit_mode={self.explicit_mode!r}: explicit mode unknown; choose one of {', '.join(em.MODES)}"),
                  (self.template_label_source in LABEL_SOURCES,
                   f"template_label_source={self.template_label_source!r}: one of {', '.join(LABEL_SOURCES)}"),
                  (not formats, f"export_formats: unknown export format(s) {formats}; choose from "
                                f"{', '.join(exports.FORMATS)}"),
                  *[(v >= -1, f"{k}={v}: a cap is >= 0, or -1 for all") for k, v in caps.items()],
                  (self.max_test_clips >= -1, f"max_test_clips={self.max_test_clips}: >= 0, or -1 for all")]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ValueError("merge settings:\n  - " + "\n  - ".join(problems))

    @property
    def caps(self) -> dict[str, int]:
        """Cap on training examples per task (-1: all), from the max_<task> parameters."""
        return {t: getattr(self, f"max_{t}") for t in TASKS}

    @property
    def audio_root(self) -> str | None:
        """Where the human-written set's relative audio paths live (None: as the set gives them)."""
        return self.human_qa_audio_root or None
