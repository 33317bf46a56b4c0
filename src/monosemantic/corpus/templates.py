"""Sentence templates of storyworld, grouped by the role they play in a story.

Slots in braces are filled by `storyworld._Builder`:
  {A} {B}            a character in subject position: name, or she/he when unambiguous
  {A.o} {A.p}        object (her/him) and possessive (her/his, or "Lily's") references
  {A.name} {A.species}  the name / species word (a name introduces the character)
  {AB}               both characters as subject: "Lily and Tom" or "they"
  {place} {obj} {objs} {colour} {obj2} {obj2s} {colour2} {num}
  {weather} {wnoun}  the story's weather, as adjective ("rainy") or noun ("rain")
  {feel} {feel:sad}  a random / a given feeling
  {because} {so}     cause-and-effect connectives
Avoid literal words that a slot also produces ("one", "hat", "sun") so every occurrence of a
concept word is labelled.
"""

from __future__ import annotations

OPENINGS: list[str] = [
    "{A.name} the {A.species} went to the {place}.",
    "{A.name} the {A.species} went to the {place}.",
    "{A.name} the {A.species} went to the {place}.",
    "On a {weather} day, {A.name} the {A.species} went to the {place}.",
    "Once upon a time, there was a little {A.species} named {A.name}.",
    "{A.name} was a {A.species} who lived near the {place}.",
    "There was a {A.species} called {A.name}.",
    "{A.name} the {A.species} had a {colour} {obj}.",
    "{A.name} was a little {A.species} with a {colour} {obj}.",
    "{A.name} the {A.species} was {feel} at the {place}.",
]

PLACE: list[str] = [
    "{A} went to the {place}.",
    "Later, {A} walked to the {place}.",
    "{A} liked to play at the {place}.",
]

A_EVENTS: list[str] = [
    "{A} saw a {colour} {obj} at the {place}.",
    "{A} found {num} {colour} {objs}.",
    "{A} wanted to play with {A.p} {colour} {obj}.",
    "{A} could not find {A.p} {obj}, {so} {A} was {feel:sad}.",
    "{A} was {feel:happy} {because} {A} found a {colour} {obj}.",
    '{A} said, "I love the {place}!"',
    '"Look at my {colour} {obj}!" {A} said.',
    '"I am so {feel}!" {A} said.',
    '{A} asked, "Where is my {obj}?"',
    '"I have {num} {objs}," {A} said.',
    "{A} ran to the {place} with {A.p} {obj}.",
    "{A} was {feel:excited} to see the {colour} {obj}.",
    "{A} dropped {A.p} {obj} and felt {feel:sad}.",
    "{A} counted {num} {objs} at the {place}.",
    "{A} was {feel:scared} {because} {A.p} {obj} fell in the water.",
    "{A} was {feel:angry} {because} {A.p} {obj} broke.",
    "{A} had {num} {colour2} {obj2s} and a {colour} {obj}.",
    "{A} wanted a {colour2} {obj2}, {so} {A} was {feel:excited}.",
]

WEATHER_EVENTS: dict[str, list[str]] = {
    "sunny": [
        "It was a {weather} day.",
        "The {wnoun} was warm and bright.",
        "It was {weather}, {so} {A} played outside.",
        "{A} was {feel:happy} {because} it was {weather}.",
    ],
    "rainy": [
        "It was a {weather} day.",
        "The {wnoun} fell all day.",
        "It was {weather}, {so} {A} stayed inside.",
        "{A} was {feel:sad} {because} it was {weather}.",
    ],
    "windy": [
        "It was a {weather} day.",
        "The {wnoun} was very strong.",
        "The {wnoun} took {A.p} {obj}, {so} {A} was {feel:sad}.",
        "{A} was {feel:scared} {because} the {wnoun} was loud.",
    ],
    "snowy": [
        "It was a {weather} day.",
        "The {wnoun} was soft and white.",
        "It was {weather}, {so} {A} played in the {wnoun}.",
        "{A} was {feel:excited} {because} it was {weather}.",
    ],
}

B_INTRO: list[str] = [
    "Then {A} met {B.name} the {B.species}.",
    "Soon, {B.name} the {B.species} came to the {place}.",
    "{A} saw {A.p} friend {B.name} the {B.species}.",
]

B_EVENTS: list[str] = [
    '{B} said, "Hello, {A.name}!"',
    '"Can I play too?" {B} asked.',
    "{A} gave {B.o} the {colour} {obj}.",
    "{B} was {feel:happy} {because} {A} shared {A.p} {obj}.",
    "{B} helped {A.o} find the {obj}, {so} {A} was {feel:happy}.",
    "{AB} played with the {obj} together.",
    "{AB} counted {num} {objs}.",
    '"Let us go to the {place}," {B} said.',
    "{B} was {feel:angry} {because} {A} took {B.p} {obj2}.",
    "{AB} were {feel} {because} it was {weather}.",
    "{B} had {num} {colour2} {obj2s}.",
    '{A} asked {B.o}, "Do you like my {obj}?"',
]

ENDINGS: list[str] = [
    "At the end of the day, {A} went home.",
    "{A} was very {feel:happy}.",
    "{A} smiled and went to sleep.",
    "It was the best day ever.",
    "{A} went home with {A.p} {colour} {obj}.",
    "{A} loved {A.p} {colour} {obj}.",
    "{A} was {feel:happy} at the {place}.",
    "{A} went home with {num} {colour2} {obj2s}.",
]

AB_ENDINGS: list[str] = [
    "{AB} went home {feel:happy}.",
    "{AB} were good friends.",
    "At the end of the day, {AB} went home.",
]
