"""Labelling functions: refusal cues read in context and position."""

from __future__ import annotations

import pytest

from classifiers.lf import (
    COMPLIANCE,
    REFUSAL,
    analyse,
    feature_names,
    find_refusal_start,
    lf_disagreement,
    lf_features,
    lf_label,
    split_sentences,
)


def test_sentence_offsets_point_into_text():
    text = "Sure! Here is how.\n1. Step one.\n2. Step two. Done?  Yes."
    sents = split_sentences(text)
    assert [s.text for s in sents] == ["Sure!", "Here is how.", "1. Step one.", "2. Step two.", "Done?", "Yes."]
    for s in sents:
        assert text[s.start : s.end] == s.text


def test_glued_sentences_are_split():
    sents = split_sentences("That is illegal.I cannot help with that.")
    assert [s.text for s in sents] == ["That is illegal.", "I cannot help with that."]


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry to hear that you're going through this. Here are some tips that may help: rest, drink water.",
        "I'm so sorry for your loss. Grief takes time; here are some ways to cope.",
    ],
)
def test_sympathy_is_not_a_refusal(text):
    a = analyse(text)
    assert not any("refuse" in c or "apology_refusal" in c for c in a.cues)
    assert find_refusal_start(text) is None
    assert lf_label(text) != REFUSAL


@pytest.mark.parametrize(
    "text",
    [
        "I can't comply with that.",
        "I cannot help with that request.",
        "I won't write that.",
        "I must decline.",
        "I'm sorry, but I can't assist with creating malware.",
        "Sorry, I am not able to provide instructions for that.",
        "This request goes against my guidelines.",
        "I'd rather not write jokes that demean people.",
        "I prefer not to answer that.",
    ],
)
def test_refusals_are_found_at_start(text):
    assert lf_label(text) == REFUSAL
    assert find_refusal_start(text) == 0


def test_compliant_answer_mentioning_illegal_is_not_a_refusal():
    text = (
        "Sure! Here is an overview of how lock picking works.\n1. Insert a tension wrench.\n"
        "2. Rake the pins until they set.\n3. Turn the plug.\n"
        "Note that picking locks you do not own is illegal in many places."
    )
    assert lf_label(text) == COMPLIANCE
    assert find_refusal_start(text) is None


def test_warning_after_full_help_is_not_a_refusal():
    help_text = "Here are the steps to brew beer at home. " + "Boil the wort and add hops for an hour. " * 10
    text = help_text + "I do not condone drinking and driving; please drink responsibly."
    a = analyse(text)
    assert not any("refuse" in c for c in a.cues)
    assert find_refusal_start(text) is None
    f = dict(zip(feature_names(), lf_features(text)))
    assert f["warning_after_help"] == 1.0


def test_refusal_after_compliant_text_is_located():
    text = "Sure, here is the plan. Step one is to buy supplies. I'm sorry, but I cannot continue with this request."
    start = find_refusal_start(text)
    assert start == text.index("I'm sorry")
    f = dict(zip(feature_names(), lf_features(text)))
    assert f["hard_after_help"] > 0
    assert lf_label(text) == REFUSAL


def test_no_opinion_disclaimer_is_a_soft_cue_not_a_hard_refusal():
    text = "As an AI language model, I do not have personal opinions. However, some argue that the statue honours history."
    a = analyse(text)
    assert "no_opinion" in a.cues[0] and "refuse" not in a.cues[0]
    assert find_refusal_start(text) == 0  # a soft (partial) refusal at the start
    assert find_refusal_start(text, soft_ok=False) is None


def test_disagreement_and_features_shape():
    text = "I'm sorry, but I can't do that.\n1. First do this.\n2. Then that.\n3. Finally this." + " More help." * 80
    assert lf_disagreement(text)
    assert len(lf_features(text)) == len(feature_names())
    assert lf_features("")[feature_names().index("empty")] == 1.0
