"""Word lists of the toy grammar with their German, French and Spanish forms.

Noun tags say where a noun may appear (verb objects and prepositions select by tag):
    H human, A animal, a small animal, S small thing, V vehicle, P place, F furniture,
    O openable, L landmark (behind / in front of / next to), I "in", U "on", D "under",
    B buildable.
German nouns are capitalized as in German. Genders are m/f/n (German) and m/f.
The tables are "|"-separated; inside a column, "/" separates singular and plural.
"""
from typing import NamedTuple

ALL_TAGS = "HAaSVPFOLIUDB"


class Noun(NamedTuple):
    en: str            # singular
    en_pl: str
    tags: str
    de: tuple          # (gender, singular, plural)
    fr: tuple          # (gender, singular, plural)
    es: tuple          # (gender, singular, plural)


class Adjective(NamedTuple):
    en: str
    applies_to: str    # "any", "animate" (H/A nouns), "thing" (other nouns), "nonhuman"
                       # or "mobile" (H/A/V nouns)
    de: str            # stem; declension endings are added by rule
    fr: tuple          # (m sg, f sg, m pl, f pl)
    fr_before_noun: bool
    es: tuple          # (m sg, f sg, m pl, f pl)
    es_before_noun: bool
    es_copula: str     # "ser" or "estar"
    fr_m_before_vowel: str = ""   # bel, vieil, nouvel
    es_m_apocope: str = ""        # buen, mal (before a masculine singular noun)


class Verb(NamedTuple):
    en: tuple          # (3rd sg, plural)
    subject: str       # "human" or "animate"
    objects: str       # allowed object tags; "" for clause-taking verbs
    de: tuple          # (3rd sg, 3rd pl)
    de_case: str       # case of the German object: "acc" or "dat"
    fr: tuple
    es: tuple
    es_personal_a: str = "H"  # object tags that take the Spanish personal "a"


class Preposition(NamedTuple):
    en: str
    objects: str       # allowed tags of its noun
    de: str
    de_case: str
    fr: str
    es: str
    verbs: tuple = ()  # the verbs it may go with; () for all


def _rows(table: str) -> list:
    lines = [ln for ln in table.strip().split("\n") if not ln.startswith("#")]
    return [[col.strip() for col in ln.split("|")] for ln in lines]


def _pair(col: str) -> tuple:
    return tuple(col.split("/"))


