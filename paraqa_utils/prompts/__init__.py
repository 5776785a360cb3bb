"""Our prompt, rubric, template and keyword files (this folder), found by name, or a user's own file by path."""
from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parent


def path(name: str | Path) -> Path:
    """`name` as an existing file path, else the file of that name in this folder; a clear error when neither."""
    found = Path(name) if Path(name).is_file() else DIR / str(name)
    if not found.is_file():
        known = ", ".join(sorted(p.name for p in DIR.iterdir() if p.suffix in (".txt", ".yaml")))
        raise FileNotFoundError(f"prompt file '{name}' not found in {DIR} (have: {known})")
    return found
