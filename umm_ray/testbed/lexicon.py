"""The fixed word tables of the testbed world.

These are constants, not seeded: the gold reward is a pure function of (prompt, response), so every fact it checks
must be the same on every machine and for every seed. Seeds only choose which prompts and responses are drawn.
"""

from __future__ import annotations

# Plural category name -> members (singular nouns). Every word belongs to at most one category.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruits": ("apple", "banana", "cherry", "grape", "lemon", "lime", "mango", "melon", "peach", "pear", "plum",
               "kiwi", "fig", "apricot", "coconut", "papaya", "berry", "date"),
    "animals": ("cat", "dog", "horse", "cow", "sheep", "goat", "pig", "duck", "mouse", "rabbit", "fox", "wolf",
                "bear", "lion", "tiger", "frog", "owl", "eagle", "snake", "whale"),
    "vegetables": ("carrot", "potato", "onion", "tomato", "pepper", "bean", "pea", "corn", "cabbage", "lettuce",
                   "spinach", "garlic", "radish", "pumpkin", "celery"),
    "tools": ("hammer", "saw", "drill", "wrench", "shovel", "rake", "axe", "knife", "ladder", "brush", "chisel",
              "pliers"),
    "vehicles": ("car", "bus", "truck", "bike", "train", "boat", "ship", "plane", "tractor", "scooter", "van",
                 "taxi", "rocket"),
    "instruments": ("piano", "guitar", "violin", "drum", "flute", "harp", "trumpet", "cello", "banjo", "organ",
                    "tuba"),
    "clothes": ("shirt", "coat", "hat", "sock", "shoe", "scarf", "glove", "dress", "jacket", "boot", "skirt", "belt"),
    "furniture": ("chair", "table", "bed", "sofa", "desk", "shelf", "lamp", "stool", "bench", "closet"),
    "sports": ("tennis", "soccer", "golf", "hockey", "rugby", "boxing", "rowing", "cycling", "skiing", "surfing",
               "baseball"),
    "drinks": ("water", "milk", "tea", "coffee", "juice", "soda", "cocoa", "lemonade"),
}

# Singular name of each category, used by "What kind of thing is a X?" answers.
KIND: dict[str, str] = {
    "fruits": "fruit", "animals": "animal", "vegetables": "vegetable", "tools": "tool", "vehicles": "vehicle",
    "instruments": "instrument", "clothes": "garment", "furniture": "furniture", "sports": "sport", "drinks": "drink",
}

# Describable aspects -> their adjectives. An adjective belongs to one aspect only.
ASPECTS: dict[str, tuple[str, ...]] = {
    "color": ("red", "blue", "green", "yellow", "white", "black", "brown", "grey", "pink", "purple", "golden",
              "silver"),
    "size": ("big", "small", "tiny", "huge", "tall", "short", "long", "wide", "narrow", "heavy", "light"),
    "texture": ("soft", "hard", "smooth", "rough", "fuzzy", "shiny", "sticky", "bumpy", "silky", "furry"),
    "sound": ("loud", "quiet", "noisy", "silent", "humming", "squeaky", "booming", "buzzing"),
    "mood": ("happy", "calm", "cheerful", "gentle", "fierce", "lazy", "playful", "proud", "sleepy"),
    "taste": ("sweet", "sour", "bitter", "salty", "juicy", "tangy", "spicy", "fresh"),
}

# Which aspects make sense for objects of each category (describe prompts only pair these).
CATEGORY_ASPECTS: dict[str, tuple[str, ...]] = {
    "fruits": ("color", "size", "texture", "taste"),
    "animals": ("color", "size", "texture", "sound", "mood"),
    "vegetables": ("color", "size", "texture", "taste"),
    "tools": ("color", "size", "texture"),
    "vehicles": ("color", "size", "sound"),
    "instruments": ("size", "texture", "sound"),
    "clothes": ("color", "size", "texture"),
    "furniture": ("color", "size", "texture"),
    "drinks": ("color", "taste"),
}