_NOUNS = """
# english          | tags  | german                   | french                   | spanish
woman/women        | HL    | f Frau Frauen            | f femme femmes           | f mujer mujeres
man/men            | HL    | m Mann Männer            | m homme hommes           | m hombre hombres
child/children     | HL    | n Kind Kinder            | m enfant enfants         | m niño niños
girl/girls         | HL    | n Mädchen Mädchen        | f fille filles           | f niña niñas
teacher/teachers   | HL    | m Lehrer Lehrer          | m professeur professeurs | m profesor profesores
doctor/doctors     | HL    | m Arzt Ärzte             | m médecin médecins       | m médico médicos
baker/bakers       | HL    | m Bäcker Bäcker          | m boulanger boulangers   | m panadero panaderos
king/kings         | HL    | m König Könige           | m roi rois               | m rey reyes
queen/queens       | HL    | f Königin Königinnen     | f reine reines           | f reina reinas
student/students   | HL    | m Schüler Schüler        | m élève élèves           | m alumno alumnos
brother/brothers   | HL    | m Bruder Brüder          | m frère frères           | m hermano hermanos
sister/sisters     | HL    | f Schwester Schwestern   | f sœur sœurs             | f hermana hermanas
dog/dogs           | AaL   | m Hund Hunde             | m chien chiens           | m perro perros
cat/cats           | AaL   | f Katze Katzen           | m chat chats             | m gato gatos
horse/horses       | AL    | n Pferd Pferde           | m cheval chevaux         | m caballo caballos
bird/birds         | Aa    | m Vogel Vögel            | m oiseau oiseaux         | m pájaro pájaros
mouse/mice         | Aa    | f Maus Mäuse             | f souris souris          | m ratón ratones
cow/cows           | AL    | f Kuh Kühe               | f vache vaches           | f vaca vacas
fish/fish          | Aa    | m Fisch Fische           | m poisson poissons       | m pez peces
rabbit/rabbits     | Aa    | n Kaninchen Kaninchen    | m lapin lapins           | m conejo conejos
duck/ducks         | Aa    | f Ente Enten             | m canard canards         | m pato patos
house/houses       | PILB  | n Haus Häuser            | f maison maisons         | f casa casas
car/cars           | VILD  | n Auto Autos             | f voiture voitures       | m coche coches
book/books         | SO    | n Buch Bücher            | m livre livres           | m libro libros
table/tables       | FUDLB | m Tisch Tische           | f table tables           | f mesa mesas
chair/chairs       | FUDLB | m Stuhl Stühle           | f chaise chaises         | f silla sillas
door/doors         | OL    | f Tür Türen              | f porte portes           | f puerta puertas
window/windows     | OL    | n Fenster Fenster        | f fenêtre fenêtres       | f ventana ventanas
apple/apples       | S     | m Apfel Äpfel            | f pomme pommes           | f manzana manzanas
letter/letters     | SO    | m Brief Briefe           | f lettre lettres         | f carta cartas
bicycle/bicycles   | VL    | n Fahrrad Fahrräder      | m vélo vélos             | f bicicleta bicicletas
garden/gardens     | PI    | m Garten Gärten          | m jardin jardins         | m jardín jardines
boat/boats         | VIB   | n Boot Boote             | m bateau bateaux         | m barco barcos
picture/pictures   | S     | n Bild Bilder            | m tableau tableaux       | m cuadro cuadros
box/boxes          | SOIB  | f Kiste Kisten           | f boîte boîtes           | f caja cajas
hat/hats           | S     | m Hut Hüte               | m chapeau chapeaux       | m sombrero sombreros
key/keys           | S     | m Schlüssel Schlüssel    | f clé clés               | f llave llaves
ball/balls         | S     | m Ball Bälle             | m ballon ballons         | f pelota pelotas
river/rivers       | PI    | m Fluss Flüsse           | f rivière rivières       | m río ríos
bridge/bridges     | UDLB  | f Brücke Brücken         | m pont ponts             | m puente puentes
tree/trees         | DL    | m Baum Bäume             | m arbre arbres           | m árbol árboles
city/cities        | PI    | f Stadt Städte           | f ville villes           | f ciudad ciudades
kitchen/kitchens   | PI    | f Küche Küchen           | f cuisine cuisines       | f cocina cocinas
park/parks         | PI    | m Park Parks             | m parc parcs             | m parque parques
"""


def _noun(en, tags, de, fr, es) -> Noun:
    return Noun(*_pair(en), tags, tuple(de.split()), tuple(fr.split()), tuple(es.split()))


NOUNS = {n.en: n for n in (_noun(*row) for row in _rows(_NOUNS))}

