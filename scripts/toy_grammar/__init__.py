"""The toy corpus grammar: English sentences with rule-based German, French and Spanish."""
from .grammar import (LANGS, NP, PP, Clause, Sentence, generate_sentences, random_sentence,
                      translate)
from .lexicon import ADJECTIVES, NOUNS, PREPOSITIONS, VERBS
