"""The synchronous en -> fr/de grammar: hand-checked translations, determinism, lexicon, orthography."""

import random

import pytest

from prune_tools.data.grammar import NP, PP, Clause, Grammar, GrammarError, Sentence, tokenize

G = Grammar()

# (spec, English, French, German): each checked by hand; the comment says what it exercises.
CASES = [
    # adjective placement (pre + post) and agreement; German weak nom. / mixed acc.
    (Clause(NP("cow", adjs=("big", "white")), "see", obj=NP("dog", det="a", adjs=("old",))),
     "the big white cow sees an old dog",
     "la grande vache blanche voit un vieux chien",
     "die große weiße Kuh sieht einen alten Hund"),
    # bel before a vowel, predicative agreement; German dieser + weak
    (Clause(NP("bird", det="this", adjs=("beautiful",)), "be", adj="happy"),
     "this beautiful bird is happy",
     "ce bel oiseau est heureux",
     "dieser schöne Vogel ist glücklich"),
    # cet, j'; German masculine accusative
    (Clause(NP(pronoun="i"), "see", obj=NP("tree", det="this")),
     "i see this tree",
     "je vois cet arbre",
     "ich sehe diesen Baum"),
    # negation of an indefinite object: pas d' / kein
    (Clause(NP(pronoun="i"), "have", obj=NP("egg", det="a"), negative=True),
     "i do not have an egg",
     "je n'ai pas d'œuf",
     "ich habe kein Ei"),
    # yes/no question: do-support / est-ce que / verb first
    (Clause(NP("dog"), "see", obj=NP("cat"), question=True),
     "does the dog see the cat?",
     "est-ce que le chien voit le chat ?",
     "sieht der Hund die Katze?"),
    # past: passé composé with avoir; Perfekt of a separable verb, participle last; im
    (Clause(NP("teacher"), "call", obj=NP("girl", det="my"), pp=PP("in", NP("garden")), tense="past"),
     "the teacher called my girl in the garden",
     "le professeur a appelé ma fille dans le jardin",
     "der Lehrer hat mein Mädchen im Garten angerufen"),
    # past with être and agreement (f pl); sein + zum
    (Clause(NP("cow", plural=True), "go", pp=PP("to", NP("station")), tense="past"),
     "the cows went to the station",
     "les vaches sont allées à la gare",
     "die Kühe sind zum Bahnhof gegangen"),
    # future + negation: futur simple / werden + infinitive last, nicht after the object
    (Clause(NP(pronoun="we"), "eat", obj=NP("cake"), tense="future", negative=True),
     "we will not eat the cake",
     "nous ne mangerons pas le gâteau",
     "wir werden den Kuchen nicht essen"),
    # numbers with plural nouns; à côté du; German dative
    (Clause(NP("dog", det="three", plural=True), "sleep", pp=PP("next to", NP("garden"))),
     "three dogs sleep next to the garden",
     "trois chiens dorment à côté du jardin",
     "drei Hunde schlafen neben dem Garten"),
    # numbers in a dative PP: -n on the German dative plural, irregular French plural
    (Clause(NP("boy"), "play", pp=PP("with", NP("horse", det="two", plural=True))),
     "the boy plays with two horses",
     "le garçon joue avec deux chevaux",
     "der Junge spielt mit zwei Pferden"),
    # clitic pronoun + participle agreement; pronoun before a full subject in a German question
    (Clause(NP("dog"), "see", obj=NP(pronoun="she"), tense="past", question=True),
     "did the dog see her?",
     "est-ce que le chien l'a vue ?",
     "hat sie der Hund gesehen?"),
    # reflexive verb, être + agreement, negation; German reflexive separable verb
    (Clause(NP("girl"), "rest", tense="past", negative=True),
     "the girl did not rest",
     "la fille ne s'est pas reposée",
     "das Mädchen hat sich nicht ausgeruht"),
    # indirect object: à + les = aux; German dative plural
    (Clause(NP(pronoun="he"), "answer", obj=NP("child", plural=True)),
     "he answers the children",
     "il répond aux enfants",
     "er antwortet den Kindern"),
    # weak masculine noun in a prepositional object (auf + acc.)
    (Clause(NP("girl", det="a"), "wait for", obj=NP("boy"), tense="future"),
     "a girl will wait for the boy",
     "une fille attendra le garçon",
     "ein Mädchen wird auf den Jungen warten"),
    # copula + location: imparfait, au bord du / am
    (Clause(NP(pronoun="i"), "be", pp=PP("at", NP("lake")), tense="past"),
     "i was at the lake",
     "j'étais au bord du lac",
     "ich war am See"),
    # h aspiré (le héros, no elision) vs h muet (l'hôtel)
    (Clause(NP("hero"), "sleep", pp=PP("in", NP("hotel"))),
     "the hero sleeps in the hotel",
     "le héros dort dans l'hôtel",
     "der Held schläft im Hotel"),
    # qu'il; German neuter indefinite accusative
    (Clause(NP(pronoun="he"), "have", obj=NP("car", det="a"), question=True),
     "does he have a car?",
     "est-ce qu'il a une voiture ?",
     "hat er ein Auto?"),
    # possessives and mixed declension (nom. and dat.)
    (Clause(NP("woman", det="her", adjs=("young",)), "live", pp=PP("in", NP("house", det="a", adjs=("small",)))),
     "her young woman lives in a small house",
     "sa jeune femme habite dans une petite maison",
     "ihre junge Frau wohnt in einem kleinen Haus"),
    # mon before a feminine vowel-initial noun; des -> de before a pre-nominal adjective; einige + strong
    (Clause(NP("school", det="my"), "be", adj="full", tense="future", question=True),
     "will my school be full?",
     "est-ce que mon école sera pleine ?",
     "wird meine Schule voll sein?"),
    (Clause(NP("cook"), "write", obj=NP("song", det="some", plural=True, adjs=("old",))),
     "the cook writes some old songs",
     "le cuisinier écrit de vieilles chansons",
     "der Koch schreibt einige alte Lieder"),
    # dative verb with kein; German separable verb in a question
    (Clause(NP("baker"), "help", obj=NP("man", det="a"), negative=True, tense="past"),
     "the baker did not help a man",
     "le boulanger n'a pas aidé d'homme",
     "der Bäcker hat keinem Mann geholfen"),
    (Clause(NP(pronoun="you"), "wake up", question=True),
     "do you wake up?",
     "est-ce que tu te réveilles ?",
     "wachst du auf?"),
]


