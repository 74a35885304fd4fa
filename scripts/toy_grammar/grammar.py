"""Sentence structures, a random generator for them, and their realization in
English, German, French and Spanish.

A sentence is a small tree (`Sentence` > `Clause` > `NP`/`PP`); every language realizes
the same tree by fixed rules, so each translation is a deterministic function of the
sentence's structure. The rules a model has to learn:
  German   case (nominative subject, accusative or dative object by verb, case by
           preposition), adjective declension after der/ein/numbers, dative plural -n,
           verb-second main clauses (inverted after a fronted phrase or clause),
           verb-final subordinate clauses, "in dem" -> "im";
  French   gender and number agreement of articles, adjectives and predicates, adjectives
           after the noun except petit/grand/vieux/jeune/beau/nouveau/bon/mauvais,
           bel/vieil/nouvel and elision (l', d', qu') before vowels, de le -> du;
  Spanish  agreement, adjectives after the noun except bueno/malo (buen/mal before a
           masculine singular), ser vs. estar by adjective, the personal "a" before human
           objects (and animals after amar/ayudar/seguir), a el -> al, de el -> del.
"""
import random
import re
from dataclasses import dataclass
from typing import Optional

from .lexicon import (ADJECTIVES, ALL_TAGS, CLAUSE_VERBS, CONJUNCTIONS, NOUNS, NUMBERS,
                      PREPOSITIONS, TRANSITIVE_VERBS, VERBS)

LANGS = ("en", "de", "fr", "es")
MIN_WORDS, MAX_WORDS = 4, 14  # English words per sentence


@dataclass(frozen=True)
class NP:
    noun: str                  # key of NOUNS
    det: str = "the"           # "the", "a" or a key of NUMBERS (plural)
    adj: Optional[str] = None  # key of ADJECTIVES

    @property
    def plural(self) -> bool:
        return self.det in NUMBERS


@dataclass(frozen=True)
class PP:
    prep: str                  # key of PREPOSITIONS
    np: NP


@dataclass(frozen=True)
class Clause:
    subj: NP
    verb: str                  # key of VERBS, or "be" (copula with `adj`)
    obj: Optional[NP] = None   # transitive verbs
    adj: Optional[str] = None  # predicate adjective of "be"
    pp: Optional[PP] = None    # adverbial phrase at the end of the clause...
    front_pp: bool = False     # ...or at its front ("In the garden, ...")
    comp: Optional["Clause"] = None  # complement of a clause-taking verb ("says that ...")


@dataclass(frozen=True)
class Sentence:
    main: Clause
    conj: Optional[str] = None   # key of CONJUNCTIONS
    sub: Optional[Clause] = None
    sub_first: bool = False      # "When ..., main." instead of "main when ..."


def translate(sentence: Sentence, lang: str) -> str:
    """The sentence in `lang` ("en", "de", "fr" or "es"), capitalized, with a final period."""
    text = {"en": _en, "de": _de, "fr": _fr, "es": _es}[lang](sentence)
    return text[0].upper() + text[1:] + "."


# ----------------------------------------------------------------------------- generation

_SENTENCE_KINDS = {"simple": 30, "front_pp": 10, "copula": 12, "sub": 23, "sub_first": 15,
                   "comp": 10}


_ADJ_FITS = {"any": "HAT", "animate": "HA", "thing": "T", "nonhuman": "AT", "mobile": "HAV"}


def _fitting_adjectives(noun: str) -> list:
    tags = set(NOUNS[noun].tags)
    if not tags & set("HA"):
        tags.add("T")  # a thing
    return [k for k, a in ADJECTIVES.items() if tags & set(_ADJ_FITS[a.applies_to])]


def _nouns_with(tags: str) -> list:
    return [k for k, n in NOUNS.items() if set(n.tags) & set(tags)]