# Facts for "What color is a X?".
COLOR_OF: dict[str, str] = {
    "apple": "red", "banana": "yellow", "cherry": "red", "grape": "purple", "lemon": "yellow", "lime": "green",
    "mango": "yellow", "melon": "green", "peach": "pink", "pear": "green", "plum": "purple", "kiwi": "brown",
    "fig": "purple", "coconut": "brown", "berry": "blue", "carrot": "orange", "potato": "brown", "onion": "white",
    "tomato": "red", "pepper": "green", "pea": "green", "corn": "yellow", "cabbage": "green", "lettuce": "green",
    "spinach": "green", "garlic": "white", "radish": "red", "pumpkin": "orange", "celery": "green", "cat": "black",
    "dog": "brown", "cow": "white", "sheep": "white", "pig": "pink", "fox": "orange", "wolf": "grey", "bear": "brown",
    "lion": "golden", "frog": "green", "mouse": "grey", "whale": "blue", "milk": "white", "coffee": "black",
    "cocoa": "brown", "taxi": "yellow", "bus": "red",
}
COLOR_ANSWERS: tuple[str, ...] = tuple(sorted(set(COLOR_OF.values()) | set(ASPECTS["color"])))

# Facts for "What sound does a X make?".
SOUND_OF: dict[str, str] = {
    "cat": "meow", "dog": "woof", "cow": "moo", "sheep": "baa", "duck": "quack", "pig": "oink", "owl": "hoot",
    "snake": "hiss", "lion": "roar", "horse": "neigh", "frog": "croak", "mouse": "squeak", "wolf": "howl",
    "bear": "growl", "goat": "bleat", "eagle": "screech",
}

# Antonym pairs for "What is the opposite of X?" and opposite rewrites; the map is a bijection.
_OPPOSITE_PAIRS = (
    ("big", "small"), ("hot", "cold"), ("fast", "slow"), ("tall", "short"), ("happy", "sad"), ("old", "new"),
    ("light", "dark"), ("hard", "soft"), ("loud", "quiet"), ("wet", "dry"), ("full", "empty"), ("early", "late"),
    ("rich", "poor"), ("strong", "weak"), ("open", "closed"), ("clean", "dirty"), ("high", "low"), ("thick", "thin"),
    ("sweet", "sour"), ("near", "far"), ("up", "down"), ("good", "bad"), ("first", "last"), ("huge", "tiny"),
    ("smooth", "rough"), ("wide", "narrow"), ("day", "night"), ("in", "out"),
)
OPPOSITE: dict[str, str] = {**dict(_OPPOSITE_PAIRS), **{b: a for a, b in _OPPOSITE_PAIRS}}

# Nouns with irregular or unchanged plurals are left out of plural rewrites (see world.plural).
IRREGULAR_PLURAL: dict[str, str] = {"mouse": "mice", "sheep": "sheep", "knife": "knives", "wolf": "wolves",
                                    "shelf": "shelves", "pliers": "pliers", "corn": "corn", "spinach": "spinach",
                                    "celery": "celery", "lettuce": "lettuce", "garlic": "garlic"}

# Glue words that never count as content (for precision and repetition).
FUNCTION_WORDS: frozenset[str] = frozenset(
    {"a", "an", "the", "is", "are", "and", "it", "very", "of", "with", "this", "that", "so", "my", "answer"})

# Filler the SFT generator uses for rambling responses; off-topic for every rubric.
FILLER: tuple[str, ...] = ("well", "maybe", "i", "think", "really", "just", "also", "probably", "you", "know",
                           "like", "okay", "sure", "thing", "stuff", "things")

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")


def all_objects() -> list[str]:
    """Every noun in the world, in a fixed order."""
    return [w for members in CATEGORIES.values() for w in members]


_CATEGORY_OF = {w: cat for cat, members in CATEGORIES.items() for w in members}
_ASPECT_OF = {w: aspect for aspect, words in ASPECTS.items() for w in words}


def category_of(word: str) -> str | None:
    """The plural category containing `word`, or None."""
    return _CATEGORY_OF.get(word)


def aspect_of(word: str) -> str | None:
    """The aspect an adjective describes, or None."""
    return _ASPECT_OF.get(word)


def all_words() -> list[str]:
    """The whole lexicon (deduplicated, fixed order): what the world's texts are built from."""
    words = all_objects() + list(CATEGORIES) + list(KIND.values())
    words += [w for ws in ASPECTS.values() for w in ws] + list(ASPECTS)
    words += list(COLOR_ANSWERS) + list(SOUND_OF.values()) + list(OPPOSITE) + list(IRREGULAR_PLURAL.values())
    words += sorted(FUNCTION_WORDS) + list(FILLER) + list(NUMBER_WORDS)
    return list(dict.fromkeys(words))