@pytest.mark.parametrize("spec,en,fr,de", CASES, ids=[c[1] for c in CASES])
def test_hand_checked_translations(spec, en, fr, de):
    assert G.realize(spec) == Sentence(en, fr, de)


def test_same_seed_same_sentences():
    assert _draw(42, 300) == _draw(42, 300)
    assert _draw(42, 50) != _draw(43, 50)


def _draw(seed, n):
    rng = random.Random(seed)
    return [G.sample(rng) for _ in range(n)]


def test_lexicon_is_big_enough():
    assert G.lexicon_size() >= 300
    assert len(G.nouns) >= 120 and len(G.verbs) >= 60 and len(G.adjs) >= 50
    vocab = G.vocabulary()
    assert set(vocab) == {"en", "fr", "de"}
    assert len(vocab["fr"]) > 300 and len(vocab["de"]) > 300


def test_vocabulary_covers_samples_and_orthography():
    vocab = G.vocabulary()
    de_nouns = {n.de for n in G.nouns.values()} | {n.de_pl for n in G.nouns.values() if n.de_pl}
    for s in _draw(7, 1500):
        for lang in ("en", "fr", "de"):
            text = getattr(s, lang)
            assert "  " not in text and text == text.strip()
            assert not text.endswith("."), text
            assert set(tokenize(text)) <= vocab[lang], text
        assert s.en == s.en.lower() and s.fr == s.fr.lower()
        for w in s.de.rstrip("?").split():
            # German: only nouns are capitalised
            assert (w[0].isupper()) == (w in de_nouns or w.rstrip("n") in de_nouns or w[:-1] in de_nouns), s.de
        q = s.en.endswith("?")
        assert s.de.endswith("?") == q and s.fr.endswith(" ?") == q
        if q:
            assert not s.en.endswith(" ?") and not s.de.endswith(" ?")


def test_bad_specs_raise():
    with pytest.raises(GrammarError, match="unknown noun"):
        G.realize(Clause(NP("unicorn"), "sleep"))
    with pytest.raises(GrammarError, match="object"):
        G.realize(Clause(NP("dog"), "see"))
    with pytest.raises(GrammarError, match="plural"):
        G.realize(Clause(NP("dog", det="two"), "sleep"))
