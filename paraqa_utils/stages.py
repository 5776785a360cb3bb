"""The ordered list of pipeline stages and how their names map to notebooks."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "paraqa"

STAGES: tuple[str, ...] = (
    "00_corpus",
    "01_annotate",
    "02_synthesize",
    "03_explicit_merge",
    "04_finetune",
    "05_judge",
    "06_analysis",
)


def stage_name(ref: str) -> str:
    """Accept '02_synthesize', '02', '2' or 'synthesize' and return the canonical stage name."""
    ref = ref.strip()
    for s in STAGES:
        num, word = s.split("_", 1)
        if ref in (s, num, word) or (ref.isdigit() and int(ref) == int(num)):
            return s
    raise ValueError(f"unknown stage '{ref}'; stages are: {', '.join(STAGES)}")


def notebook_path(stage: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    return Path(notebooks_dir) / f"{stage}.ipynb"