# French and Spanish: m sg, f sg, m pl, f pl; "<" = before the noun; a fifth French form is
# the masculine singular before a vowel, a fifth Spanish form the apocope before a masculine
# singular noun.
_ADJECTIVES = """
# english | nouns    | german    | french                                  | spanish                                       | copula
small     | any      | klein     | < petit petite petits petites           | pequeño pequeña pequeños pequeñas             | ser
big       | any      | groß      | < grand grande grands grandes           | grande grande grandes grandes                 | ser
old       | any      | alt       | < vieux vieille vieux vieilles vieil    | viejo vieja viejos viejas                     | ser
young     | animate  | jung      | < jeune jeune jeunes jeunes             | joven joven jóvenes jóvenes                   | ser
beautiful | nonhuman | schön     | < beau belle beaux belles bel           | hermoso hermosa hermosos hermosas             | ser
new       | thing    | neu       | < nouveau nouvelle nouveaux nouvelles nouvel | nuevo nueva nuevos nuevas                | ser
good      | any      | gut       | < bon bonne bons bonnes                 | < bueno buena buenos buenas buen              | ser
bad       | any      | schlecht  | < mauvais mauvaise mauvais mauvaises    | < malo mala malos malas mal                   | ser
red       | thing    | rot       | rouge rouge rouges rouges               | rojo roja rojos rojas                         | ser
blue      | thing    | blau      | bleu bleue bleus bleues                 | azul azul azules azules                       | ser
green     | thing    | grün      | vert verte verts vertes                 | verde verde verdes verdes                     | ser
yellow    | thing    | gelb      | jaune jaune jaunes jaunes               | amarillo amarilla amarillos amarillas         | ser
black     | nonhuman | schwarz   | noir noire noirs noires                 | negro negra negros negras                     | ser
white     | nonhuman | weiß      | blanc blanche blancs blanches           | blanco blanca blancos blancas                 | ser
brown     | nonhuman | braun     | brun brune bruns brunes                 | marrón marrón marrones marrones               | ser
fast      | mobile   | schnell   | rapide rapide rapides rapides           | rápido rápida rápidos rápidas                 | ser
slow      | mobile   | langsam   | lent lente lents lentes                 | lento lenta lentos lentas                     | ser
clean     | any      | sauber    | propre propre propres propres           | limpio limpia limpios limpias                 | estar
dirty     | any      | schmutzig | sale sale sales sales                   | sucio sucia sucios sucias                     | estar
tired     | animate  | müde      | fatigué fatiguée fatigués fatiguées     | cansado cansada cansados cansadas             | estar
happy     | animate  | glücklich | heureux heureuse heureux heureuses      | contento contenta contentos contentas         | estar
sad       | animate  | traurig   | triste triste tristes tristes           | triste triste tristes tristes                 | estar
hungry    | animate  | hungrig   | affamé affamée affamés affamées         | hambriento hambrienta hambrientos hambrientas | estar
strong    | animate  | stark     | fort forte forts fortes                 | fuerte fuerte fuertes fuertes                 | ser
funny     | animate  | lustig    | drôle drôle drôles drôles               | divertido divertida divertidos divertidas     | ser
"""


def _adjective(en, nouns, de, fr, es, copula) -> Adjective:
    fr, es = fr.split(), es.split()
    fr_pre, es_pre = fr[0] == "<", es[0] == "<"
    fr, es = fr[fr_pre:], es[es_pre:]
    return Adjective(en, nouns, de, tuple(fr[:4]), fr_pre, tuple(es[:4]), es_pre, copula,
                     "".join(fr[4:]), "".join(es[4:]))


ADJECTIVES = {a.en: a for a in (_adjective(*row) for row in _rows(_ADJECTIVES))}