def _random_np(rng: random.Random, tags: str, p_adj: float, exclude=()) -> NP:
    noun = rng.choice([n for n in _nouns_with(tags) if n not in exclude])
    det = rng.choices(["the", "a", "number"], [45, 35, 20])[0]
    if det == "number":
        det = rng.choice(list(NUMBERS))
    adj = None
    if rng.random() < p_adj:
        adj = rng.choice(_fitting_adjectives(noun))
    return NP(noun, det, adj)


def _random_clause(rng: random.Random, p_adj: float, p_pp: float, p_copula: float = 0.3,
                   front_pp: bool = False) -> Clause:
    if rng.random() < p_copula and not front_pp:
        subj = _random_np(rng, ALL_TAGS, p_adj=0.0)
        return Clause(subj, "be", adj=rng.choice(_fitting_adjectives(subj.noun)))
    verb = rng.choice(TRANSITIVE_VERBS)
    v = VERBS[verb]
    subj = _random_np(rng, "H" if v.subject == "human" else "HA", p_adj)
    obj = _random_np(rng, v.objects, p_adj, exclude=(subj.noun,))
    pp = None
    if front_pp or rng.random() < p_pp:
        preps = [k for k, p in PREPOSITIONS.items() if not p.verbs or verb in p.verbs]
        prep = rng.choice(preps)
        pp = PP(prep, _random_np(rng, PREPOSITIONS[prep].objects, p_adj / 2,
                                 exclude=(subj.noun, obj.noun)))
    return Clause(subj, verb, obj=obj, pp=pp, front_pp=front_pp)


def random_sentence(rng: random.Random) -> Sentence:
    """One sentence drawn from the grammar (of any length; see `generate_sentences`)."""
    kind = rng.choices(list(_SENTENCE_KINDS), list(_SENTENCE_KINDS.values()))[0]
    if kind == "simple":
        return Sentence(_random_clause(rng, p_adj=0.4, p_pp=0.45, p_copula=0.0))
    if kind == "front_pp":
        return Sentence(_random_clause(rng, p_adj=0.3, p_pp=1.0, front_pp=True))
    if kind == "copula":
        return Sentence(_random_clause(rng, p_adj=0.0, p_pp=0.0, p_copula=1.0))
    if kind == "comp":
        verb = rng.choice(CLAUSE_VERBS)
        return Sentence(Clause(_random_np(rng, "H", p_adj=0.2), verb,
                               comp=_random_clause(rng, p_adj=0.25, p_pp=0.15)))
    conj = rng.choice(list(CONJUNCTIONS) if kind == "sub" else ["when", "while", "if"])
    main = _random_clause(rng, p_adj=0.25, p_pp=0.15)
    sub = _random_clause(rng, p_adj=0.25, p_pp=0.15)
    return Sentence(main, conj, sub, sub_first=kind == "sub_first")


def generate_sentences(n: int, seed: int, stream: str = "", exclude=()) -> list:
    """`n` sentences with distinct English text of MIN_WORDS..MAX_WORDS words.

    The same (seed, stream) always gives the same list; sentences whose English text is in
    `exclude` are skipped (used to keep the dev and test sentences out of train).
    """
    rng = random.Random(f"toy-corpus/{seed}/{stream}")
    seen, out = set(exclude), []
    for _ in range(1000 + 100 * n):
        if len(out) == n:
            return out
        s = random_sentence(rng)
        en = translate(s, "en")
        if en not in seen and MIN_WORDS <= len(en.split()) <= MAX_WORDS:
            seen.add(en)
            out.append(s)
    if len(out) < n:
        raise RuntimeError(f"the grammar gave only {len(out)} of {n} distinct sentences")
    return out


# ----------------------------------------------------------------------------- English

def _en_np(np: NP) -> str:
    n = NOUNS[np.noun]
    words = ([np.adj] if np.adj else []) + [n.en_pl if np.plural else n.en]
    if np.det == "a":
        det = "an" if words[0][0] in "aeiou" else "a"
    else:
        det = np.det
    return " ".join([det] + words)


def _en_pp(pp: PP) -> str:
    return f"{pp.prep} {_en_np(pp.np)}"


