"""Tests of scripts/make_toy_corpus.py and its grammar (scripts/toy_grammar)."""
import random
import shutil
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml

import make_toy_corpus as mtc  # noqa: E402
from toy_grammar import NP, PP, Clause, Sentence, random_sentence, translate  # noqa: E402

PAIRS = ("de", "fr", "es")
SPLITS = ("train", "dev", "tst-COMMON")
TINY = dict(n_train=12, n_dev=4, n_test=4, seed=3)


def _require_espeak():
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: run scripts/setup.sh")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    _require_espeak()
    out = tmp_path_factory.mktemp("toy")
    mtc.make_toy_corpus(out, PAIRS, jobs=2, **TINY)
    return out


def _segments(out: Path, pair: str, split: str) -> list:
    return yaml.safe_load((out / f"en-{pair}/data/{split}/txt/{split}.yaml").read_text())


def _lines(out: Path, pair: str, split: str, lang: str) -> list:
    return (out / f"en-{pair}/data/{split}/txt/{split}.{lang}").read_text().split("\n")[:-1]


# ----------------------------------------------------------------------------- corpus files

def test_layout_and_alignment(corpus):
    assert (corpus / ".toy_corpus.json").is_file()
    n = {"train": TINY["n_train"], "dev": TINY["n_dev"], "tst-COMMON": TINY["n_test"]}
    for pair in PAIRS:
        for split in SPLITS:
            segs = _segments(corpus, pair, split)
            en, tgt = _lines(corpus, pair, split, "en"), _lines(corpus, pair, split, pair)
            assert len(segs) == len(en) == len(tgt) == n[split], (pair, split)
            assert all(set(s) == {"duration", "offset", "speaker_id", "wav"} for s in segs)
            assert all(s["wav"].startswith(f"talk_{split}_") for s in segs)
            assert not any("\t" in t or "\r" in t or not t.strip() for t in en + tgt)
            assert en == _lines(corpus, "de", split, "en")  # same English in every pair


def test_segments_inside_16k_mono_wavs(corpus):
    for split in SPLITS:
        wav_dir = corpus / f"en-de/data/{split}/wav"
        for seg in _segments(corpus, "de", split):
            info = sf.info(wav_dir / seg["wav"])
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert seg["offset"] >= 0 and 0.3 < seg["duration"] < 8, seg
            assert seg["offset"] + seg["duration"] <= info.frames / 16000, (seg, info.frames)
        names = sorted(p.name for p in wav_dir.iterdir())
        assert names == sorted({s["wav"] for s in _segments(corpus, "de", split)})
        for pair in PAIRS[1:]:  # the same talks in every pair
            for name in names:
                other = corpus / f"en-{pair}/data/{split}/wav/{name}"
                assert other.read_bytes() == (wav_dir / name).read_bytes()


def test_speakers_disjoint(corpus):
    spk = {s: {x["speaker_id"] for x in _segments(corpus, "fr", s)} for s in SPLITS}
    assert not spk["train"] & (spk["dev"] | spk["tst-COMMON"])
    # at the default size: 200/10/10 talks of 10-30 utterances, 32/4/4 speakers
    sentences = mtc.split_sentences(4000, 200, 200, seed=1)
    talks = mtc.plan_talks(sentences, seed=1)
    by_split = {s: [t for t in talks if t["split"] == s] for s in SPLITS}
    assert [len(by_split[s]) for s in SPLITS] == [200, 10, 10]
    assert all(10 <= len(t["texts"]) <= 30 for t in talks)
    spk = {s: {t["speaker"]["id"] for t in by_split[s]} for s in SPLITS}
    assert [len(spk[s]) for s in SPLITS] == [32, 4, 4]
    assert not spk["train"] & spk["dev"] and not spk["train"] & spk["tst-COMMON"]
    en = {s: {translate(x, "en") for x in sentences[s]} for s in SPLITS}
    assert not en["train"] & en["dev"] and not en["train"] & en["tst-COMMON"]
    assert len(en["train"]) == 4000


