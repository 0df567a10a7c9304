"""Captions: deterministic per (seed, clip), built from the clip's known attributes."""

from melody_core.data.captions import mood_words, spell_key, symbolic_captions, tempo_words

ATTRS = {
    "composer": "J. S. Bach", "era": "baroque", "style": "four-part chorale",
    "ensemble_label": "a string quartet", "instrument_family": "strings",
    "instruments": ["violin", "viola", "cello"], "num_parts": 4, "bpm": 63,
    "tonic": "Eb", "mode": "minor", "dynamics": "soft", "reverb": "hall",
}  # fmt: skip


def test_captions_are_deterministic_per_seed_and_clip():
    a = symbolic_captions(ATTRS, "0:bach/bwv1/v0/c0", 4)
    assert a == symbolic_captions(dict(ATTRS), "0:bach/bwv1/v0/c0", 4)
    assert len(a) == 4 and len(set(a)) == 4
    others = {tuple(symbolic_captions(ATTRS, f"{s}:bach/bwv1/v0/c0", 4)) for s in range(1, 8)}
    assert len(others) > 1  # the seed changes the phrasing


def test_captions_mention_the_known_attributes():
    caps = symbolic_captions(ATTRS, "0:x", 6)
    text = " ".join(caps).lower()
    for word in ("63 bpm", "e-flat minor", "violin", "bach", "baroque", "chorale", "strings"):
        assert word in text, word
    assert any(m in text for m in mood_words("minor", 63))  # mood follows mode + tempo
    assert caps[0].startswith("strings, violin")  # the tag list comes first
    for cap in caps:
        assert any(w in cap.lower() for w in ("63", "adagio", "slow"))  # every caption states the tempo


def test_words_follow_the_attributes():
    assert tempo_words(50) == ("very slow", "largo")
    assert tempo_words(90) == ("moderate", "andante")
    assert tempo_words(140) == ("fast", "allegro")
    assert "melancholic" in mood_words("minor", 60) and "joyful" in mood_words("major", 150)
    assert spell_key("F#", "major") == "F-sharp major" and spell_key("C", "minor") == "C minor"


def test_short_prompts_are_what_a_user_types() -> None:
    from melody_core.data.captions import short_prompts

    a = {"ensemble_label": "a string quartet", "style": "chorale", "bpm": 80, "mode": "minor"}
    got = short_prompts(a)
    assert got[:2] == ["string quartet", "a string quartet"] and "string quartet, chorale" in got
    assert len(got) == len(set(got)) and all(len(p.split()) <= 5 for p in got)
    assert short_prompts({"ensemble_label": "solo piano"}) == ["solo piano"]
    assert short_prompts({}) == [] and short_prompts({"ensemble_label": ""}) == []
