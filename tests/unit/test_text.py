"""Shared text helpers: the label vocabulary, label-word mentions, the word lists, the embedder."""
import numpy as np
import pytest

from paraqa_utils import text


def test_one_vocabulary_used_everywhere():
    from paraqa_utils.annotate import recognisers
    from paraqa_utils.corpus import loaders, tts

    assert len(text.EMOTIONS) == 9 and set(tts.EMOTIONS) <= set(text.EMOTIONS)
    assert recognisers.EMOTIONS is text.EMOTIONS and loaders.EMOTIONS is text.EMOTIONS
    assert all(v in (*text.EMOTIONS, *text.GENDERS, *text.DIMENSIONS) for v in text.LABEL_ALIASES.values())


def test_mentions_skip_negated_and_spoken_words():
    lex = text.label_lexicon("label_words_v1.txt")
    assert "angry" in lex["emotion"] and lex["gender"]
    found = [w for w, _ in text.mentions("She sounds angry, not happy.", lex["emotion"], set())]
    assert "angry" in found and "happy" not in found
    assert text.mentions("He said he was angry.", lex["emotion"], {"angry"}) == []
    assert text.tokens("Don't stop-now, OK?") == ["don't", "stop-now", "ok"]


def test_word_lines_skip_comments_and_blank_lines(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("# a comment\n\nemotion.happy: glad\n  # indented comment\n")
    assert text.word_lines(str(f)) == ["emotion.happy: glad"]
    with pytest.raises(FileNotFoundError, match="not found"):
        text.word_lines("no_such_file_v9.txt")


def test_embedder_gives_unit_rows_that_rank_paraphrases_first():
    embed = text.minilm_embedder("")
    assert embed([]).shape == (0, 384)
    rows = embed(["How does the speaker feel?", "What is the speaker's mood?", "What colour is the car?"])
    assert rows.shape == (3, 384) and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert rows[0] @ rows[1] > rows[0] @ rows[2] + 0.2


def test_wer_normalises_and_counts_edits_over_reference_words():
    assert text.normalise("Don't-stop, NOW!") == ["don't", "stop", "now"]
    assert text.edit_distance(["a", "b", "c"], ["a", "x", "c", "d"]) == 2  # one substitution, one insertion
    assert text.edit_distance([], ["x", "y"]) == 2 and text.edit_distance(["x"], []) == 1
    assert text.wer(["The cat sat."], ["the cat sat"]) == 0.0
    assert text.wer(["a b c d"], ["a x c"]) == pytest.approx(2 / 4)
    assert text.wer(["a b", "c d e f"], ["a b", ""]) == pytest.approx(4 / 6)  # corpus-level, not a mean of rates
    assert text.wer(["a"], [None]) == 1.0 and text.wer([""], ["x"]) is None and text.wer([], []) is None


