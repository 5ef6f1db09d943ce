"""bAbI-style reasoning, plain and BABILong-length.

Tasks qa1–qa5 are written from their published definitions (Weston et al., 2015, "Towards AI-Complete
Question Answering: A Set of Prerequisite Toy Tasks", tasks 1–5), simulating a small world of actors,
rooms and objects:

* ``qa1`` single supporting fact — actors move; "Where is Mary?" → her last room.
* ``qa2`` two supporting facts — actors also pick up and drop objects; "Where is the milk?" → the
  room of whoever holds it, or where it was dropped.
* ``qa3`` three supporting facts — "Where was the apple before the kitchen?" → the room the object
  was in just before it was carried into the kitchen.
* ``qa4`` two-argument relations — two facts "The X is <dir> of the Y."; "What is north of the Y?"
  or "What is the X north of?".
* ``qa5`` three-argument relations — actors give objects to each other (plus moves and pick-ups as
  distractors); "Who gave the football to Jeff?", "Who did Fred give the football to?", "What did
  Fred give to Jeff?", "Who gave the football?", "Who received the football?" — all about the last
  hand-over, as in bAbI.

Entity names follow bAbI (actors Mary, John, Sandra, Daniel; Bill, Fred, Jeff, Mary for qa5; rooms
bathroom, bedroom, garden, hallway, kitchen, office; objects apple, football, milk).

``length`` None gives the plain bAbI story. An integer gives the BABILong construction (Kuratov et
al., 2024, "BABILong: Testing the Limits of LLMs with Long Context Reasoning-in-a-Haystack"): the
story's sentences are scattered, in order, at random sentence boundaries of real background text so
that the prompt has exactly ``length`` characters (1M+ is fine: the prompt is a lazy recipe), and the
question comes at the end; ``meta["depths"]`` holds each story sentence's drawn depth (a fraction of
the background text; the sentence sits at the sentence boundary nearest it) and ``meta["positions"]``
its character offset in the prompt. Every prompt ends "\\nQuestion: ...\\nAnswer:" and the model generates a
one-word answer.

Scoring is BABILong's rule: the first sentence of the generated text must mention the target and no
other of the task's answer labels, ignoring labels that occur in the question; ``choices`` holds the
labels that remain, so ranking them is an equivalent way to answer.

BABILong to 1M tokens (the paper's Fig. 9) is ``hope bench-suite babi --train-length N --lengths ...``
(:mod:`hope.bench`): models train at a short length, then every test prompt streams through
``model(piece, state)`` ``--piece`` tokens at a time without gradients (``hope.eval.predict``), so a
memory model's footprint is set by the piece, not the length; attention models stop at ``--context``
(default 4x the training length) and longer lengths are reported as beyond their context.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hope.checks import check_choice, check_int
from hope.suites.common import Example, check_predictions
from hope.suites.haystack import layout, real_haystack

name = "babi"
tasks = ("qa1", "qa2", "qa3", "qa4", "qa5")

ACTORS = ("Mary", "John", "Sandra", "Daniel")
GIVERS = ("Bill", "Fred", "Jeff", "Mary")
ROOMS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
DIRECTIONS = ("north", "south", "east", "west")
_OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
_MOVE = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
_TAKE = ("picked up", "got", "grabbed", "took")
_DROP = ("dropped", "put down", "discarded", "left")
_GIVE = ("gave", "handed", "passed")

LABELS = {
    "qa1": ROOMS,
    "qa2": ROOMS,
    "qa3": ROOMS,
    "qa4": ROOMS,
    "qa5": (*GIVERS, *OBJECTS),
}
"""The answer labels of each task (BABILong's ``TASK_LABELS``)."""

_EVENTS = {"qa1": (2, 10), "qa2": (4, 20), "qa3": (6, 30), "qa5": (4, 20)}
"""Range of story events per task when ``facts`` is not given (qa4 always has two facts)."""

_MAX_DRAWS = 1000
"""Stories drawn before giving up on a ``facts`` count too small to support the task's question."""


class _World:
    """Actors, their rooms and the objects they carry; each action returns its sentence or None."""

    def __init__(self, actors: Sequence[str], rng: random.Random) -> None:
        self.rng = rng
        self.actors = actors
        self.room: dict[str, str] = {}
        self.holder: dict[str, str] = {}  # object -> actor carrying it
        self.place: dict[str, str] = {}  # object -> room it is in (carried or dropped)
        self.trail: dict[str, list[str]] = {o: [] for o in OBJECTS}  # distinct consecutive rooms
        self.gives: list[tuple[str, str, str]] = []  # (giver, object, receiver)

    def _put(self, obj: str, room: str) -> None:
        self.place[obj] = room
        if not self.trail[obj] or self.trail[obj][-1] != room:
            self.trail[obj].append(room)

    def move(self) -> str:
        actor = self.rng.choice(self.actors)
        room = self.rng.choice([r for r in ROOMS if r != self.room.get(actor)])
        self.room[actor] = room
        for obj, who in self.holder.items():
            if who == actor:
                self._put(obj, room)
        return f"{actor} {self.rng.choice(_MOVE)} the {room}."

    def take(self) -> str | None:
        placed = [a for a in self.actors if a in self.room]
        if not placed:
            return None
        actor = self.rng.choice(placed)
        # Free objects never placed, or lying in the actor's room, can be picked up there.
        free = [
            o
            for o in OBJECTS
            if o not in self.holder and self.place.get(o, self.room[actor]) == self.room[actor]
        ]
        if not free:
            return None
        obj = self.rng.choice(free)
        self.holder[obj] = actor
        self._put(obj, self.room[actor])
        there = " there" if self.rng.random() < 0.5 else ""
        return f"{actor} {self.rng.choice(_TAKE)} the {obj}{there}."

    def drop(self) -> str | None:
        if not self.holder:
            return None
        obj = self.rng.choice(sorted(self.holder))
        actor = self.holder.pop(obj)
        return f"{actor} {self.rng.choice(_DROP)} the {obj}."

    def give(self) -> str | None:
        options = [
            (giver, obj, receiver)
            for obj, giver in sorted(self.holder.items())
            for receiver in self.actors
            if receiver != giver and self.room.get(receiver) == self.room[giver]
        ]
        if not options:
            return None
        giver, obj, receiver = self.rng.choice(options)
        self.holder[obj] = receiver
        self.gives.append((giver, obj, receiver))
        return f"{giver} {self.rng.choice(_GIVE)} the {obj} to {receiver}."


def _story(task: str, rng: random.Random, events: int) -> tuple[list[str], str, str] | None:
    """(sentences, question, answer) for one story, or None when this draw cannot ask a question."""
    if task == "qa4":
        a, b, c = rng.sample(ROOMS, 3)
        d1 = rng.choice(DIRECTIONS)
        # An opposite direction would make "What is the A <d1> of?" ambiguous (both B and C).
        d2 = rng.choice([d for d in DIRECTIONS if d != _OPPOSITE[d1]])
        facts = [(a, d1, b), (c, d2, a)]
        sentences = [f"The {x} is {d} of the {y}." for x, d, y in facts]
        rng.shuffle(sentences)
        x, d, y = rng.choice(facts)
        if rng.random() < 0.5:
            return sentences, f"What is {d} of the {y}?", x
        return sentences, f"What is the {x} {d} of?", y

    world = _World(GIVERS if task == "qa5" else ACTORS, rng)
    actions = {"qa1": (world.move,), "qa2": (world.move, world.move, world.take, world.drop)}
    actions["qa3"] = actions["qa2"]
    actions["qa5"] = (world.move, world.take, world.give, world.give, world.drop)
    sentences = []
    while len(sentences) < events:
        sentence = rng.choice(actions[task])()
        if sentence is not None:
            sentences.append(sentence)

    if task == "qa1":
        actor = rng.choice(sorted(world.room))
        return sentences, f"Where is {actor}?", world.room[actor]
    if task == "qa2":
        known = sorted(world.place)
        if not known:
            return None
        obj = rng.choice(known)
        return sentences, f"Where is the {obj}?", world.place[obj]
    if task == "qa3":
        pairs = [
            (obj, trail[j - 1], trail[j])
            for obj, trail in world.trail.items()
            for j in range(1, len(trail))
            if trail.count(trail[j]) == 1  # "before the kitchen" must name a single visit
        ]
        if not pairs:
            return None
        obj, before, room = rng.choice(pairs)
        return sentences, f"Where was the {obj} before the {room}?", before
    if not world.gives:
        return None
    giver, obj, receiver = world.gives[-1]
    questions = [
        (f"Who gave the {obj} to {receiver}?", giver),
        (f"Who did {giver} give the {obj} to?", receiver),
        (f"Who gave the {obj}?", giver),
        (f"Who received the {obj}?", receiver),
    ]
    if sum(1 for g, _, r in world.gives if (g, r) == (giver, receiver)) == 1:
        questions.append((f"What did {giver} give to {receiver}?", obj))
    question, answer = rng.choice(questions)
    return sentences, question, answer


def _choices(task: str, question: str) -> tuple[str, ...]:
    lowered = question.lower()
    return tuple(label for label in LABELS[task] if label.lower() not in lowered)


def generate(
    task: str,
    n: int,
    length: int | None,
    seed: int,
    *,
    facts: int | None = None,
    haystack: str | None = None,
) -> list[Example]:
    """``n`` questions of ``task``; plain bAbI when ``length`` is None, else BABILong prompts of ``length`` characters.

    Args:
        facts: number of story events (qa4 always has 2); None draws it per story from the task's range.
        haystack: background text for BABILong (default: the built-in corpus, else a vendored passage).
    """
    check_choice("task", task, tasks)
    check_int("n", n)
    check_int("seed", seed, 0)
    if length is not None:
        check_int("length", length)
    if facts is not None:
        check_int("facts", facts)
    hay = real_haystack(haystack) if length is not None else None
    examples = []
    for i in range(n):
        rng = random.Random(f"babi/{task}/{seed}/{i}")
        story = None
        for _ in range(_MAX_DRAWS):
            events = 2 if task == "qa4" else facts or rng.randint(*_EVENTS[task])
            story = _story(task, rng, events)
            if story is not None:
                break
        else:
            raise ValueError(f"facts={facts} is too few events for {task} to pose a question; use more")
        sentences, question, answer = story
        suffix = f"\nQuestion: {question}\nAnswer:"
        where = {}
        if hay is None:
            prompt = " ".join(sentences) + suffix
        else:
            depths = sorted(rng.random() for _ in sentences)
            prompt = layout(hay, rng, "", suffix, [s + " " for s in sentences], depths, length)
            # Story order is kept (sorted depths, stable ties), so positions line up with sentences.
            where = {"depths": depths, "positions": prompt.insert_positions()}
        meta = {
            "task": task,
            "length": length,
            "seed": seed,
            "index": i,
            "unit": "characters",
            "story": sentences,
            "question": question,
            **where,
        }
        examples.append(
            Example(prompt=prompt, answers=(answer,), choices=_choices(task, question), meta=meta)
        )
    return examples


def _first_sentence(text: str) -> str:
    """BABILong's output cleaning: lower-case, keep the first sentence, cut any echoed question."""
    return text.lower().split(".")[0].split("question")[0]


def correct(example: Example, prediction: str) -> bool:
    """BABILong's rule: the target is the only label (outside those in the question) that the answer mentions."""
    said = _first_sentence(prediction)
    mentioned = {label.lower() for label in example.choices if label.lower() in said}
    return mentioned == {example.answers[0].lower()}


def score(examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, float]:
    """``accuracy`` under :func:`correct`, plus ``n``."""
    check_predictions(examples, predictions)
    hits = []
    for ex, pred in zip(examples, predictions):
        if not isinstance(pred, str):
            raise ValueError(f"predictions must be generated strings; got {type(pred).__name__}")
        hits.append(correct(ex, pred))
    return {"accuracy": sum(hits) / len(hits), "n": float(len(hits))}


def chance(examples: Sequence[Example]) -> float:
    """Expected accuracy of answering with a uniformly random remaining label."""
    if not examples:
        raise ValueError("examples must not be empty")
    return sum(1 / len(ex.choices) for ex in examples) / len(examples)