def test_same_seed_same_bytes_whatever_jobs(corpus, tmp_path):
    mtc.main(["--out", str(tmp_path), "--jobs", "1", "--n-train", "12", "--n-dev", "4",
              "--n-test", "4", "--seed", "3"])
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for f in files:
        assert (corpus / f).read_bytes() == (tmp_path / f).read_bytes(), f


def test_rerun_is_skipped(corpus, monkeypatch, capsys):
    def fail(*args):
        raise AssertionError("a complete corpus must not be rebuilt")
    monkeypatch.setattr(mtc, "render_talk", fail)
    summary = mtc.make_toy_corpus(corpus, ["de"], jobs=1, **TINY)  # a subset of the pairs
    assert "already complete" in capsys.readouterr().out
    assert summary["splits"]["train"]["utterances"] == TINY["n_train"]


def test_interrupted_run_leaves_no_stamp(tmp_path, monkeypatch):
    _require_espeak()
    (tmp_path / ".toy_corpus.json").write_text('{"version": 1, "seed": 99}')  # older corpus

    def killed(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(mtc, "render_talk", killed)
    with pytest.raises(KeyboardInterrupt):
        mtc.make_toy_corpus(tmp_path, ["de"], jobs=1, **TINY)
    assert not (tmp_path / ".toy_corpus.json").exists()


def test_missing_espeak_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(mtc.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="espeak-ng.*scripts/setup.sh"):
        mtc.make_toy_corpus(tmp_path, ["de"], jobs=1, **TINY)


# ----------------------------------------------------------------------------- translations

EXAMPLES = [
    (  # German verb-final "weil" clause, dative object; vieil, l'; personal a, al
        Sentence(Clause(NP("woman"), "see", obj=NP("dog", "a", "small")), "because",
                 Clause(NP("man", "the", "old"), "help", obj=NP("child"))),
        {"en": "The woman sees a small dog because the old man helps the child.",
         "de": "Die Frau sieht einen kleinen Hund, weil der alte Mann dem Kind hilft.",
         "fr": "La femme voit un petit chien parce que le vieil homme aide l'enfant.",
         "es": "La mujer ve un perro pequeño porque el hombre viejo ayuda al niño."}),
    (  # fronted phrase: German verb before the subject, "in dem" -> "im"; genders differ
        Sentence(Clause(NP("cat"), "catch", obj=NP("mouse", "a", "white"),
                        pp=PP("in", NP("garden")), front_pp=True)),
        {"en": "In the garden, the cat catches a white mouse.",
         "de": "Im Garten fängt die Katze eine weiße Maus.",
         "fr": "Dans le jardin, le chat attrape une souris blanche.",
         "es": "En el jardín, el gato atrapa un ratón blanco."}),
    (  # fronted clause: German main clause verb-first; plural predicate; estar
        Sentence(Clause(NP("dog"), "follow", obj=NP("woman", "a")), "when",
                 Clause(NP("cat", "three"), "be", adj="hungry"), sub_first=True),
        {"en": "When three cats are hungry, the dog follows a woman.",
         "de": "Wenn drei Katzen hungrig sind, folgt der Hund einer Frau.",
         "fr": "Quand trois chats sont affamés, le chien suit une femme.",
         "es": "Cuando tres gatos están hambrientos, el perro sigue a una mujer."}),
    (  # predicate agreement with the (feminine) subject; adjective before/after the noun
        Sentence(Clause(NP("table", "the", "old"), "be", adj="clean")),
        {"en": "The old table is clean.",
         "de": "Der alte Tisch ist sauber.",
         "fr": "La vieille table est propre.",
         "es": "La mesa vieja está limpia."}),
    (  # "dass" clause, plural verb, strong-declined neuter adjective
        Sentence(Clause(NP("teacher"), "say",
                        comp=Clause(NP("child", "two"), "wash", obj=NP("horse", "a", "black")))),
        {"en": "The teacher says that two children wash a black horse.",
         "de": "Der Lehrer sagt, dass zwei Kinder ein schwarzes Pferd waschen.",
         "fr": "Le professeur dit que deux enfants lavent un cheval noir.",
         "es": "El profesor dice que dos niños lavan un caballo negro."}),
    (  # dative plural -n after "mit"
        Sentence(Clause(NP("king"), "visit", obj=NP("city", "a"),
                        pp=PP("with", NP("dog", "three")))),
        {"en": "The king visits a city with three dogs.",
         "de": "Der König besucht eine Stadt mit drei Hunden.",
         "fr": "Le roi visite une ville avec trois chiens.",
         "es": "El rey visita una ciudad con tres perros."}),
    (  # bel before a vowel, de le -> du, de el -> del
        Sentence(Clause(NP("girl"), "paint", obj=NP("tree", "a", "beautiful"),
                        pp=PP("next to", NP("bridge", "the", "old")))),
        {"en": "The girl paints a beautiful tree next to the old bridge.",
         "de": "Das Mädchen malt einen schönen Baum neben der alten Brücke.",
         "fr": "La fille peint un bel arbre à côté du vieux pont.",
         "es": "La niña pinta un árbol hermoso al lado del puente viejo."}),
    (  # Spanish buen/buena before the noun
        Sentence(Clause(NP("dog", "the", "good"), "see", obj=NP("cow", "a", "good"))),
        {"en": "The good dog sees a good cow.",
         "de": "Der gute Hund sieht eine gute Kuh.",
         "fr": "Le bon chien voit une bonne vache.",
         "es": "El buen perro ve una buena vaca."}),
    (  # accusative after "für", mixed declension after "ein"
        Sentence(Clause(NP("man", "a"), "buy", obj=NP("hat", "the", "new"),
                        pp=PP("for", NP("king", "a", "young")))),
        {"en": "A man buys the new hat for a young king.",
         "de": "Ein Mann kauft den neuen Hut für einen jungen König.",
         "fr": "Un homme achète le nouveau chapeau pour un jeune roi.",
         "es": "Un hombre compra el sombrero nuevo para un rey joven."}),
    (  # verb after the object and the phrase in a "während" clause; an/qu'un/vieil
        Sentence(Clause(NP("baker"), "open", obj=NP("door")), "while",
                 Clause(NP("bird", "a", "old"), "see", obj=NP("apple", "two"),
                        pp=PP("on", NP("table")))),
        {"en": "The baker opens the door while an old bird sees two apples on the table.",
         "de": "Der Bäcker öffnet die Tür, während ein alter Vogel zwei Äpfel auf dem Tisch sieht.",
         "fr": "Le boulanger ouvre la porte pendant qu'un vieil oiseau voit deux pommes sur la table.",
         "es": "El panadero abre la puerta mientras un pájaro viejo ve dos manzanas sobre la mesa."}),
    (  # German neuter nominative after "ein", dative "helfen"; Spanish "ayudar a" an animal
        Sentence(Clause(NP("rabbit", "a", "funny"), "help", obj=NP("mouse"))),
        {"en": "A funny rabbit helps the mouse.",
         "de": "Ein lustiges Kaninchen hilft der Maus.",
         "fr": "Un lapin drôle aide la souris.",
         "es": "Un conejo divertido ayuda al ratón."}),
]


@pytest.mark.parametrize("sentence,expected", EXAMPLES)
def test_translation_rules(sentence, expected):
    for lang, text in expected.items():
        assert translate(sentence, lang) == text


def test_translation_is_a_function_of_the_english():
    rng = random.Random(0)
    seen = {}
    for _ in range(5000):
        s = random_sentence(rng)
        texts = tuple(translate(s, lang) for lang in ("en", "de", "fr", "es"))
        assert seen.setdefault(texts[0], texts) == texts
        assert not any(c in t for t in texts for c in "\t\n\r")
    lengths = [len(en.split()) for en in seen]
    assert min(lengths) >= 4


def test_corpus_text_is_the_grammar_text(corpus):
    sentences = mtc.split_sentences(TINY["n_train"], TINY["n_dev"], TINY["n_test"], TINY["seed"])
    for split in SPLITS:
        for pair in PAIRS:
            for lang in ("en", pair):
                lines = _lines(corpus, pair, split, lang)
                assert lines == [translate(s, lang) for s in sentences[split]], (pair, lang)
        en = _lines(corpus, "de", split, "en")
        assert len(set(en)) == len(en)
        assert all(4 <= len(t.split()) <= 14 and t[0].isupper() and t[-1] == "." for t in en)
