"""A synchronous grammar that generates English sentences with French and German translations.

Every sentence is built once as a language-neutral structure (a :class:`Clause`)
and realized three times, so the translations are exact by construction. The
structures are chosen so that translating needs reordering and inflection, not
word lookup: French clitic pronouns, ``ne ... pas``, passé composé with
avoir/être and participle agreement, futur simple, imparfait for states,
adjective placement and agreement, elision and contractions (``l'``, ``n'``,
``qu'``, ``au``, ``du``); German verb-second order, verb-final participles
and infinitives, separable prefixes, case and gender, strong/weak/mixed
adjective declension, weak nouns, ``kein`` vs ``nicht`` and contractions
(``im``, ``am``, ``zum``, ``zur``, ``ins``).

Orthography convention (all three languages)
-------------------------------------------
* Everything is lowercase (English ``i`` included: the texts are ASR/AST
  targets, not prose), except German nouns, which are capitalised as German
  requires. No sentence-initial capital, no final period.
* Words are separated by single spaces; French elided words stay attached
  (``l'oiseau``, ``n'a``, ``qu'il``) and hyphenated compounds are one word
  (``grand-mère``, ``est-ce``).
* Questions follow each language's typography: ``?`` attached to the last word
  in English and German (``does the dog see the cat?``, ``sieht der Hund die
  Katze?``) and preceded by a space in French (``est-ce que le chien voit le
  chat ?``).
* "you" is always the familiar singular (``tu`` / ``du``); "they" is ``ils``;
  speakers and addressees ("i", "you", "we") count as masculine for French
  agreement, so every English sentence has exactly one translation per language.

Run ``python -m prune_tools.data.grammar [N] [SEED]`` to print N sample triples.

Usage::

    import random
    from prune_tools.data.grammar import Grammar, Clause, NP, PP
    g = Grammar()
    g.sample(random.Random(0))            # Sentence(en=..., fr=..., de=...)
    g.realize(Clause(NP("dog"), "see", obj=NP("cat")))
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Sentence", "NP", "PP", "Clause", "Grammar", "GrammarError", "tokenize"]


class GrammarError(ValueError):
    """A spec names a word the lexicon does not have, or combines things that cannot be realized."""


# ---------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sentence:
    en: str
    fr: str
    de: str


@dataclass(frozen=True)
class NP:
    """A noun phrase: a lexicon noun (English singular) with determiner and adjectives, or a pronoun.

    det: ``the``, ``a``, ``this``, ``my``, ``your``, ``his``, ``her``, ``our``,
    ``their``, ``some`` (plural), or a number word ``two`` .. ``twelve`` (plural).
    pronoun: ``i``, ``you``, ``he``, ``she``, ``we``, ``they`` (case is chosen by position).
    adjs: English adjectives; at most one French pre-nominal one followed by at most one other.
    """

    noun: str | None = None
    det: str = "the"
    plural: bool = False
    adjs: tuple[str, ...] = ()
    pronoun: str | None = None


@dataclass(frozen=True)
class PP:
    """A prepositional phrase. prep: in, on, under, behind, in front of, next to, with, at, to."""

    prep: str
    np: NP


@dataclass(frozen=True)
class Clause:
    """One sentence. verb is an English lexicon key ("see", "look at", "wake up") or "be".

    With ``be`` give either ``adj`` (predicative adjective) or ``pp`` (location).
    tense: present | past | future. negative and question are exclusive.
    """

    subject: NP
    verb: str
    obj: NP | None = None
    adj: str | None = None
    pp: PP | None = None
    tense: str = "present"
    negative: bool = False
    question: bool = False


# ---------------------------------------------------------------------------------------------
# Lexicon entries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Noun:
    en: str
    en_pl: str
    fr: str
    fr_g: str  # m | f
    fr_pl: str
    de: str
    de_g: str  # m | f | n
    de_pl: str | None  # None for mass nouns
    de_obl: str  # singular accusative/dative (differs for weak nouns: den Jungen)
    cls: str  # animal | person | object | food | drink | place | vehicle
    tags: frozenset[str]
    preps: tuple[str, ...]  # locative prepositions this noun can be the object of
    fr_prep: dict[str, str]  # per-noun French preposition for at/to/overrides
    de_prep: dict[str, tuple[str, str]]  # per-noun German (preposition, case)
    mass: bool = False


@dataclass(frozen=True)
class Verb:
    key: str  # English key: base (+ particle or object preposition)
    en: str  # base form
    en_3sg: str
    en_past: str
    en_particle: str  # "up", "back" or ""
    en_prep: str  # preposition before the object: "at", "for", "to" or ""
    kind: str  # tr | intr | motion
    subj: frozenset[str]  # noun classes allowed as subject
    obj: frozenset[str]  # noun classes or tags allowed as object
    fr_inf: str
    fr_pres: tuple[str, ...]  # 6 persons
    fr_fut: str  # future stem
    fr_pp: str
    fr_aux: str  # avoir | être
    fr_obj: str  # dir | ind
    fr_refl: bool
    fr_imp: str | None  # imparfait stem when the English past is a state (avoir, aimer, ...)
    de_inf: str
    de_prefix: str  # separable prefix ("an" in anrufen) or ""
    de_pres: tuple[str, ...]  # 6 persons, without the separable prefix
    de_pp: str
    de_aux: str  # haben | sein
    de_obj: tuple[str, str]  # (preposition or "", case)
    de_refl: bool
    needs_pp: bool = False  # "live" needs a location
    pron_obj: bool = True  # object may be a personal pronoun
    indef_obj: bool = True  # object may be indefinite ("love a cat" is odd)


@dataclass(frozen=True)
class Adj:
    en: str
    fr: tuple[str, str, str, str, str]  # m, f, m pl, f pl, m sg before a vowel (bel, vieil, nouvel)
    fr_pre: bool  # French places it before the noun
    de: str  # predicative form
    de_stem: str  # stem for inflected forms (teur-, dunkl-, hoh-)
    kind: str  # pre | color | other (English order: pre-type before colour)
    ok: frozenset[str]  # noun classes or tags it can describe


# ---------------------------------------------------------------------------------------------
# Closed-class words
# ---------------------------------------------------------------------------------------------

NUMBERS = {
    "two": ("deux", "zwei"), "three": ("trois", "drei"), "four": ("quatre", "vier"),
    "five": ("cinq", "fünf"), "six": ("six", "sechs"), "seven": ("sept", "sieben"),
    "eight": ("huit", "acht"), "nine": ("neuf", "neun"), "ten": ("dix", "zehn"),
    "eleven": ("onze", "elf"), "twelve": ("douze", "zwölf"),
}
POSSESSIVES = {  # English -> (French m, f, pl; German root)
    "my": ("mon", "ma", "mes", "mein"),
    "your": ("ton", "ta", "tes", "dein"),
    "his": ("son", "sa", "ses", "sein"),
    "her": ("son", "sa", "ses", "ihr"),
    "our": ("notre", "notre", "nos", "unser"),
    "their": ("leur", "leur", "leurs", "ihr"),
}
DETERMINERS = ("the", "a", "this", "some", *POSSESSIVES, *NUMBERS)

# pronoun -> person index (0 je/ich, 1 tu/du, 2 il/er, 3 nous/wir, 5 ils/sie), French gender, plural
PRONOUNS = {
    "i": (0, "m", False), "you": (1, "m", False), "he": (2, "m", False),
    "she": (2, "f", False), "we": (3, "m", True), "they": (5, "m", True),
}
EN_PRON = {  # nominative, objective
    "i": ("i", "me"), "you": ("you", "you"), "he": ("he", "him"), "she": ("she", "her"),
    "we": ("we", "us"), "they": ("they", "them"),
}
FR_PRON = {  # subject, direct clitic, indirect clitic, stressed
    "i": ("je", "me", "me", "moi"), "you": ("tu", "te", "te", "toi"),
    "he": ("il", "le", "lui", "lui"), "she": ("elle", "la", "lui", "elle"),
    "we": ("nous", "nous", "nous", "nous"), "they": ("ils", "les", "leur", "eux"),
}
FR_REFL = ("me", "te", "se", "nous", "vous", "se")
DE_PRON = {
    "i": {"nom": "ich", "acc": "mich", "dat": "mir"},
    "you": {"nom": "du", "acc": "dich", "dat": "dir"},
    "he": {"nom": "er", "acc": "ihn", "dat": "ihm"},
    "she": {"nom": "sie", "acc": "sie", "dat": "ihr"},
    "we": {"nom": "wir", "acc": "uns", "dat": "uns"},
    "they": {"nom": "sie", "acc": "sie", "dat": "ihnen"},
}
DE_REFL = ("mich", "dich", "sich", "uns", "euch", "sich")

EN_PREP = {"in": "in", "on": "on", "under": "under", "behind": "behind",
           "in front of": "in front of", "next to": "next to", "with": "with", "at": "at", "to": "to"}
FR_PREP_DEFAULT = {"in": "dans", "on": "sur", "under": "sous", "behind": "derrière",
                   "in front of": "devant", "next to": "à côté de", "with": "avec"}
DE_PREP_DEFAULT = {"in": ("in", "dat"), "on": ("auf", "dat"), "under": ("unter", "dat"),
                   "behind": ("hinter", "dat"), "in front of": ("vor", "dat"),
                   "next to": ("neben", "dat"), "with": ("mit", "dat")}
LOCATIVE_PREPS = ("in", "on", "under", "behind", "in front of", "next to", "at")
PRONOUN_PREPS = ("with", "next to", "behind", "in front of")

# German articles and endings, keyed by (case, gender) with gender "pl" for plurals
_CASES = ("nom", "acc", "dat")
_GKEYS = ("m", "f", "n", "pl")


def _table(rows: str) -> dict[tuple[str, str], str]:
    out = {}
    for case, row in zip(_CASES, rows.split("|")):
        for g, ending in zip(_GKEYS, row.split()):
            out[(case, g)] = "" if ending == "-" else ending
    return out


DE_DEF = _table("der die das die | den die das die | dem der dem den")
DE_DIES_END = _table("er e es e | en e es e | em er em en")
DE_EIN_END = _table("- e - e | en e - e | em er em en")
DE_ADJ = {
    "weak": _table("e e e en | en e e en | en en en en"),
    "mixed": _table("er e es en | en e es en | en en en en"),
    "strong": _table("er e es e | en e es e | em er em en"),
}
# preposition + definite article contractions (standard written German)
DE_CONTRACT = {("in", "dem"): "im", ("an", "dem"): "am", ("zu", "dem"): "zum", ("zu", "der"): "zur",
               ("von", "dem"): "vom", ("bei", "dem"): "beim", ("in", "das"): "ins", ("an", "das"): "ans"}

# French words whose initial h (or vowel) blocks elision and liaison forms
FR_NO_ELISION = frozenset({"héros", "hamster", "haut", "haute", "hauts", "hautes", "huit", "onze", "hibou"})
_FR_VOWELS = set("aeiouyàâäéèêëîïôöûùüœæh")
FR_ELIDE = {"le": "l'", "la": "l'", "je": "j'", "me": "m'", "te": "t'", "se": "s'",
            "ne": "n'", "de": "d'", "que": "qu'"}


def fr_vowel_initial(word: str) -> bool:
    """True when a French word starts with a vowel sound that triggers elision (h muet included)."""
    w = word.lower()
    return bool(w) and w[0] in _FR_VOWELS and w not in FR_NO_ELISION


def en_vowel_initial(word: str) -> bool:
    w = word.lower()
    if w.startswith(("uni", "use", "eu", "one")):
        return False
    return w[:1] in {"a", "e", "i", "o", "u"}


# ---------------------------------------------------------------------------------------------
# Lexicon tables
# ---------------------------------------------------------------------------------------------
# Noun lines: English[/plural] | French gender [plural] | German gender plural [weak] | class | options
# options: P=preps (comma list, "front" = in front of, "next" = next to), tags=..., mass, hasp,
#          PREP=fr/de[+case] per-noun mapping for at/to/in/on (e.g. at=au bord de/an, to=à/in+acc)

_CLASS_PREPS = {
    "animal": ("with", "next", "behind", "front"),
    "person": ("with", "next", "behind", "front", "to"),
    "object": ("with", "next"),
    "food": (),
    "drink": (),
    "place": ("in", "behind", "front", "next"),
    "vehicle": ("in", "behind", "front", "next", "with"),
}
_PREP_CODES = {"in": "in", "on": "on", "under": "under", "behind": "behind", "front": "in front of",
               "next": "next to", "with": "with", "at": "at", "to": "to"}

_NOUNS = """
dog | chien m | Hund m Hunde | animal
cat | chat m | Katze f Katzen | animal
bird | oiseau m oiseaux | Vogel m Vögel | animal
horse | cheval m chevaux | Pferd n Pferde | animal
cow | vache f | Kuh f Kühe | animal
mouse/mice | souris f souris | Maus f Mäuse | animal
rabbit | lapin m | Kaninchen n Kaninchen | animal
fox | renard m | Fuchs m Füchse | animal
wolf/wolves | loup m | Wolf m Wölfe | animal
bear | ours m ours | Bär m Bären weak | animal
lion | lion m | Löwe m Löwen weak | animal
monkey | singe m | Affe m Affen weak | animal
elephant | éléphant m | Elefant m Elefanten weak | animal
duck | canard m | Ente f Enten | animal
pig | cochon m | Schwein n Schweine | animal
goat | chèvre f | Ziege f Ziegen | animal
frog | grenouille f | Frosch m Frösche | animal
snake | serpent m | Schlange f Schlangen | animal
owl | chouette f | Eule f Eulen | animal
hen | poule f | Henne f Hennen | animal
spider | araignée f | Spinne f Spinnen | animal
bee | abeille f | Biene f Bienen | animal
butterfly | papillon m | Schmetterling m Schmetterlinge | animal
donkey | âne m | Esel m Esel | animal
tiger | tigre m | Tiger m Tiger | animal
squirrel | écureuil m | Eichhörnchen n Eichhörnchen | animal
turtle | tortue f | Schildkröte f Schildkröten | animal
goose/geese | oie f | Gans f Gänse | animal
shark | requin m | Hai m Haie | animal
hamster | hamster m | Hamster m Hamster | animal | hasp
man/men | homme m | Mann m Männer | person
woman/women | femme f | Frau f Frauen | person
boy | garçon m | Junge m Jungen weak | person
girl | fille f | Mädchen n Mädchen | person
child/children | enfant m | Kind n Kinder | person | tags=feed
baby | bébé m | Baby n Babys | person | tags=feed
teacher | professeur m | Lehrer m Lehrer | person
doctor | médecin m | Arzt m Ärzte | person
student | étudiant m | Student m Studenten weak | person
friend | ami m | Freund m Freunde | person
neighbour | voisin m | Nachbar m Nachbarn weak | person
farmer | fermier m | Bauer m Bauern weak | person
king | roi m | König m Könige | person
queen | reine f | Königin f Königinnen | person
cook | cuisinier m | Koch m Köche | person
baker | boulanger m | Bäcker m Bäcker | person
police officer | policier m | Polizist m Polizisten weak | person
soldier | soldat m | Soldat m Soldaten weak | person
grandmother | grand-mère f grands-mères | Großmutter f Großmütter | person
grandfather | grand-père m grands-pères | Großvater m Großväter | person
mother | mère f | Mutter f Mütter | person
father | père m | Vater m Väter | person
brother | frère m | Bruder m Brüder | person
sister | sœur f | Schwester f Schwestern | person
uncle | oncle m | Onkel m Onkel | person
aunt | tante f | Tante f Tanten | person
driver | chauffeur m | Fahrer m Fahrer | person
prince | prince m | Prinz m Prinzen weak | person
princess | princesse f | Prinzessin f Prinzessinnen | person
musician | musicien m | Musiker m Musiker | person
writer | écrivain m | Schriftsteller m Schriftsteller | person
hero/heroes | héros m héros | Held m Helden weak | person | hasp
ball | balle f | Ball m Bälle | object | tags=throw,prize
book | livre m | Buch n Bücher | object | tags=open,write,media,prize,send
letter | lettre f | Brief m Briefe | object | tags=open,write,media,send
key | clé f | Schlüssel m Schlüssel | object | tags=throw
cup | tasse f | Tasse f Tassen | object | tags=break,container
glass | verre m | Glas n Gläser | object | tags=break,container
bottle | bouteille f | Flasche f Flaschen | object | tags=break,container,open
chair | chaise f | Stuhl m Stühle | object | P=on,under,next,behind,front | tags=build,break
table | table f | Tisch m Tische | object | P=on,under,next,behind,front,at | at=à/an | tags=build
door | porte f | Tür f Türen | object | P=behind,front,next,at | at=à/an | tags=open,tall
window | fenêtre f | Fenster n Fenster | object | P=behind,front,next,at | at=à/an | tags=open,break
box | boîte f | Schachtel f Schachteln | object | P=in,on,under,next,behind,front | tags=open,container,build,send
bag | sac m | Tasche f Taschen | object | P=in,next,with | tags=open,container
hat | chapeau m chapeaux | Hut m Hüte | object | P=with,under,next | tags=throw
shoe | chaussure f | Schuh m Schuhe | object | P=in,next
coat | manteau m manteaux | Mantel m Mäntel | object | P=with,under,next
picture | tableau m tableaux | Bild n Bilder | object | P=next,behind,front,with | tags=media,send
photo | photo f | Foto n Fotos | object | tags=media,send
song | chanson f | Lied n Lieder | object | P= | tags=media,write,learn
story | histoire f | Geschichte f Geschichten | object | P= | tags=media,write,learn
newspaper | journal m journaux | Zeitung f Zeitungen | object | P=with,under,next | tags=media
pen | stylo m | Stift m Stifte | object | tags=break,sharp
pencil | crayon m | Bleistift m Bleistifte | object | tags=break,sharp
phone | téléphone m | Telefon n Telefone | object | tags=break,send
computer | ordinateur m | Computer m Computer | object | P=with,next,behind,front
clock | horloge f | Uhr f Uhren | object | P=next,under,behind,front | tags=break
lamp | lampe f | Lampe f Lampen | object | P=next,under,behind,front | tags=break
bed | lit m | Bett n Betten | object | P=in,on,under,next,behind,front
knife/knives | couteau m couteaux | Messer n Messer | object | tags=sharp
spoon | cuillère f | Löffel m Löffel | object
plate | assiette f | Teller m Teller | object | P=on,next,under | tags=break
flower | fleur f | Blume f Blumen | object | tags=send
tree | arbre m | Baum m Bäume | object | P=in,under,behind,front,next | in=dans/auf | tags=tall
stone | pierre f | Stein m Steine | object | P=on,under,next,behind | tags=throw
leaf/leaves | feuille f | Blatt n Blätter | object | P=on,under,with
toy | jouet m | Spielzeug n Spielzeuge | object | tags=break,throw,send
gift | cadeau m cadeaux | Geschenk n Geschenke | object | tags=open,prize,send
ring | bague f | Ring m Ringe | object | tags=prize
umbrella | parapluie m | Regenschirm m Regenschirme | object | P=under,with | tags=open
map | carte f | Karte f Karten | object
ticket | billet m | Fahrkarte f Fahrkarten | object | tags=prize
basket | panier m | Korb m Körbe | object | P=in,next,with | tags=container
mirror | miroir m | Spiegel m Spiegel | object | P=in,behind,front,next | tags=break
bell | cloche f | Glocke f Glocken | object | P=with,next,under
candle | bougie f | Kerze f Kerzen | object
shirt | chemise f | Hemd n Hemden | object
dress | robe f | Kleid n Kleider | object
rope | corde f | Seil n Seile | object
wheel | roue f | Rad n Räder | object
carpet | tapis m tapis | Teppich m Teppiche | object | P=on,under
sofa | canapé m | Sofa n Sofas | object | P=on,under,behind,next,front
blanket | couverture f | Decke f Decken | object | P=under,on,with
ladder | échelle f | Leiter f Leitern | object | P=on,under,next,with | tags=tall,build
prize | prix m prix | Preis m Preise | object | P= | tags=prize
apple | pomme f | Apfel m Äpfel | food | tags=throw
bread | pain m | Brot n Brote | food
cake | gâteau m gâteaux | Kuchen m Kuchen | food | tags=prize
egg | œuf m | Ei n Eier | food | tags=break,throw
cheese | fromage m | Käse m Käse | food
banana | banane f | Banane f Bananen | food
carrot | carotte f | Karotte f Karotten | food
soup | soupe f | Suppe f Suppen | food
pear | poire f | Birne f Birnen | food
cherry | cerise f | Kirsche f Kirschen | food
tomato/tomatoes | tomate f | Tomate f Tomaten | food
sausage | saucisse f | Wurst f Würste | food
cookie | biscuit m | Keks m Kekse | food
pizza | pizza f | Pizza f Pizzas | food
orange | orange f | Orange f Orangen | food | tags=throw
water | eau f eaux | Wasser n - | drink | mass
milk | lait m | Milch f - | drink | mass
coffee | café m | Kaffee m - | drink | mass
tea | thé m | Tee m - | drink | mass
juice | jus m jus | Saft m - | drink | mass
garden | jardin m | Garten m Gärten | place | to=à/in+acc
house | maison f | Haus n Häuser | place | tags=build,tall,clean
kitchen | cuisine f | Küche f Küchen | place | P=in | to=dans/in+acc | tags=clean
school | école f | Schule f Schulen | place | P=in,behind,front,next,at | at=à/in | to=à/zu
park | parc m | Park m Parks | place | P=in,next,front | to=à/in+acc
forest | forêt f | Wald m Wälder | place | P=in,behind,front,next | to=dans/in+acc
river | rivière f | Fluss m Flüsse | place | P=in,next,at | at=au bord de/an | to=à/zu
lake | lac m | See m Seen | place | P=in,at | at=au bord de/an | to=à/zu
beach | plage f | Strand m Strände | place | P=on | on=sur/an | to=à/an+acc
street | rue f | Straße f Straßen | place | P=in | in=dans/auf
city/cities | ville f | Stadt f Städte | place | P=in
village | village m | Dorf n Dörfer | place | P=in | to=à/in+acc
station | gare f | Bahnhof m Bahnhöfe | place | P=in,behind,front,next,at | at=à/an | to=à/zu
market | marché m | Markt m Märkte | place | P=at | at=à/auf | to=à/zu
shop | magasin m | Laden m Läden | place | to=à/in+acc
church | église f | Kirche f Kirchen | place | to=à/zu | tags=tall
hospital | hôpital m hôpitaux | Krankenhaus n Krankenhäuser | place | to=à/in+acc
library | bibliothèque f | Bibliothek f Bibliotheken | place | to=à/in+acc
bank | banque f | Bank f Banken | place | to=à/zu
castle | château m châteaux | Schloss n Schlösser | place | to=à/zu | tags=build,tall
bridge | pont m | Brücke f Brücken | place | P=on,under,next | tags=build,tall
field | champ m | Feld n Felder | place | P=in | in=dans/auf
mountain | montagne f | Berg m Berge | place | P=on | on=sur/auf | tags=tall
hill | colline f | Hügel m Hügel | place | P=on | on=sur/auf | tags=tall
island | île f | Insel f Inseln | place | P=on | on=sur/auf
restaurant | restaurant m | Restaurant n Restaurants | place | to=à/in+acc
hotel | hôtel m | Hotel n Hotels | place | to=à/zu
farm | ferme f | Bauernhof m Bauernhöfe | place | P=at | at=à/auf | to=à/zu
room | chambre f | Zimmer n Zimmer | place | P=in | to=dans/in+acc | tags=clean
office | bureau m bureaux | Büro n Büros | place | P=in | to=à/in+acc | tags=clean
tower | tour f | Turm m Türme | place | P=in,on,behind,front,next | on=sur/auf | tags=build,tall
roof | toit m | Dach n Dächer | place | P=on | on=sur/auf
car | voiture f | Auto n Autos | vehicle | tags=drive
bicycle | vélo m | Fahrrad n Fahrräder | vehicle | P=with,next,on | on=sur/auf
boat | bateau m bateaux | Boot n Boote | vehicle | P=in,on,with,next | on=sur/auf | tags=build,drive
train | train m | Zug m Züge | vehicle | P=in,with | tags=drive
bus/buses | bus m bus | Bus m Busse | vehicle | tags=drive
truck | camion m | Lastwagen m Lastwagen | vehicle | tags=drive
plane | avion m | Flugzeug n Flugzeuge | vehicle | P=in,with
"""

# Adjective lines: English | French forms (m [f [mpl [fpl [m-before-vowel]]]]) | German [inflection stem] | kind | ok
#   kind: pre (French before the noun), color, other.  ok: noun classes/tags it can describe
_ANY = "animal,person,object,food,place,vehicle"
_THING = "object,food,place,vehicle"
_ANIM = "animal,person"
_ADJS = f"""
big | grand | groß | pre | {_ANY}
small | petit | klein | pre | {_ANY}
good | bon bonne | gut | pre | {_ANY},drink
bad | mauvais mauvaise mauvais mauvaises | schlecht | pre | {_ANY},drink
old | vieux vieille vieux vieilles vieil | alt | pre | {_ANY}
new | nouveau nouvelle nouveaux nouvelles nouvel | neu | pre | {_ANY}
beautiful | beau belle beaux belles bel | schön | pre | {_ANY}
young | jeune | jung | pre | {_ANIM}
pretty | joli | hübsch | pre | {_ANY}
fat | gros grosse gros grosses | dick | pre | {_ANIM}
long | long longue longs longues | lang | pre | object,vehicle,place,food
high | haut haute hauts hautes | hoch hoh | pre | tall
red | rouge | rot | color | animal,object,vehicle,food,place
blue | bleu | blau | color | animal,object,vehicle,place
green | vert | grün | color | animal,object,vehicle,food,place
yellow | jaune | gelb | color | animal,object,vehicle,food,place
black | noir | schwarz | color | animal,object,vehicle,place
white | blanc blanche | weiß | color | animal,object,vehicle,food,place
grey | gris grise gris grises | grau | color | animal,object,vehicle,place
brown | brun | braun | color | animal,object,vehicle,food
happy | heureux heureuse heureux heureuses | glücklich | other | {_ANIM}
sad | triste | traurig | other | {_ANIM}
tired | fatigué | müde | other | {_ANIM}
hungry | affamé | hungrig | other | {_ANIM}
sick | malade | krank | other | {_ANIM}
clean | propre | sauber | other | object,vehicle,place
dirty | sale | schmutzig | other | object,vehicle,place,animal
fast | rapide | schnell | other | animal,vehicle
slow | lent | langsam | other | animal,vehicle
heavy | lourd | schwer | other | object,vehicle,food
light | léger légère légers légères | leicht | other | object,vehicle,food
cold | froid | kalt | other | food,drink,place,object
warm | chaud | warm | other | food,drink,place,object
strong | fort | stark | other | {_ANIM},drink
weak | faible | schwach | other | {_ANIM}
rich | riche | reich | other | person
poor | pauvre | arm | other | person
calm | calme | ruhig | other | {_ANIM},place
loud | bruyant | laut | other | {_ANIM},vehicle,place
funny | drôle | lustig | other | {_ANIM},media
clever | intelligent | klug | other | {_ANIM}
curious | curieux curieuse curieux curieuses | neugierig | other | {_ANIM}
dangerous | dangereux dangereuse dangereux dangereuses | gefährlich | other | animal,place,vehicle,sharp
shy | timide | schüchtern | other | {_ANIM}
proud | fier fière fiers fières | stolz | other | {_ANIM}
expensive | cher chère chers chères | teuer teur | other | object,vehicle,food,place
empty | vide | leer | other | container,place
full | plein | voll | other | container,place
wet | mouillé | nass | other | animal,object,place
dry | sec sèche secs sèches | trocken | other | object,place,food
dark | sombre | dunkel dunkl | other | place,object
kind | gentil gentille gentils gentilles | nett | other | {_ANIM}
angry | fâché | wütend | other | {_ANIM}
interesting | intéressant | interessant | other | media,person,place
ugly | laid | hässlich | other | {_ANY}
famous | célèbre | berühmt | other | person,animal,place,media
soft | doux douce doux douces | weich | other | object,food
round | rond | rund | other | object,food
strange | étrange | seltsam | other | {_ANY}
lazy | paresseux paresseuse paresseux paresseuses | faul | other | {_ANIM}
brave | courageux courageuse courageux courageuses | mutig | other | {_ANIM}
fresh | frais fraîche frais fraîches | frisch | other | food,drink
sweet | sucré | süß | other | food,drink
wild | sauvage | wild | other | animal
polite | poli | höflich | other | person
sharp | tranchant | scharf | other | sharp
busy | occupé | beschäftigt | other | person
"""


def _V(key, past, kind, subj, obj, fr, de, *, fr_pres=None, fr_fut=None, fr_pp=None, fr_aux="avoir",
       fr_obj="dir", fr_refl=False, fr_imp=None, fr_cls=None, de_pres=None, de_pp="", de_aux="haben",
       de_obj="acc", de_refl=False, en_3sg=None, needs_pp=False, pron_obj=True, indef_obj=True):
    """Compact verb constructor; fills regular French and German forms."""
    words = key.split()
    base = words[0]
    particle = words[1] if len(words) > 1 and words[1] in ("up", "back") else ""
    en_prep = words[1] if len(words) > 1 and not particle else ""
    # French
    fr_pres_t, fr_fut_s, fr_pp_s = _fr_regular(fr, fr_cls)
    if fr_pres:
        fr_pres_t = tuple(fr_pres.split())
    if fr_imp is True:  # imparfait stem from the nous form
        fr_imp = fr_pres_t[3][:-3]
    # German
    prefix, _, de_base = de.rpartition("|")
    de_pres_t = _de_regular(de_base)
    if de_pres:
        forms = de_pres.split()
        if len(forms) == 2:
            de_pres_t = (de_pres_t[0], forms[0], forms[1], *de_pres_t[3:])
        else:
            de_pres_t = tuple(forms)
    prep, _, case = de_obj.rpartition("+")
    return Verb(
        key=key, en=base, en_3sg=en_3sg or _en_3sg(base), en_past=past, en_particle=particle,
        en_prep=en_prep, kind=kind, subj=frozenset(subj.split(",")), obj=frozenset(obj.split(",")) if obj else frozenset(),
        fr_inf=fr, fr_pres=fr_pres_t, fr_fut=fr_fut or fr_fut_s, fr_pp=fr_pp or fr_pp_s, fr_aux=fr_aux,
        fr_obj=fr_obj, fr_refl=fr_refl, fr_imp=fr_imp,
        de_inf=prefix + de_base, de_prefix=prefix, de_pres=de_pres_t, de_pp=de_pp, de_aux=de_aux,
        de_obj=(prep, case), de_refl=de_refl, needs_pp=needs_pp, pron_obj=pron_obj, indef_obj=indef_obj,
    )


def _en_3sg(base: str) -> str:
    if base == "have":
        return "has"
    if base.endswith(("s", "x", "z", "ch", "sh")) or base in ("go", "do"):
        return base + "es"
    if base.endswith("y") and base[-2] not in "aeiou":
        return base[:-1] + "ies"
    return base + "s"


def _fr_regular(inf: str, cls: str | None) -> tuple[tuple[str, ...], str, str]:
    """Present (6 persons), future stem and participle of a regular French verb."""
    stem = inf[:-2]
    if cls == "ir":  # finir
        return (tuple(stem + e for e in ("is", "is", "it", "issons", "issez", "issent")), inf, stem + "i")
    if inf.endswith("re"):  # vendre
        return (tuple(stem + e for e in ("s", "s", "", "ons", "ez", "ent")), inf[:-1], stem + "u")
    nous = stem + ("eons" if stem.endswith("g") else "ons")
    if stem.endswith("c"):
        nous = stem[:-1] + "çons"
    return ((stem + "e", stem + "es", stem + "e", nous, stem + "ez", stem + "ent"), inf, stem + "é")


def _de_regular(inf: str) -> tuple[str, ...]:
    """Present (6 persons) of a regular German verb (without separable prefix)."""
    if inf.endswith(("eln", "ern")):
        stem = inf[:-1]
        ich = stem[:-2] + "le" if inf.endswith("eln") else stem + "e"
        return (ich, stem + "st", stem + "t", inf, stem + "t", inf)
    stem = inf[:-2]
    if stem.endswith(("t", "d", "fn", "chn", "gn", "tm", "dm")):
        return (stem + "e", stem + "est", stem + "et", inf, stem + "et", inf)
    du = stem + ("t" if stem.endswith(("s", "ß", "z", "x")) else "st")
    return (stem + "e", du, stem + "t", inf, stem + "t", inf)


_OBJ_ALL = "animal,person,object,food,vehicle"
_VERBS = [
    # ---- transitive -------------------------------------------------------------------------
    _V("see", "saw", "tr", "animal,person", _OBJ_ALL + ",place", "voir", "sehen",
       fr_pres="vois vois voit voyons voyez voient", fr_fut="verr", fr_pp="vu",
       de_pres="siehst sieht", de_pp="gesehen"),
    _V("eat", "ate", "tr", "animal,person", "food", "manger", "essen", de_pres="isst isst", de_pp="gegessen"),
    _V("drink", "drank", "tr", "animal,person", "drink", "boire", "trinken",
       fr_pres="bois bois boit buvons buvez boivent", fr_fut="boir", fr_pp="bu", de_pp="getrunken"),
    _V("find", "found", "tr", "animal,person", _OBJ_ALL, "trouver", "finden", de_pp="gefunden"),
    _V("take", "took", "tr", "animal,person", "object,food,drink", "prendre", "nehmen",
       fr_pres="prends prends prend prenons prenez prennent", fr_fut="prendr", fr_pp="pris",
       de_pres="nimmst nimmt", de_pp="genommen"),
    _V("carry", "carried", "tr", "animal,person", "object,food,animal", "porter", "tragen",
       de_pres="trägst trägt", de_pp="getragen"),
    _V("open", "opened", "tr", "animal,person", "open", "ouvrir", "öffnen",
       fr_pres="ouvre ouvres ouvre ouvrons ouvrez ouvrent", fr_fut="ouvrir", fr_pp="ouvert", de_pp="geöffnet"),
    _V("close", "closed", "tr", "animal,person", "open", "fermer", "schließen", de_pp="geschlossen"),
    _V("buy", "bought", "tr", "person", "object,food,drink,vehicle,animal", "acheter", "kaufen",
       fr_pres="achète achètes achète achetons achetez achètent", fr_fut="achèter", de_pp="gekauft"),
    _V("sell", "sold", "tr", "person", "object,food,vehicle,animal", "vendre", "verkaufen", de_pp="verkauft"),
    _V("write", "wrote", "tr", "person", "write", "écrire", "schreiben",
       fr_pres="écris écris écrit écrivons écrivez écrivent", fr_fut="écrir", fr_pp="écrit", de_pp="geschrieben"),
    _V("wash", "washed", "tr", "person", "object,vehicle,animal,person", "laver", "waschen",
       de_pres="wäschst wäscht", de_pp="gewaschen"),
    _V("call", "called", "tr", "person", "person", "appeler", "an|rufen",
       fr_pres="appelle appelles appelle appelons appelez appellent", fr_fut="appeller", de_pp="angerufen"),
    _V("invite", "invited", "tr", "person", "person,animal", "inviter", "ein|laden",
       de_pres="lädst lädt", de_pp="eingeladen"),
    _V("follow", "followed", "tr", "animal,person", "animal,person,vehicle", "suivre", "folgen",
       fr_pres="suis suis suit suivons suivez suivent", fr_fut="suivr", fr_pp="suivi",
       de_pp="gefolgt", de_aux="sein", de_obj="dat"),
    _V("help", "helped", "tr", "animal,person", "animal,person", "aider", "helfen",
       de_pres="hilfst hilft", de_pp="geholfen", de_obj="dat"),
    _V("thank", "thanked", "tr", "person", "person", "remercier", "danken", de_pp="gedankt", de_obj="dat"),
    _V("answer", "answered", "tr", "person", "person", "répondre", "antworten", fr_obj="ind",
       de_pp="geantwortet", de_obj="dat"),
    _V("hear", "heard", "tr", "animal,person", "animal,person,vehicle", "entendre", "hören", de_pp="gehört"),
    _V("meet", "met", "tr", "animal,person", "animal,person", "rencontrer", "treffen",
       de_pres="triffst trifft", de_pp="getroffen"),
    _V("wait for", "waited", "tr", "animal,person", "animal,person,vehicle", "attendre", "warten",
       de_pp="gewartet", de_obj="auf+acc"),
    _V("look for", "looked", "tr", "animal,person", _OBJ_ALL, "chercher", "suchen", de_pp="gesucht"),
    _V("look at", "looked", "tr", "animal,person", _OBJ_ALL + ",place", "regarder", "an|sehen",
       de_pres="siehst sieht", de_pp="angesehen"),
    _V("listen to", "listened", "tr", "animal,person", "animal,person", "écouter", "zu|hören",
       de_pp="zugehört", de_obj="dat"),
    _V("love", "loved", "tr", "animal,person", "animal,person,food,place", "aimer", "lieben",
       fr_imp=True, de_pp="geliebt", indef_obj=False),
    _V("like", "liked", "tr", "animal,person", "animal,person,food,drink,place,object", "apprécier", "mögen",
       fr_imp=True, de_pres="mag magst mag mögen mögt mögen", de_pp="gemocht", indef_obj=False),
    _V("hate", "hated", "tr", "animal,person", "animal,person,food,drink,place", "détester", "hassen",
       fr_imp=True, de_pp="gehasst", indef_obj=False),
    _V("know", "knew", "tr", "animal,person", "animal,person,place,learn", "connaître", "kennen",
       fr_pres="connais connais connaît connaissons connaissez connaissent", fr_fut="connaîtr",
       fr_pp="connu", fr_imp=True, de_pp="gekannt"),
    _V("have", "had", "tr", "animal,person", "object,food,animal,vehicle", "avoir", "haben",
       fr_pres="ai as a avons avez ont", fr_fut="aur", fr_pp="eu", fr_imp="av",
       de_pres="habe hast hat haben habt haben", de_pp="gehabt", pron_obj=False),
    _V("paint", "painted", "tr", "person", _OBJ_ALL + ",place", "peindre", "malen",
       fr_pres="peins peins peint peignons peignez peignent", fr_fut="peindr", fr_pp="peint", de_pp="gemalt"),
    _V("draw", "drew", "tr", "person", _OBJ_ALL + ",place", "dessiner", "zeichnen", de_pp="gezeichnet"),
    _V("cook", "cooked", "tr", "person", "food", "cuisiner", "kochen", de_pp="gekocht"),
    _V("catch", "caught", "tr", "animal,person", "animal,throw", "attraper", "fangen",
       de_pres="fängst fängt", de_pp="gefangen"),
    _V("throw", "threw", "tr", "person", "throw", "lancer", "werfen", de_pres="wirfst wirft", de_pp="geworfen"),
    _V("push", "pushed", "tr", "animal,person", "object,vehicle,animal,person", "pousser", "schieben",
       de_pp="geschoben"),
    _V("pull", "pulled", "tr", "animal,person", "object,vehicle,animal,person", "tirer", "ziehen", de_pp="gezogen"),
    _V("kiss", "kissed", "tr", "animal,person", "animal,person", "embrasser", "küssen", de_pp="geküsst"),
    _V("forget", "forgot", "tr", "animal,person", "object,person,food", "oublier", "vergessen",
       de_pres="vergisst vergisst", de_pp="vergessen"),
    _V("understand", "understood", "tr", "animal,person", "animal,person,media", "comprendre", "verstehen",
       fr_pres="comprends comprends comprend comprenons comprenez comprennent", fr_fut="comprendr",
       fr_pp="compris", de_pp="verstanden"),
    _V("build", "built", "tr", "animal,person", "build", "construire", "bauen",
       fr_pres="construis construis construit construisons construisez construisent", fr_fut="construir",
       fr_pp="construit", de_pp="gebaut"),
    _V("break", "broke", "tr", "animal,person", "break", "casser", "zerbrechen",
       de_pres="zerbrichst zerbricht", de_pp="zerbrochen"),
    _V("repair", "repaired", "tr", "person", "object,vehicle", "réparer", "reparieren", de_pp="repariert"),
    _V("clean", "cleaned", "tr", "person", "object,vehicle,clean", "nettoyer", "putzen",
       fr_pres="nettoie nettoies nettoie nettoyons nettoyez nettoient", fr_fut="nettoier", de_pp="geputzt"),
    _V("hide", "hid", "tr", "animal,person", "object,food,animal", "cacher", "verstecken", de_pp="versteckt"),
    _V("bring", "brought", "tr", "animal,person", "object,food,drink,animal", "apporter", "bringen",
       de_pp="gebracht"),
    _V("send", "sent", "tr", "person", "send", "envoyer", "schicken",
       fr_pres="envoie envoies envoie envoyons envoyez envoient", fr_fut="enverr", de_pp="geschickt"),
    _V("touch", "touched", "tr", "animal,person", _OBJ_ALL, "toucher", "berühren", de_pp="berührt"),
    _V("bite", "bit", "tr", "animal", "animal,person,object,food", "mordre", "beißen", de_pp="gebissen"),
    _V("feed", "fed", "tr", "person", "animal,feed", "nourrir", "füttern", fr_cls="ir", de_pp="gefüttert"),
    _V("choose", "chose", "tr", "animal,person", "object,food,drink,animal,vehicle", "choisir", "wählen",
       fr_cls="ir", de_pp="gewählt"),
    _V("drive", "drove", "tr", "person", "drive", "conduire", "fahren",
       fr_pres="conduis conduis conduit conduisons conduisez conduisent", fr_fut="conduir", fr_pp="conduit",
       de_pres="fährst fährt", de_pp="gefahren"),
    _V("watch", "watched", "tr", "animal,person", "animal,person,vehicle", "observer", "beobachten",
       de_pp="beobachtet"),
    _V("count", "counted", "tr", "person", "animal,person,object,food", "compter", "zählen", de_pp="gezählt"),
    _V("order", "ordered", "tr", "person", "food,drink", "commander", "bestellen", de_pp="bestellt"),
    _V("win", "won", "tr", "animal,person", "prize", "gagner", "gewinnen", de_pp="gewonnen"),
    _V("lose", "lost", "tr", "animal,person", "object", "perdre", "verlieren", de_pp="verloren"),
    _V("use", "used", "tr", "person", "object,vehicle", "utiliser", "benutzen", de_pp="benutzt"),
    _V("fill", "filled", "tr", "person", "container", "remplir", "füllen", fr_cls="ir", de_pp="gefüllt"),
    _V("greet", "greeted", "tr", "animal,person", "animal,person", "saluer", "begrüßen", de_pp="begrüßt"),
    _V("protect", "protected", "tr", "animal,person", "animal,person,place", "protéger", "schützen",
       fr_pres="protège protèges protège protégeons protégez protègent", fr_fut="protéger", de_pp="geschützt"),
    _V("describe", "described", "tr", "person", _OBJ_ALL + ",place", "décrire", "beschreiben",
       fr_pres="décris décris décrit décrivons décrivez décrivent", fr_fut="décrir", fr_pp="décrit",
       de_pp="beschrieben"),
    _V("learn", "learned", "tr", "animal,person", "learn", "apprendre", "lernen",
       fr_pres="apprends apprends apprend apprenons apprenez apprennent", fr_fut="apprendr", fr_pp="appris",
       de_pp="gelernt"),
    _V("hold", "held", "tr", "animal,person", "object,food,animal", "tenir", "halten",
       fr_pres="tiens tiens tient tenons tenez tiennent", fr_fut="tiendr", fr_pp="tenu",
       de_pres="hältst hält", de_pp="gehalten"),
    _V("borrow", "borrowed", "tr", "person", "object,vehicle", "emprunter", "aus|leihen", de_pp="ausgeliehen"),
    _V("talk to", "talked", "tr", "animal,person", "animal,person", "parler", "sprechen", fr_obj="ind",
       de_pres="sprichst spricht", de_pp="gesprochen", de_obj="mit+dat"),
    _V("smile at", "smiled", "tr", "animal,person", "animal,person", "sourire", "an|lächeln", fr_obj="ind",
       fr_pres="souris souris sourit sourions souriez sourient", fr_fut="sourir", fr_pp="souri",
       de_pp="angelächelt"),
    _V("obey", "obeyed", "tr", "animal,person", "person", "obéir", "gehorchen", fr_cls="ir", fr_obj="ind",
       de_pp="gehorcht", de_obj="dat"),
    _V("believe", "believed", "tr", "animal,person", "person", "croire", "glauben",
       fr_pres="crois crois croit croyons croyez croient", fr_fut="croir", fr_pp="cru",
       de_pp="geglaubt", de_obj="dat"),
    _V("chase", "chased", "tr", "animal,person", "animal,person,vehicle", "poursuivre", "verfolgen",
       fr_pres="poursuis poursuis poursuit poursuivons poursuivez poursuivent", fr_fut="poursuivr",
       fr_pp="poursuivi", de_pp="verfolgt"),
    # ---- intransitive -----------------------------------------------------------------------
    _V("sleep", "slept", "intr", "animal,person", "", "dormir", "schlafen",
       fr_pres="dors dors dort dormons dormez dorment", fr_fut="dormir", fr_pp="dormi",
       de_pres="schläfst schläft", de_pp="geschlafen"),
    _V("play", "played", "intr", "animal,person", "", "jouer", "spielen", de_pp="gespielt"),
    _V("sing", "sang", "intr", "animal,person", "", "chanter", "singen", de_pp="gesungen"),
    _V("dance", "danced", "intr", "animal,person", "", "danser", "tanzen", de_pp="getanzt"),
    _V("work", "worked", "intr", "person", "", "travailler", "arbeiten", de_pp="gearbeitet"),
    _V("laugh", "laughed", "intr", "animal,person", "", "rire", "lachen",
       fr_pres="ris ris rit rions riez rient", fr_fut="rir", fr_pp="ri", de_pp="gelacht"),
    _V("cry", "cried", "intr", "animal,person", "", "pleurer", "weinen", de_pp="geweint"),
    _V("wait", "waited", "intr", "animal,person", "", "attendre", "warten", de_pp="gewartet"),
    _V("live", "lived", "intr", "animal,person", "", "habiter", "wohnen", de_pp="gewohnt", needs_pp=True),
    _V("smile", "smiled", "intr", "animal,person", "", "sourire", "lächeln",
       fr_pres="souris souris sourit sourions souriez sourient", fr_fut="sourir", fr_pp="souri",
       de_pp="gelächelt"),
    _V("swim", "swam", "intr", "animal,person", "", "nager", "schwimmen", de_pp="geschwommen", de_aux="sein"),
    _V("jump", "jumped", "intr", "animal,person", "", "sauter", "springen", de_pp="gesprungen", de_aux="sein"),
    _V("fall", "fell", "intr", "animal,person,object,food", "", "tomber", "fallen", fr_aux="être",
       de_pres="fällst fällt", de_pp="gefallen", de_aux="sein"),
    _V("stay", "stayed", "intr", "animal,person,object,vehicle", "", "rester", "bleiben", fr_aux="être",
       de_pp="geblieben", de_aux="sein"),
    _V("travel", "travelled", "intr", "animal,person", "", "voyager", "reisen", de_pp="gereist", de_aux="sein"),
    _V("rest", "rested", "intr", "animal,person", "", "reposer", "aus|ruhen", fr_refl=True, de_refl=True,
       de_pp="ausgeruht"),
    _V("hurry", "hurried", "intr", "animal,person", "", "dépêcher", "beeilen", fr_refl=True, de_refl=True,
       de_pp="beeilt"),
    _V("wake up", "woke", "intr", "animal,person", "", "réveiller", "auf|wachen", fr_refl=True,
       de_pp="aufgewacht", de_aux="sein"),
    _V("get up", "got", "intr", "animal,person", "", "lever", "auf|stehen", fr_refl=True,
       fr_pres="lève lèves lève levons levez lèvent", fr_fut="lèver", de_pp="aufgestanden", de_aux="sein"),
    _V("listen", "listened", "intr", "animal,person", "", "écouter", "zu|hören", de_pp="zugehört"),
    _V("shout", "shouted", "intr", "animal,person", "", "crier", "schreien", de_pp="geschrien"),
    _V("climb", "climbed", "intr", "animal,person", "", "grimper", "klettern", de_pp="geklettert",
       de_aux="sein"),
    _V("whistle", "whistled", "intr", "animal,person", "", "siffler", "pfeifen", de_pp="gepfiffen"),
    _V("think", "thought", "intr", "animal,person", "", "réfléchir", "nach|denken", fr_cls="ir",
       de_pp="nachgedacht"),
    _V("disappear", "disappeared", "intr", "animal,person,object,vehicle,food", "", "disparaître",
       "verschwinden", fr_pres="disparais disparais disparaît disparaissons disparaissez disparaissent",
       fr_fut="disparaîtr", fr_pp="disparu", de_pp="verschwunden", de_aux="sein"),
    _V("fly", "flew", "intr", "animal", "", "voler", "fliegen", de_pp="geflogen", de_aux="sein"),
    _V("leave", "left", "intr", "animal,person", "", "partir", "weg|gehen",
       fr_pres="pars pars part partons partez partent", fr_fut="partir", fr_pp="parti", fr_aux="être",
       de_pp="weggegangen", de_aux="sein"),
    _V("arrive", "arrived", "intr", "animal,person,vehicle", "", "arriver", "an|kommen", fr_aux="être",
       de_pp="angekommen", de_aux="sein"),
    # ---- motion (take a "to" destination) -----------------------------------------------------
    _V("go", "went", "motion", "animal,person", "", "aller", "gehen",
       fr_pres="vais vas va allons allez vont", fr_fut="ir", fr_pp="allé", fr_aux="être",
       de_pp="gegangen", de_aux="sein"),
    _V("come", "came", "motion", "animal,person", "", "venir", "kommen",
       fr_pres="viens viens vient venons venez viennent", fr_fut="viendr", fr_pp="venu", fr_aux="être",
       de_pp="gekommen", de_aux="sein"),
    _V("run", "ran", "motion", "animal,person", "", "courir", "laufen",
       fr_pres="cours cours court courons courez courent", fr_fut="courr", fr_pp="couru",
       de_pres="läufst läuft", de_pp="gelaufen", de_aux="sein"),
    _V("come back", "came", "motion", "animal,person", "", "revenir", "zurück|kommen",
       fr_pres="reviens reviens revient revenons revenez reviennent", fr_fut="reviendr", fr_pp="revenu",
       fr_aux="être", de_pp="zurückgekommen", de_aux="sein"),
]

FR_ETRE = {"present": ("suis", "es", "est", "sommes", "êtes", "sont"),
           "past": ("étais", "étais", "était", "étions", "étiez", "étaient"),
           "future": ("serai", "seras", "sera", "serons", "serez", "seront")}
FR_AVOIR = ("ai", "as", "a", "avons", "avez", "ont")
FR_FUT_END = ("ai", "as", "a", "ons", "ez", "ont")
FR_IMP_END = ("ais", "ais", "ait", "ions", "iez", "aient")
DE_SEIN = {"present": ("bin", "bist", "ist", "sind", "seid", "sind"),
           "past": ("war", "warst", "war", "waren", "wart", "waren")}
DE_HABEN = ("habe", "hast", "hat", "haben", "habt", "haben")
DE_WERDEN = ("werde", "wirst", "wird", "werden", "werdet", "werden")
EN_BE = {"present": ("am", "are", "is", "are", "are", "are"),
         "past": ("was", "were", "was", "were", "were", "were")}
TENSES = ("present", "past", "future")


def _parse_nouns(text: str) -> dict[str, Noun]:
    nouns: dict[str, Noun] = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split("|")]
        en_f, fr_f, de_f, cls = parts[:4]
        opts = parts[4:]
        en, _, en_pl = en_f.partition("/")
        if not en_pl:
            en_pl = _en_plural(en)
        fr_w = fr_f.split()
        fr, fr_g = fr_w[0], fr_w[1]
        fr_pl = fr_w[2] if len(fr_w) > 2 else (fr if fr.endswith(("s", "x", "z")) else fr + "s")
        de_w = de_f.split()
        de, de_g, de_pl = de_w[0], de_w[1], de_w[2]
        weak = len(de_w) > 3 and de_w[3] == "weak"
        preps = list(_CLASS_PREPS[cls])
        tags: set[str] = set()
        fr_prep: dict[str, str] = {}
        de_prep: dict[str, tuple[str, str]] = {}
        mass = hasp = False
        for opt in opts:
            for item in opt.split(" | "):
                key, _, val = item.partition("=")
                key = key.strip()
                if key == "P":
                    preps = [p for p in val.split(",") if p] + (["to"] if "to" in preps else [])
                elif key == "tags":
                    tags.update(val.split(","))
                elif key == "mass":
                    mass = True
                elif key == "hasp":
                    hasp = True
                elif key in ("at", "to", "in", "on"):
                    f, _, d = val.rpartition("/")
                    dprep, _, dcase = d.partition("+")
                    fr_prep[key] = f
                    de_prep[key] = (dprep, dcase or "dat")
                    if key not in preps:
                        preps.append(key)
                else:
                    raise GrammarError(f"bad noun option {item!r} in line {line!r}")
        if cls == "person":
            fr_prep.setdefault("to", "chez")
            de_prep.setdefault("to", ("zu", "dat"))
        assert not hasp or fr in FR_NO_ELISION, fr
        nouns[en] = Noun(
            en=en, en_pl=en_pl, fr=fr, fr_g=fr_g, fr_pl=fr_pl, de=de, de_g=de_g,
            de_pl=None if de_pl == "-" else de_pl, de_obl=de_pl if weak else de, cls=cls,
            tags=frozenset(tags), preps=tuple(_PREP_CODES[p] for p in preps), fr_prep=fr_prep,
            de_prep=de_prep, mass=mass,
        )
    return nouns


def _en_plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        pl = last + "es"
    elif last.endswith("y") and last[-2] not in "aeiou":
        pl = last[:-1] + "ies"
    else:
        pl = last + "s"
    return f"{head} {pl}" if head else pl


def _parse_adjs(text: str) -> dict[str, Adj]:
    adjs: dict[str, Adj] = {}
    for line in text.strip().splitlines():
        en, fr_f, de_f, kind, ok = (p.strip() for p in line.split("|"))
        f = fr_f.split()
        m = f[0]
        fem = f[1] if len(f) > 1 else (m if m.endswith("e") else m + "e")
        mpl = f[2] if len(f) > 2 else (m if m.endswith(("s", "x")) else m + "s")
        fpl = f[3] if len(f) > 3 else fem + "s"
        mv = f[4] if len(f) > 4 else m
        d = de_f.split()
        de = d[0]
        stem = d[1] if len(d) > 1 else (de[:-1] if de.endswith("e") else de)
        adjs[en] = Adj(en=en, fr=(m, fem, mpl, fpl, mv), fr_pre=(kind == "pre"), de=de, de_stem=stem,
                       kind=kind, ok=frozenset(ok.split(",")))
    return adjs


# ---------------------------------------------------------------------------------------------
# The grammar
# ---------------------------------------------------------------------------------------------


class Grammar:
    """English -> French + German synchronous grammar. Stateless; all randomness comes from the rng."""

    name = "slimspeech-synthetic-grammar"
    version = "1.0"

    def __init__(self) -> None:
        self.nouns = _LEXICON[0]
        self.adjs = _LEXICON[1]
        self.verbs = _LEXICON[2]
        self._by_prep = _LEXICON[3]

    # ------------------------------------------------------------------ public API
    def sample(self, rng: random.Random) -> Sentence:
        return self.realize(self.sample_spec(rng))

    def realize(self, spec: Clause) -> Sentence:
        self._check(spec)
        return Sentence(en=self._en_clause(spec), fr=self._fr_clause(spec), de=self._de_clause(spec))

    def lexicon_size(self) -> int:
        """Number of distinct English words (word forms) the grammar can produce."""
        return len(self.vocabulary()["en"])

    def vocabulary(self) -> dict[str, set[str]]:
        """Every word form each language can produce: {"en": {...}, "fr": {...}, "de": {...}}.

        Words are the units of :func:`tokenize` (French elided forms such as ``l'`` count as words).
        """
        return {k: set(v) for k, v in _vocabulary().items()}

    # ------------------------------------------------------------------ checks
    def _check(self, c: Clause) -> None:
        if c.tense not in TENSES:
            raise GrammarError(f"unknown tense {c.tense!r}; use one of {TENSES}")
        if c.negative and c.question:
            raise GrammarError("negative questions are not supported; set negative or question, not both")
        if c.verb == "be":
            if (c.adj is None) == (c.pp is None):
                raise GrammarError("'be' needs exactly one of adj= or pp=")
            if c.obj is not None:
                raise GrammarError("'be' takes no object")
            if c.adj is not None and c.adj not in self.adjs:
                raise GrammarError(f"unknown adjective {c.adj!r}")
        else:
            if c.verb not in self.verbs:
                raise GrammarError(f"unknown verb {c.verb!r}")
            v = self.verbs[c.verb]
            if (v.kind == "tr") != (c.obj is not None):
                raise GrammarError(f"verb {c.verb!r} {'needs' if v.kind == 'tr' else 'takes no'} object")
            if c.adj is not None:
                raise GrammarError("adj= is only for 'be'")
        for np in (c.subject, c.obj, c.pp.np if c.pp else None):
            if np is not None:
                self._check_np(np)
        if c.pp is not None and c.pp.prep not in EN_PREP:
            raise GrammarError(f"unknown preposition {c.pp.prep!r}")
        if c.pp is not None and c.pp.np.pronoun is not None and c.pp.prep not in FR_PREP_DEFAULT:
            raise GrammarError(f"a pronoun cannot follow {c.pp.prep!r}")
        if c.pp is not None and c.pp.np.pronoun is None:
            n = self.nouns[c.pp.np.noun]
            if c.pp.prep in ("at", "to") and c.pp.prep not in n.fr_prep:
                raise GrammarError(f"noun {n.en!r} has no translation for {c.pp.prep!r}")

    def _check_np(self, np: NP) -> None:
        if np.pronoun is not None:
            if np.pronoun not in PRONOUNS or np.noun is not None:
                raise GrammarError(f"bad pronoun NP {np!r}")
            return
        if np.noun not in self.nouns:
            raise GrammarError(f"unknown noun {np.noun!r}")
        if np.det not in DETERMINERS:
            raise GrammarError(f"unknown determiner {np.det!r}")
        if np.det in NUMBERS or np.det == "some":
            if not np.plural:
                raise GrammarError(f"determiner {np.det!r} needs plural=True")
        if np.det == "a" and np.plural:
            raise GrammarError("determiner 'a' is singular")
        if np.plural and self.nouns[np.noun].mass:
            raise GrammarError(f"mass noun {np.noun!r} has no plural")
        for a in np.adjs:
            if a not in self.adjs:
                raise GrammarError(f"unknown adjective {a!r}")
        if len(np.adjs) > 2 or (len(np.adjs) == 2 and not (
                self.adjs[np.adjs[0]].fr_pre and not self.adjs[np.adjs[1]].fr_pre)):
            raise GrammarError("two adjectives must be a pre-nominal one (big, old, ...) then another")

    # ------------------------------------------------------------------ shared helpers
    @staticmethod
    def _person(np: NP) -> tuple[int, str | None, bool]:
        """(person index 0..5, French gender or None, plural) of a subject NP."""
        if np.pronoun:
            return PRONOUNS[np.pronoun]
        return (5 if np.plural else 2), None, np.plural

    # ================================================================== English
    def _en_np(self, np: NP, objective: bool = False) -> list[str]:
        if np.pronoun:
            return [EN_PRON[np.pronoun][1 if objective else 0]]
        n = self.nouns[np.noun]
        words = list(np.adjs) + (n.en_pl if np.plural else n.en).split()
        det = np.det
        if det == "the":
            d = ["the"]
        elif det == "a":
            d = ["an" if en_vowel_initial(words[0]) else "a"]
        elif det == "this":
            d = ["these" if np.plural else "this"]
        else:
            d = [det]
        return d + words

    def _en_clause(self, c: Clause) -> str:
        p, _, _ = self._person(c.subject)
        subj = self._en_np(c.subject)
        third_sg = p == 2
        tail: list[str] = []
        if c.verb == "be":
            if c.tense == "future":
                fin, rest = "will", ["be"]
            else:
                fin, rest = EN_BE[c.tense][p], []
            tail = [c.adj] if c.adj else self._en_pp(c.pp)
            if c.question:
                words = [fin] + subj + rest + tail
            else:
                words = subj + [fin] + (["not"] if c.negative else []) + rest + tail
            return self._finish(words, c.question, "")
        v = self.verbs[c.verb]
        after = [v.en_particle] if v.en_particle else []
        if c.obj is not None:
            after += ([v.en_prep] if v.en_prep else []) + self._en_np(c.obj, objective=True)
        if c.pp is not None:
            after += self._en_pp(c.pp)
        if c.tense == "future":
            aux = "will"
        elif c.negative or c.question:
            aux = "did" if c.tense == "past" else ("does" if third_sg else "do")
        else:
            aux = None
        if aux is None:
            form = v.en_past if c.tense == "past" else (v.en_3sg if third_sg else v.en)
            words = subj + [form] + after
        elif c.question:
            words = [aux] + subj + [v.en] + after
        else:
            words = subj + [aux] + (["not"] if c.negative else []) + [v.en] + after
        return self._finish(words, c.question, "")

    def _en_pp(self, pp: PP) -> list[str]:
        return EN_PREP[pp.prep].split() + self._en_np(pp.np, objective=True)

    @staticmethod
    def _finish(words: list[str], question: bool, qsep: str) -> str:
        text = " ".join(w for w in words if w)
        return text + qsep + "?" if question else text

    # ================================================================== French
    def _fr_np(self, np: NP, *, pas_de: bool = False) -> tuple[list[str], str, bool]:
        """Tokens, gender and plural of a full French NP (no pronouns: callers handle those)."""
        n = self.nouns[np.noun]
        g, pl = n.fr_g, np.plural
        idx = (2 if pl else 0) + (1 if g == "f" else 0)
        adjs = [self.adjs[a] for a in np.adjs]
        pre = [a for a in adjs if a.fr_pre]
        post = [a for a in adjs if not a.fr_pre]
        noun = n.fr_pl if pl else n.fr
        pre_forms = [a.fr[idx] for a in pre]
        body = pre_forms + [noun] + [a.fr[idx] for a in post]
        # masculine singular pre-nominal adjectives before a vowel: bel, vieil, nouvel
        for i, a in enumerate(pre):
            if g == "m" and not pl and fr_vowel_initial(body[i + 1]):
                body[i] = a.fr[4]
        first = body[0]
        det = np.det
        if det == "the":
            d = "les" if pl else ("la" if g == "f" else "le")
        elif det == "a":
            d = "de" if pas_de else ("une" if g == "f" else "un")
        elif det == "some":
            d = "de" if (pas_de or pre) else "des"
        elif det == "this":
            d = "ces" if pl else ("cette" if g == "f" else ("cet" if fr_vowel_initial(first) else "ce"))
        elif det in POSSESSIVES:
            m, f, p, _ = POSSESSIVES[det]
            d = p if pl else (f if g == "f" and not fr_vowel_initial(first) else m)
        else:
            d = NUMBERS[det][0]
        return [d] + body, g, pl

    def _fr_pp(self, pp: PP) -> list[str]:
        np = pp.np
        if np.pronoun:
            prep = FR_PREP_DEFAULT[pp.prep]
            return prep.split() + [FR_PRON[np.pronoun][3]]
        n = self.nouns[np.noun]
        prep = n.fr_prep.get(pp.prep) or FR_PREP_DEFAULT[pp.prep]
        return self._fr_prep_np(prep, self._fr_np(np)[0])

    @staticmethod
    def _fr_prep_np(prep: str, toks: list[str]) -> list[str]:
        """Attach a preposition, contracting à/de with le/les (au, aux, du, des)."""
        words = prep.split()
        last = words[-1]
        art = toks[0]
        if last == "de" and art in ("des", "de"):  # de + des chiens -> de chiens
            return words + toks[1:]
        if last in ("à", "de") and art in ("le", "les"):
            if art == "les" or not fr_vowel_initial(toks[1]):
                contracted = {("à", "le"): "au", ("à", "les"): "aux", ("de", "le"): "du", ("de", "les"): "des"}
                return words[:-1] + [contracted[(last, art)]] + toks[1:]
        return words + toks

    @staticmethod
    def _fr_agree(pp: str, g: str, pl: bool) -> str:
        if g == "f":
            pp += "e"
        if pl and not pp.endswith("s"):
            pp += "s"
        return pp

    def _fr_clause(self, c: Clause) -> str:
        p, pg, ppl = self._person(c.subject)
        if c.subject.pronoun:
            subj = [FR_PRON[c.subject.pronoun][0]]
            g, pl = pg, ppl
        else:
            subj, g, pl = self._fr_np(c.subject)
        neg = c.negative
        clitics: list[str] = []
        after: list[str] = []
        if c.verb == "be":
            fin = [FR_ETRE[c.tense][p]]
            participle: list[str] = []
            if c.adj:
                a = self.adjs[c.adj]
                after = [a.fr[(2 if pl else 0) + (1 if g == "f" else 0)]]
            else:
                after = self._fr_pp(c.pp)
        else:
            v = self.verbs[c.verb]
            if v.fr_refl:
                clitics.append(FR_REFL[p])
            agree: tuple[str, bool] | None = None  # participle agreement (gender, plural)
            if c.obj is not None:
                o = c.obj
                if o.pronoun:
                    k = 1 if v.fr_obj == "dir" else 2
                    clitics.append(FR_PRON[o.pronoun][k])
                    if v.fr_obj == "dir":
                        _, og, opl = PRONOUNS[o.pronoun]
                        agree = (og, opl)
                else:
                    toks, _, _ = self._fr_np(o, pas_de=(neg and v.fr_obj == "dir" and o.det in ("a", "some")))
                    after += toks if v.fr_obj == "dir" else self._fr_prep_np("à", toks)
            if c.pp is not None:
                after += self._fr_pp(c.pp)
            participle = []
            if c.tense == "present":
                fin = [v.fr_pres[p]]
            elif c.tense == "future":
                fin = [v.fr_fut + FR_FUT_END[p]]
            elif v.fr_imp:
                fin = [v.fr_imp + FR_IMP_END[p]]
            elif v.fr_aux == "être" or v.fr_refl:
                fin = [FR_ETRE["present"][p]]
                participle = [self._fr_agree(v.fr_pp, g, pl)]
            else:
                fin = [FR_AVOIR[p]]
                participle = [self._fr_agree(v.fr_pp, *agree) if agree else v.fr_pp]
        words = subj + (["ne"] if neg else []) + clitics + fin + (["pas"] if neg else []) + participle + after
        if c.question:
            words = ["est-ce", "que"] + words
        text = " ".join(_fr_elide(words))
        return text + " ?" if c.question else text

    # ================================================================== German
    def _de_np(self, np: NP, case: str, *, kein: bool = False) -> list[str]:
        if np.pronoun:
            return [DE_PRON[np.pronoun][case]]
        n = self.nouns[np.noun]
        pl = np.plural
        gk = "pl" if pl else n.de_g
        det = np.det
        if det == "the":
            d, decl = DE_DEF[(case, gk)], "weak"
        elif det == "a":
            d, decl = ("kein" if kein else "ein") + DE_EIN_END[(case, gk)], "mixed"
        elif det == "this":
            d, decl = "dies" + DE_DIES_END[(case, gk)], "weak"
        elif det == "some":
            d, decl = "einig" + DE_DIES_END[(case, gk)], "strong"
        elif det in POSSESSIVES:
            d, decl = POSSESSIVES[det][3] + DE_EIN_END[(case, gk)], "mixed"
        else:
            d, decl = NUMBERS[det][1], "strong"
        adjs = [self.adjs[a].de_stem + DE_ADJ[decl][(case, gk)] for a in np.adjs]
        if pl:
            noun = n.de_pl
            if case == "dat" and not noun.endswith(("n", "s")):
                noun += "n"
        else:
            noun = n.de if case == "nom" else n.de_obl
        return [d] + adjs + [noun]

    def _de_pp(self, pp: PP) -> list[str]:
        np = pp.np
        if np.pronoun:
            prep, case = DE_PREP_DEFAULT[pp.prep]
            return [prep, DE_PRON[np.pronoun][case]]
        n = self.nouns[np.noun]
        prep, case = n.de_prep.get(pp.prep) or DE_PREP_DEFAULT[pp.prep]
        return self._de_prep_np(prep, self._de_np(np, case), np.det == "the")

    @staticmethod
    def _de_prep_np(prep: str, toks: list[str], definite: bool) -> list[str]:
        if definite and (prep, toks[0]) in DE_CONTRACT:
            return [DE_CONTRACT[(prep, toks[0])]] + toks[1:]
        return [prep] + toks

    def _de_clause(self, c: Clause) -> str:
        p, _, _ = self._person(c.subject)
        subj = self._de_np(c.subject, "nom")
        subj_is_pron = c.subject.pronoun is not None
        neg = c.negative
        weak: list[str] = []  # unstressed pronouns (reflexive, object): right after the finite verb
        objs: list[str] = []  # full NP objects
        kein = False
        pps: list[str] = []  # adjuncts, directions, prepositional objects, predicates
        tail: list[str] = []  # participle / infinitive / separable prefix
        if c.verb == "be":
            if c.tense == "future":
                fin, tail = DE_WERDEN[p], ["sein"]
            else:
                fin = DE_SEIN[c.tense][p]
            pps = [self.adjs[c.adj].de] if c.adj else self._de_pp(c.pp)
        else:
            v = self.verbs[c.verb]
            if c.tense == "present":
                fin = v.de_pres[p]
                tail = [v.de_prefix] if v.de_prefix else []
            elif c.tense == "past":
                fin = (DE_HABEN if v.de_aux == "haben" else DE_SEIN["present"])[p]
                tail = [v.de_pp]
            else:
                fin, tail = DE_WERDEN[p], [v.de_inf]
            if v.de_refl:
                weak.append(DE_REFL[p])
            prep_obj: list[str] = []
            if c.obj is not None:
                oprep, ocase = v.de_obj
                if oprep:
                    prep_obj = self._de_prep_np(oprep, self._de_np(c.obj, ocase), c.obj.det == "the")
                elif c.obj.pronoun:
                    weak.append(DE_PRON[c.obj.pronoun][ocase])
                else:
                    kein = neg and c.obj.det == "a"
                    objs = self._de_np(c.obj, ocase, kein=kein)
            pps = (self._de_pp(c.pp) if c.pp else []) + prep_obj
        middle = objs + (["nicht"] if neg and not kein else []) + pps + tail
        if c.question:
            if subj_is_pron:
                words = [fin] + subj + weak + middle
            else:  # unstressed pronouns precede a full subject: "hat ihn der Hund gesehen?"
                words = [fin] + weak + subj + middle
        else:
            words = subj + [fin] + weak + middle
        return self._finish(words, c.question, "")

    # ================================================================== sampling
    def sample_spec(self, rng: random.Random) -> Clause:
        """Draw a random, semantically plausible clause (deterministic given the rng state)."""
        r = rng.random()
        tense = rng.choice(TENSES)
        m = rng.random()
        negative, question = m < 0.25, 0.25 <= m < 0.45
        if r < 0.45:
            verbs = _SAMPLING[0]
        elif r < 0.65:
            verbs = _SAMPLING[1]
        elif r < 0.75:
            verbs = _SAMPLING[2]
        else:
            subj = self._sample_subject(rng, None if r < 0.9 else _NON_PLACE)
            if r < 0.9:
                adj = rng.choice([a for a in self._adjs_for(subj) if a not in subj.adjs])
                return Clause(subj, "be", adj=adj, tense=tense, negative=negative, question=question)
            pp = self._sample_pp(rng, rng.choice(LOCATIVE_PREPS), allow_pron=False)
            return Clause(subj, "be", pp=pp, tense=tense, negative=negative, question=question)
        v = self.verbs[rng.choice(verbs)]
        subj = self._sample_subject(rng, v)
        obj = self._sample_object(rng, v, subj, negative) if v.kind == "tr" else None
        pp = None
        if v.kind == "motion":
            x = rng.random()
            if x < 0.75:
                pp = self._sample_pp(rng, "to", allow_pron=False)
            elif x < 0.85:
                pp = self._sample_pp(rng, "with", allow_pron=True)
        elif v.needs_pp or rng.random() < 0.35:
            # "smile" + "at the lake" would read like the verb "smile at": keep such pairs apart
            preps = [p for p in LOCATIVE_PREPS + ("with",) if f"{v.key} {p}" not in self.verbs]
            pp = self._sample_pp(rng, rng.choice(preps), allow_pron=True)
        return Clause(subj, v.key, obj=obj, pp=pp, tense=tense, negative=negative, question=question)

    def _nouns_for(self, classes: frozenset[str]) -> list[str]:
        return _nouns_matching(classes)

    def _adjs_for(self, np: NP) -> list[str]:
        if np.pronoun:
            return _ADJ_FOR_CLASSES[frozenset({"person"})]
        n = self.nouns[np.noun]
        return _ADJ_FOR_NOUN[n.en]

    def _sample_np(self, rng: random.Random, noun: str, *, dets: tuple[str, ...] | None = None,
                   plural_ok: bool = True) -> NP:
        n = self.nouns[noun]
        if n.mass:
            det = rng.choice(("the", "the", "this", "my", "your", "his", "her", "our", "their"))
            plural = False
        else:
            if dets is None:
                x = rng.random()
                if x < 0.36:
                    det = "the"
                elif x < 0.56:
                    det = "a"
                elif x < 0.64:
                    det = "this"
                elif x < 0.82:
                    det = rng.choice(tuple(POSSESSIVES))
                elif x < 0.94:
                    det = rng.choice(tuple(NUMBERS))
                else:
                    det = "some"
            else:
                det = rng.choice(dets)
            if det in NUMBERS or det == "some":
                plural = True
            elif det == "a":
                plural = False
            else:
                plural = plural_ok and rng.random() < 0.3
        adjs: tuple[str, ...] = ()
        x = rng.random()
        ok = _ADJ_FOR_NOUN[noun]
        if x < 0.35 and ok:
            adjs = (rng.choice(ok),)
        elif x < 0.45:
            pre = [a for a in ok if self.adjs[a].kind == "pre"]
            col = [a for a in ok if self.adjs[a].kind == "color"]
            if pre and col:
                adjs = (rng.choice(pre), rng.choice(col))
        return NP(noun, det=det, plural=plural, adjs=adjs)

    def _sample_subject(self, rng: random.Random, v: Verb | frozenset[str] | None) -> NP:
        if isinstance(v, Verb):
            classes = v.subj
        else:
            classes = v or frozenset({"animal", "person", "object", "food", "place", "vehicle", "drink"})
        animate = bool(classes & {"animal", "person"})
        if animate and rng.random() < 0.25:
            return NP(pronoun=rng.choice(tuple(PRONOUNS)))
        return self._sample_np(rng, rng.choice(self._nouns_for(frozenset(classes))))

    def _sample_object(self, rng: random.Random, v: Verb, subj: NP, negative: bool) -> NP:
        animate_obj = bool(v.obj & {"animal", "person"})
        if v.pron_obj and animate_obj and rng.random() < 0.15:
            choices = [p for p in PRONOUNS if not _same_referent(subj.pronoun, p)]
            return NP(pronoun=rng.choice(choices))
        dets: tuple[str, ...] | None = None
        if negative or not v.indef_obj:
            dets = ("the", "the", "this", "my", "your", "his", "her", "our", "their")
            if negative and v.indef_obj:
                dets += ("a", "a", "a")
        return self._sample_np(rng, rng.choice(self._nouns_for(v.obj)), dets=dets)

    def _sample_pp(self, rng: random.Random, prep: str, allow_pron: bool) -> PP:
        if allow_pron and prep in PRONOUN_PREPS and rng.random() < 0.1:
            return PP(prep, NP(pronoun=rng.choice(tuple(PRONOUNS))))
        noun = rng.choice(self._by_prep[prep])
        n = self.nouns[noun]
        if prep in ("at", "to") and n.cls != "person":
            np = self._sample_np(rng, noun, dets=("the", "the", "the", "this", "my", "your", "our", "their"),
                                 plural_ok=False)
        else:
            np = self._sample_np(rng, noun, dets=("the", "the", "the", "the", "a", "a", "this", "my", "your",
                                                  "his", "her", "our", "their", "two", "three"),
                                 plural_ok=True)
        return PP(prep, np)


_NON_PLACE = frozenset({"animal", "person", "object", "food", "vehicle"})


def _same_referent(subj_pron: str | None, obj_pron: str) -> bool:
    """"i see me" / "we see me" / "you see you" would need a reflexive; avoid them."""
    if subj_pron is None:
        return False
    first = {"i", "we"}
    return (subj_pron in first and obj_pron in first) or (subj_pron == obj_pron == "you")


def _fr_elide(words: list[str]) -> list[str]:
    """Apply French elision (le -> l', que -> qu', ...) by attaching to the next word."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in FR_ELIDE and i + 1 < len(words) and fr_vowel_initial(words[i + 1]):
            # "est-ce que" + vowel -> "est-ce qu'il"
            words[i + 1] = FR_ELIDE[w] + words[i + 1]
            i += 1
            continue
        out.append(w)
        i += 1
    return out


_WORD_RE = re.compile(r"[^\s'?]+'?")


def tokenize(text: str) -> list[str]:
    """Split a sentence into words: whitespace, French elisions (``l'`` ``oiseau``), no ``?``."""
    return _WORD_RE.findall(text)


# ---------------------------------------------------------------------------------------------
# Module-level caches (the lexicon is immutable)
# ---------------------------------------------------------------------------------------------


def _build_lexicon():
    nouns = _parse_nouns(_NOUNS)
    adjs = _parse_adjs(_ADJS)
    verbs = {v.key: v for v in _VERBS}
    if len(verbs) != len(_VERBS):
        raise GrammarError("duplicate verb key in lexicon")
    by_prep: dict[str, list[str]] = {}
    for n in nouns.values():
        for p in n.preps:
            by_prep.setdefault(p, []).append(n.en)
    return nouns, adjs, verbs, by_prep


_LEXICON = _build_lexicon()


def _noun_matches(n: Noun, classes: frozenset[str]) -> bool:
    return n.cls in classes or bool(n.tags & classes)


@lru_cache(maxsize=None)
def _nouns_matching(classes: frozenset[str]) -> list[str]:
    return [n.en for n in _LEXICON[0].values() if _noun_matches(n, classes)]


def _adj_ok(a: Adj, n: Noun) -> bool:
    return n.cls in a.ok or bool(n.tags & a.ok)


_ADJ_FOR_NOUN = {n.en: [a.en for a in _LEXICON[1].values() if _adj_ok(a, n)] for n in _LEXICON[0].values()}
_ADJ_FOR_CLASSES = {frozenset({"person"}): [a.en for a in _LEXICON[1].values() if "person" in a.ok]}
_SAMPLING = (
    [v.key for v in _VERBS if v.kind == "tr"],
    [v.key for v in _VERBS if v.kind == "intr"],
    [v.key for v in _VERBS if v.kind == "motion"],
)


def _coverage_specs(g: Grammar):
    """Specs that together exercise every lexicon entry in every form it can take."""
    nouns, adjs, verbs = g.nouns, g.adjs, g.verbs
    he = NP(pronoun="he")
    # nouns: every number and case, in every PP they allow
    for n in nouns.values():
        for pl in ((False,) if n.mass else (False, True)):
            for det in ("the", "a", "this", "my", "some"):
                if (det == "a" and pl) or (det == "some" and not pl) or (n.mass and det in ("a", "some")):
                    continue
                np = NP(n.en, det=det, plural=pl)
                yield Clause(np, "sleep")
                yield Clause(he, "see", obj=np)
                yield Clause(he, "see", obj=np, negative=True)
                yield Clause(he, "help", obj=np)
                for prep in n.preps:
                    yield Clause(he, "go" if prep == "to" else "sleep", pp=PP(prep, np))
    # determiners x genders x cases, with and without adjectives
    probes = {}
    for n in nouns.values():
        if n.mass:
            continue
        key = (n.fr_g, n.de_g, fr_vowel_initial(n.fr), n.fr in FR_NO_ELISION)
        probes.setdefault(key, n.en)
    for noun in probes.values():
        for det in DETERMINERS:
            for pl in (False, True):
                if (det == "a" and pl) or ((det in NUMBERS or det == "some") and not pl):
                    continue
                for adj_set in ((), ("big",), ("old",), ("red",), ("beautiful", "red")):
                    np = NP(noun, det=det, plural=pl, adjs=adj_set)
                    yield Clause(np, "sleep", pp=PP("with", np) if det != "some" else None)
                    yield Clause(he, "see", obj=np, negative=(det == "a"))
                    yield Clause(he, "help", obj=np, negative=(det == "a"))
    # adjectives: every French/German form, attributive and predicative
    for a in adjs.values():
        for noun in probes.values():
            for pl in (False, True):
                for det in ("the", "a", "two") if pl is False else ("the", "two", "my"):
                    if det == "a" and pl or det == "two" and not pl:
                        continue
                    np = NP(noun, det=det, plural=pl, adjs=(a.en,))
                    yield Clause(np, "sleep")
                    yield Clause(he, "see", obj=np)
                    yield Clause(NP(noun, plural=pl), "be", adj=a.en)
        for pron in PRONOUNS:
            yield Clause(NP(pronoun=pron), "be", adj=a.en)
    # verbs: every person, tense, polarity and mood
    subjects = [NP(pronoun=p) for p in PRONOUNS] + [NP("dog"), NP("cow", plural=True)]
    for v in verbs.values():
        obj = NP("cat") if v.kind == "tr" else None
        for s in subjects:
            for tense in TENSES:
                for neg, q in ((False, False), (True, False), (False, True)):
                    yield Clause(s, v.key, obj=obj, tense=tense, negative=neg, question=q)
                    if v.kind == "tr" and v.pron_obj:
                        for op in PRONOUNS:
                            yield Clause(s, v.key, obj=NP(pronoun=op), tense=tense, negative=neg, question=q)
    for s in subjects:
        for tense in TENSES:
            for neg, q in ((False, False), (True, False), (False, True)):
                yield Clause(s, "be", pp=PP("in", NP("garden")), tense=tense, negative=neg, question=q)
    for pron in PRONOUNS:
        for prep in PRONOUN_PREPS:
            yield Clause(he, "sleep", pp=PP(prep, NP(pronoun=pron)))


@lru_cache(maxsize=1)
def _vocabulary() -> dict[str, frozenset[str]]:
    g = Grammar()
    vocab: dict[str, set[str]] = {"en": set(), "fr": set(), "de": set()}
    for spec in _coverage_specs(g):
        s = g.realize(spec)
        vocab["en"].update(tokenize(s.en))
        vocab["fr"].update(tokenize(s.fr))
        vocab["de"].update(tokenize(s.de))
    return {k: frozenset(v) for k, v in vocab.items()}


def _main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 10
    seed = int(argv[1]) if len(argv) > 1 else 0
    g = Grammar()
    rng = random.Random(seed)
    for _ in range(n):
        s = g.sample(rng)
        print(f"en: {s.en}\nfr: {s.fr}\nde: {s.de}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