def _en_clause(c: Clause) -> str:
    subj = _en_np(c.subj)
    if c.verb == "be":
        return f"{subj} {'are' if c.subj.plural else 'is'} {c.adj}"
    verb = VERBS[c.verb].en[c.subj.plural]
    if c.comp:
        return f"{subj} {verb} that {_en_clause(c.comp)}"
    text = f"{subj} {verb} {_en_np(c.obj)}"
    if c.pp and c.front_pp:
        return f"{_en_pp(c.pp)}, {text}"
    return f"{text} {_en_pp(c.pp)}" if c.pp else text


def _en(s: Sentence) -> str:
    if s.conj is None:
        return _en_clause(s.main)
    if s.sub_first:
        return f"{s.conj} {_en_clause(s.sub)}, {_en_clause(s.main)}"
    return f"{_en_clause(s.main)} {s.conj} {_en_clause(s.sub)}"


# ----------------------------------------------------------------------------- German

_DE_ARTICLE = {
    "the": {"nom": dict(m="der", f="die", n="das"), "acc": dict(m="den", f="die", n="das"),
            "dat": dict(m="dem", f="der", n="dem")},
    "a": {"nom": dict(m="ein", f="eine", n="ein"), "acc": dict(m="einen", f="eine", n="ein"),
          "dat": dict(m="einem", f="einer", n="einem")},
}
_DE_ADJ_ENDING = {  # weak after der/die/das, mixed after ein, strong after a number
    "the": {"nom": dict(m="e", f="e", n="e"), "acc": dict(m="en", f="e", n="e"),
            "dat": dict(m="en", f="en", n="en")},
    "a": {"nom": dict(m="er", f="e", n="es"), "acc": dict(m="en", f="e", n="es"),
          "dat": dict(m="en", f="en", n="en")},
    "number": {"nom": "e", "acc": "e", "dat": "en"},
}


def _de_np(np: NP, case: str) -> str:
    gender, sg, pl = NOUNS[np.noun].de
    if np.plural:
        det, ending = NUMBERS[np.det][0], _DE_ADJ_ENDING["number"][case]
        noun = pl + "n" if case == "dat" and pl[-1] not in "ns" else pl
    else:
        det, ending, noun = (_DE_ARTICLE[np.det][case][gender],
                             _DE_ADJ_ENDING[np.det][case][gender], sg)
    words = [det, noun]
    if np.adj:
        stem = ADJECTIVES[np.adj].de
        words.insert(1, (stem[:-1] if stem.endswith("e") else stem) + ending)
    return " ".join(words)


def _de_pp(pp: PP) -> str:
    p = PREPOSITIONS[pp.prep]
    return f"{p.de} {_de_np(pp.np, p.de_case)}"


def _de_clause(c: Clause, order: str) -> str:
    """order: "main" (verb second), "inverted" (verb first: after a fronted clause) or
    "sub" (verb last)."""
    subj, tail = _de_np(c.subj, "nom"), ""
    if c.verb == "be":
        verb, rest = "sind" if c.subj.plural else "ist", [ADJECTIVES[c.adj].de]
    else:
        v = VERBS[c.verb]
        verb = v.de[c.subj.plural]
        if c.comp:
            rest, tail = [], ", dass " + _de_clause(c.comp, "sub")
        else:
            rest = [_de_np(c.obj, v.de_case)]
            if c.pp and not c.front_pp:
                rest.append(_de_pp(c.pp))
    if order == "sub":
        words = [subj] + rest + [verb]
    elif order == "inverted":
        words = [verb, subj] + rest
    elif c.front_pp:
        words = [_de_pp(c.pp), verb, subj] + rest
    else:
        words = [subj, verb] + rest
    return " ".join(words) + tail