# objects: "*" = any noun, "-" = a "that" clause (the German "dass" clause is verb-final);
# case: of the German object; personal a: object tags that take the Spanish personal "a".
_VERBS = """
# key       | english             | subject | objects | german               | case | french                  | spanish               | personal a
see         | sees/see            | animate | *       | sieht/sehen          | acc  | voit/voient             | ve/ven                | H
hear        | hears/hear          | animate | HAV     | hört/hören           | acc  | entend/entendent        | oye/oyen              | H
watch       | watches/watch       | animate | *       | beobachtet/beobachten | acc | regarde/regardent       | mira/miran            | H
find        | finds/find          | animate | HASVO   | findet/finden        | acc  | trouve/trouvent         | encuentra/encuentran  | H
look for    | looks for/look for  | animate | HASVO   | sucht/suchen         | acc  | cherche/cherchent       | busca/buscan          | H
follow      | follows/follow      | animate | HAV     | folgt/folgen         | dat  | suit/suivent            | sigue/siguen          | HA
love        | loves/love          | animate | HA      | liebt/lieben         | acc  | aime/aiment             | ama/aman              | HA
help        | helps/help          | animate | HA      | hilft/helfen         | dat  | aide/aident             | ayuda/ayudan          | HA
know        | knows/know          | animate | HAP     | kennt/kennen         | acc  | connaît/connaissent     | conoce/conocen        | H
visit       | visits/visit        | human   | P       | besucht/besuchen     | acc  | visite/visitent         | visita/visitan        | H
catch       | catches/catch       | animate | aS      | fängt/fangen         | acc  | attrape/attrapent       | atrapa/atrapan        | H
buy         | buys/buy            | human   | SVA     | kauft/kaufen         | acc  | achète/achètent         | compra/compran        | H
sell        | sells/sell          | human   | SVA     | verkauft/verkaufen   | acc  | vend/vendent            | vende/venden          | H
carry       | carries/carry       | human   | Sa      | trägt/tragen         | acc  | porte/portent           | lleva/llevan          | H
take        | takes/take          | human   | Sa      | nimmt/nehmen         | acc  | prend/prennent          | toma/toman            | H
paint       | paints/paint        | human   | *       | malt/malen           | acc  | peint/peignent          | pinta/pintan          | H
draw        | draws/draw          | human   | *       | zeichnet/zeichnen    | acc  | dessine/dessinent       | dibuja/dibujan        | H
wash        | washes/wash         | human   | HAVF    | wäscht/waschen       | acc  | lave/lavent             | lava/lavan            | H
open        | opens/open          | human   | O       | öffnet/öffnen        | acc  | ouvre/ouvrent           | abre/abren            | H
build       | builds/build        | human   | B       | baut/bauen           | acc  | construit/construisent  | construye/construyen  | H
say         | says/say            | human   | -       | sagt/sagen           | -    | dit/disent              | dice/dicen            | -
think       | thinks/think        | human   | -       | denkt/denken         | -    | pense/pensent           | piensa/piensan        | -
know that   | knows/know          | human   | -       | weiß/wissen          | -    | sait/savent             | sabe/saben            | -
believe     | believes/believe    | human   | -       | glaubt/glauben       | -    | croit/croient           | cree/creen            | -
"""


def _verb(en, subject, objects, de, case, fr, es, personal_a) -> Verb:
    objects = {"*": ALL_TAGS, "-": ""}.get(objects, objects)
    return Verb(_pair(en), subject, objects, _pair(de), case.strip("-"), _pair(fr), _pair(es),
                personal_a.strip("-"))


VERBS = {row[0]: _verb(*row[1:]) for row in _rows(_VERBS)}
TRANSITIVE_VERBS = [k for k, v in VERBS.items() if v.objects]
CLAUSE_VERBS = [k for k, v in VERBS.items() if not v.objects]

_PREPOSITIONS = """
# english   | nouns | german | case | french    | spanish    | only with the verbs
in          | I     | in     | dat  | dans      | en         |
on          | U     | auf    | dat  | sur       | sobre      |
under       | D     | unter  | dat  | sous      | debajo de  |
behind      | L     | hinter | dat  | derrière  | detrás de  |
in front of | L     | vor    | dat  | devant    | delante de |
next to     | L     | neben  | dat  | à côté de | al lado de |
with        | HA    | mit    | dat  | avec      | con        |
without     | HA    | ohne   | acc  | sans      | sin        |
for         | HA    | für    | acc  | pour      | para       | buy sell paint draw build carry take wash open find look_for
through     | P     | durch  | acc  | à travers | por        | follow carry look_for
"""
PREPOSITIONS = {row[0]: Preposition(*row[:6], tuple(v.replace("_", " ") for v in row[6].split()))
                for row in _rows(_PREPOSITIONS)}

# Plural noun phrases are counted: "three dogs" (no definite plurals).
NUMBERS = {
    "two": ("zwei", "deux", "dos"), "three": ("drei", "trois", "tres"),
    "four": ("vier", "quatre", "cuatro"), "five": ("fünf", "cinq", "cinco"),
    "six": ("sechs", "six", "seis"), "seven": ("sieben", "sept", "siete"),
    "eight": ("acht", "huit", "ocho"), "nine": ("neun", "neuf", "nueve"),
    "ten": ("zehn", "dix", "diez"),
}

# Subordinating conjunctions: english -> (german, french, spanish); all take the indicative.
CONJUNCTIONS = {
    "because": ("weil", "parce que", "porque"),
    "when": ("wenn", "quand", "cuando"),
    "while": ("während", "pendant que", "mientras"),
    "if": ("wenn", "si", "si"),
}
