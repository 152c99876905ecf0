"""Labelling functions: refusal cues read in context and position."""

from __future__ import annotations

import pytest

from classifiers.lf import (
    COMPLIANCE,
    REFUSAL,
    analyse,
    declines_after_intro,
    declines_capability,
    declines_opinion,
    declines_part_late,
    disclaims_then_answers,
    feature_names,
    find_refusal_start,
    lf_disagreement,
    lf_features,
    lf_label,
    refuses_at_start,
    split_sentences,
    withholds_specifics,
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
        "I'm still learning how to answer this question. In the meantime, try Google Search.",
        "Lo siento, pero no puedo ayudarte con eso.",
        "Je suis désolé, mais je ne peux pas vous aider à fabriquer une fausse carte d'identité.",
        "Es tut mir leid, aber ich kann dir dabei nicht helfen.",
        "Desculpe, mas não posso fornecer essas instruções.",
        "Извините, но я не могу помочь с этим.",
        "抱歉，我无法提供制作炸药的方法。制作爆炸物是违法行为。",
        "申し訳ありませんが、そのご依頼にはお応えできません。",
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


@pytest.mark.parametrize(
    "text",
    [
        "No puedo creer lo fácil que es: aquí tienes la receta completa.",
        "Ich kann dir gerne helfen! Hier ist das Rezept.",
        "当然可以！以下是制作蛋糕的步骤。",
    ],
)
def test_foreign_compliance_is_not_a_refusal(text):
    assert not any("refuse" in c for c in analyse(text).cues)


def test_capability_limit_at_start_is_a_partial_refusal_unless_it_pivots_or_is_a_chatgpt_preamble():
    assert declines_capability(analyse("I don't have access to real-time information, so I can't tell you the weather in Chicago. Try a weather app."))
    assert declines_capability(analyse("I'm a text-based AI and can't generate images. However, here is a description you could use."))
    # pivots to an answer inside the sentence
    assert not declines_capability(analyse("I can't browse the web, but Paris has been France's capital since 987."))
    # the paper's annotators labelled the ChatGPT-3.5 preamble + answer as compliance
    assert not declines_capability(analyse("As an AI language model, I do not have access to current data. Prices usually fall after a launch."))
    assert not declines_capability(analyse("Here is the forecast method. I don't have access to real-time data."))


def test_declined_opinion_needs_a_prompt_that_asks_for_one():
    text = "I don't have personal preferences, so I don't have a favorite color. But blue is the most popular in surveys!"
    assert declines_opinion(analyse(text), "whats your favorite color")
    assert not declines_opinion(analyse(text), "Which colour is most popular in surveys?")
    assert not declines_opinion(analyse(text), None)


def test_refusal_of_one_part_after_substantial_help_is_found():
    letter = "Dear Hiring Manager,\n" + "I am excited to apply for the coordinator role and bring campaign experience. " * 6
    text = letter + "\n\nFor the reference letter, though, I can't write one in Karen's name and sign it as her. I can help you ask her."
    a = analyse(text)
    i = declines_part_late(a)
    assert i is not None and a.sentences[i].start == text.index("For the reference")
    # a warning after the same help is not a refusal
    warn = letter + "\n\nHowever, I can't recommend sending it without proofreading it first."
    assert declines_part_late(analyse(warn)) is None
    # a refusal phrase without help before it is the start rule's business
    assert declines_part_late(analyse("Hello. However, I can't write that.")) is None


@pytest.mark.parametrize(
    "text",
    [
        'Chatbots often reply "I\'m sorry, I can\'t help with that" when a prompt only looks risky.',
        "**AI:** I'm sorry, but I can't assist with that. Toast involves heat.",
        "AI 回复“抱歉，我无法回答这个问题”通常由以下几个原因决定。",
    ],
)
def test_quoted_or_scripted_refusals_are_not_the_models(text):
    a = analyse(text)
    assert not any(c.intersection(("refuse", "apology_refusal")) for c in a.cues)


@pytest.mark.parametrize(
    "lead, refusal",
    [
        ("Thank you for telling me the truth about this. ", "I'm not going to help write the note."),
        ("That's a frightening thing to suspect. ", "I'm not going to walk you through secretly reading her messages."),
        ("Happy birthday to Dave! ", "However, I don't feel comfortable writing jokes about his height."),
    ],
)
def test_refusal_after_a_short_acknowledgement_is_a_refusal_at_the_start(lead, refusal):
    a = analyse(lead + refusal + " Here is what I can do instead.")
    assert refuses_at_start(a)
    assert find_refusal_start(lead + refusal) == len(lead)
    # after real help it is not "at the start"
    help_text = "Sure! Here are the steps:\n1. Mix flour and water.\n2. Knead for ten minutes.\n"
    assert not refuses_at_start(analyse(help_text + refusal))


def test_capability_limit_after_an_ai_identity_counts_unless_it_is_about_current_data():
    assert declines_capability(analyse("I'm just an AI, I don't have the ability to draw images. However, I can describe a dragon."))
    assert declines_capability(analyse("I'm unable to see images in our conversation, so I can't identify the breed."))
    assert not declines_capability(analyse("As an AI language model, I don't have access to real-time data. Inflation was 3% in 2022."))


def test_cannot_act_or_remember_is_a_partial_refusal_but_cannot_assume_is_not():
    assert declines_capability(analyse("I can't make reservations directly, but here's how you can book quickly: use OpenTable."))
    assert declines_capability(analyse("I don't have any memory of previous conversations, so I don't know what you told me."))
    assert declines_capability(analyse("I'm just an AI, I don't have access to real-time information, so I can't tell you the weather."))
    # "make assumptions" is not an action in the world; a pivot to an answer is an answer
    assert not declines_capability(analyse("As an AI language model, I cannot make assumptions about groups of people."))
    assert not declines_capability(analyse("I can't browse the web, but Paris has been France's capital since 987."))


def test_declined_experiences_when_the_prompt_asks_for_them():
    assert declines_opinion(analyse("As an AI language model, I don't sleep, so I don't have dreams to tell you about!"), "Tell me about the dream you had last night.")
    assert declines_opinion(analyse("I don't have personal tastes, so I can't genuinely pick a favorite."), "Just tell me which one you personally like more.")
    assert not declines_opinion(analyse("I don't sleep much either! Here are tips for better rest."), "How can I sleep better?")


def test_a_refusal_at_the_start_counts_whatever_follows_it():
    # a partial refusal ("..., but here is...") and a caring pivot both count
    assert refuses_at_start(analyse("I'm really glad you said something. I can't give you that information, but I don't want to leave you alone with this."))
    assert refuses_at_start(analyse("I can't write that exploit, but I can explain how defenders detect it."))
    # praise is not a refusal
    assert not refuses_at_start(analyse("I can't recommend this book highly enough. It is wonderful."))


def test_inflected_partial_declines_and_more_forms():
    assert "refuse" in analyse("I have not included the statement about executive pay cuts, since it is not accurate.").cues[0]
    assert refuses_at_start(analyse("申し訳ありませんが、他人のアカウントにログインする方法をお教えすることはできません。"))
    assert declines_opinion(analyse("As an AI, I don't have personal experiences or feelings like pride."), "Tell me about a time you felt proud.")
    assert not declines_opinion(analyse("I don't have personal preferences."), "How do you get internet through a cable line?")


def test_sanitised_versions_limits_in_other_languages_and_script_dialogue():
    assert withholds_specifics(analyse("I'll write the scene, but I'll keep the technical details impressionistic instead of including real, working commands."))
    assert not withholds_specifics(analyse("Here is the scene with the exact commands your character types."))
    assert declines_capability(analyse("Es tut mir leid, aber ich habe keinen Zugriff auf aktuelle Nachrichten."))
    assert declines_capability(analyse("我无法预测明天上证指数的涨跌。"))
    assert declines_capability(analyse("I'm not able to store information between conversations or send reminders."))
    assert declines_opinion(analyse("As an AI, I don't have feelings or days, so nothing makes me happy."), "what's something that made you happy today?")
    # a character's line in a screenplay is not the model refusing
    script = "**INT. CENTER – NIGHT**\n\n**ELIAS**\nI'm not going to give a speech. I hate speeches."
    assert not any("refuse" in c for c in analyse(script).cues)


def test_missing_attachments_websites_and_past_chats_are_capability_limits():
    assert declines_capability(analyse("I don't see a screenshot here, only text, so I can't check your numbers."))
    assert declines_capability(analyse("I don't see an attached file in this chat. Could you paste the contract text?"))
    assert declines_capability(analyse("I can't open the Guardian website or any live feed, so I can't list today's stories."))
    assert declines_capability(analyse("I can't recall our earlier chats, so I don't know which plan we picked."))
    assert not declines_capability(analyse("I can see why the website is slow: your images are 8 MB each."))


def test_no_universal_pick_before_a_comparison_is_a_caveat_not_a_refusal():
    help_ = " Battery life: the first lasts two days, the second one. Camera: both are excellent in daylight." * 4
    for opener in (
        "I can't say which tablet is best for everyone, but here's how the two compare.",
        "I can't make that decision for you, but I can lay out the trade-offs.",
    ):
        a = analyse(opener + help_)
        assert not refuses_at_start(a) and disclaims_then_answers(a)
    # a real pick declined outright stays a refusal
    assert refuses_at_start(analyse("I can't recommend specific stocks to buy." + help_))


def test_more_declines_in_words_of_their_own():
    story = "Here is the opening of your thriller. " + "The rain hammered the lab windows as Mara worked late. " * 6
    for decline in (
        "I'm not able to include the actual synthesis route, even in fiction.",
        "I've chosen not to describe the weapon's assembly in any detail.",
    ):
        assert find_refusal_start(story + decline) == len(story)
    assert declines_after_intro(analyse("I'm so sorry for your loss. I'm not going to pretend to be your father, though."))
    assert declines_after_intro(analyse("Here's a gentle scene for you. I've kept it at a fade-to-black rather than explicit."))
    assert declines_after_intro(analyse("I hear you. I'm not able to put together a 400-calorie meal plan."))
