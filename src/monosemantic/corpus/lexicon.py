"""The storyworld vocabulary: every word a planted concept can produce.

Kept small (a few hundred distinct words in all) so that a tiny LM learns the world in minutes,
and kept here, apart from the grammar, because `concepts.py` derives the concept list from it.
Changing an entry changes concept ids (they are indices into `CONCEPTS`): append, don't reorder.
"""

from __future__ import annotations

# name -> grammatical gender ("f" -> she/her/her, "m" -> he/him/his).
CHARACTERS: dict[str, str] = {
    "Lily": "f",
    "Mia": "f",
    "Emma": "f",
    "Zoe": "f",
    "Anna": "f",
    "Lucy": "f",
    "Tom": "m",
    "Max": "m",
    "Ben": "m",
    "Sam": "m",
    "Leo": "m",
    "Jack": "m",
}

PRONOUNS: dict[str, tuple[str, str, str]] = {  # gender -> (subject, object, possessive)
    "f": ("she", "her", "her"),
    "m": ("he", "him", "his"),
}

ANIMALS: list[str] = ["cat", "dog", "bird", "rabbit", "bear", "fox", "mouse", "frog"]
PERSON_WORDS: dict[str, str] = {"f": "girl", "m": "boy"}  # the "person" entity type, by gender

PLACES: list[str] = ["beach", "park", "forest", "garden", "kitchen", "school", "farm", "lake"]

# singular -> plural
OBJECTS: dict[str, str] = {
    "ball": "balls",
    "kite": "kites",
    "book": "books",
    "hat": "hats",
    "box": "boxes",
    "apple": "apples",
    "boat": "boats",
    "flower": "flowers",
}

COLOURS: list[str] = ["red", "blue", "green", "yellow", "pink", "purple"]

NUMBER_WORDS: list[str] = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

# feeling -> the words that express it
FEELINGS: dict[str, list[str]] = {
    "happy": ["happy", "glad"],
    "sad": ["sad", "upset"],
    "scared": ["scared", "afraid"],
    "angry": ["angry", "mad"],
    "excited": ["excited"],
}

# weather -> (adjective, noun)
WEATHER: dict[str, tuple[str, str]] = {
    "sunny": ("sunny", "sun"),
    "rainy": ("rainy", "rain"),
    "windy": ("windy", "wind"),
    "snowy": ("snowy", "snow"),
}

CAUSE_WORDS: list[str] = ["because", "so"]