def _de(s: Sentence) -> str:
    if s.conj is None:
        text = _de_clause(s.main, "main")
    else:
        sub = f"{CONJUNCTIONS[s.conj][0]} {_de_clause(s.sub, 'sub')}"
        if s.sub_first:
            text = f"{sub}, {_de_clause(s.main, 'inverted')}"
        else:
            text = f"{_de_clause(s.main, 'main')}, {sub}"
    return re.sub(r"\bin dem\b", "im", text)


# ----------------------------------------------------------------------------- French, Spanish

def _agree(forms: tuple, gender: str, plural: bool) -> str:
    """forms: (m sg, f sg, m pl, f pl)."""
    return forms[2 * plural + (gender == "f")]


_FR_VOWEL = re.compile(r"[aeiouyàâéèêëîïôûœ]|homme")  # for elision and bel/vieil/nouvel
_ROMANCE_ARTICLE = {"fr": {"the": ("le", "la"), "a": ("un", "une")},
                    "es": {"the": ("el", "la"), "a": ("un", "una")}}
_ES_COPULA = {"ser": ("es", "son"), "estar": ("está", "están")}


def _romance_np(np: NP, lang: str) -> str:
    gender, sg, pl = getattr(NOUNS[np.noun], lang)
    if np.plural:
        det = NUMBERS[np.det][1 if lang == "fr" else 2]
    else:
        det = _ROMANCE_ARTICLE[lang][np.det][gender == "f"]
    words = [det, pl if np.plural else sg]
    if np.adj:
        a = ADJECTIVES[np.adj]
        form = _agree(getattr(a, lang), gender, np.plural)
        masc_sg = gender == "m" and not np.plural
        if lang == "fr" and a.fr_before_noun:
            if masc_sg and a.fr_m_before_vowel and _FR_VOWEL.match(sg):
                form = a.fr_m_before_vowel
            words.insert(1, form)
        elif lang == "es" and a.es_before_noun:
            words.insert(1, a.es_m_apocope if masc_sg and a.es_m_apocope else form)
        else:
            words.append(form)
    return " ".join(words)


def _romance_clause(c: Clause, lang: str) -> str:
    subj = _romance_np(c.subj, lang)
    gender = getattr(NOUNS[c.subj.noun], lang)[0]
    if c.verb == "be":
        a = ADJECTIVES[c.adj]
        if lang == "fr":
            copula = ("est", "sont")[c.subj.plural]
        else:
            copula = _ES_COPULA[a.es_copula][c.subj.plural]
        return f"{subj} {copula} {_agree(getattr(a, lang), gender, c.subj.plural)}"
    verb = getattr(VERBS[c.verb], lang)[c.subj.plural]
    if c.comp:
        return f"{subj} {verb} que {_romance_clause(c.comp, lang)}"
    obj = _romance_np(c.obj, lang)
    if lang == "es" and set(NOUNS[c.obj.noun].tags) & set(VERBS[c.verb].es_personal_a):
        obj = "a " + obj  # personal "a"
    text = f"{subj} {verb} {obj}"
    if c.pp:
        pp = f"{getattr(PREPOSITIONS[c.pp.prep], lang)} {_romance_np(c.pp.np, lang)}"
        text = f"{pp}, {text}" if c.front_pp else f"{text} {pp}"
    return text


def _romance(s: Sentence, lang: str) -> str:
    main = _romance_clause(s.main, lang)
    if s.conj is None:
        return main
    conj = CONJUNCTIONS[s.conj][1 if lang == "fr" else 2]
    sub = _romance_clause(s.sub, lang)
    return f"{conj} {sub}, {main}" if s.sub_first else f"{main} {conj} {sub}"


def _fr(s: Sentence) -> str:
    text = _romance(s, "fr")
    text = re.sub(r"\b(le|la|de|que) (?=" + _FR_VOWEL.pattern + ")",
                  lambda m: m.group(1)[:-1] + "'", text)
    return re.sub(r"\bde le\b", "du", re.sub(r"\bà le\b", "au", text))


def _es(s: Sentence) -> str:
    text = _romance(s, "es")
    return re.sub(r"\bde el\b", "del", re.sub(r"\ba el\b", "al", text))
