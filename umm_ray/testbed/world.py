"""The embedded instruction world: task families, prompt templates, and programmatic SFT responses.

Every prompt is rendered from a `Task` and ends with "\\nAnswer:"; `parse_prompt` inverts the rendering, so the prompt
text alone says what is asked (the gold reward relies on that). Responses start with a space.

    prompts = make_prompts(3000, seed=0)             # list[PromptRecord], unique prompt texts
    sft_responses(prompts[0], k=4, rng=random.Random(0))
    # -> [' apple, cherry, plum.', ' apple, dog.', ...]   (varied quality: the SFT data)

Families (instruction regimes; the gold rubric weights its terms differently per family):
    list      "List 3 fruits other than fig."                    -> " apple, pear, plum."
    describe  "Describe a cat with 2 words about color."         -> " the cat is black and white."
    answer    "What color is a banana?"                          -> " a banana is yellow."
    rewrite   "Rewrite with opposites: big hot."                 -> " small cold."
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from umm_ray.records import PromptRecord
from umm_ray.testbed import lexicon as lx

# The instruction-task families of the testbed world (PreferencePair.family); not the backbone architectures, which
# are `umm_ray.models.families.ARCH_FAMILIES`.
TASK_FAMILIES: tuple[str, ...] = ("list", "describe", "answer", "rewrite")
SUFFIX = "\nAnswer:"


@dataclass(frozen=True)
class Task:
    """What a prompt asks, parsed. Field use per family:

    list: topic=category, n=items, exclude=forbidden member or "".  describe: topic=aspect, subject=object, n=words.
    answer: topic in {color, kind, sound, opposite, pick}, subject (+ words: the options of pick).
    rewrite: topic in {opposites, plural}, words.
    """

    family: str
    topic: str
    subject: str = ""
    n: int = 0
    words: tuple[str, ...] = ()
    exclude: str = ""


def _art(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# Templates per (family, variant). `{a}` is the article of the subject. Each has a regex built by `_pattern`.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "list": ("List {n} {topic}.", "Name {n} {topic}.", "Give {n} examples of {topic}.", "Write down {n} {topic}.",
             "List {n} {topic} other than {exclude}.", "Name {n} {topic}, but not {exclude}.",
             "Give {n} examples of {topic}, not {exclude}."),
    "describe": ("Describe {a} {subject} with {n} words about {topic}.",
                 "Describe the {topic} of {a} {subject} using {n} words.",
                 "What is {a} {subject} like? Use {n} {topic} words."),
    "answer:color": ("What color is {a} {subject}?", "Which color does {a} {subject} have?"),
    "answer:kind": ("What kind of thing is {a} {subject}?", "{A} {subject} is what kind of thing?"),
    "answer:sound": ("What sound does {a} {subject} make?", "Which sound does {a} {subject} make?"),
    "answer:opposite": ("What is the opposite of {subject}?", "Give the opposite of {subject}."),
    "answer:pick": ("Which of these is {a} {subject}: {options}?", "Pick the {subject} among {options}."),
    "rewrite:opposites": ("Rewrite with opposites: {words}.", "Replace each word by its opposite: {words}."),
    "rewrite:plural": ("Rewrite in plural: {words}.", "Make each word plural: {words}."),
}


def _template_key(task: Task) -> str:
    return f"{task.family}:{task.topic}" if task.family in ("answer", "rewrite") else task.family


def render(task: Task, variant: int) -> str:
    """The prompt text for `task` using template number `variant` (modulo the available templates)."""
    options = TEMPLATES[_template_key(task)]
    if task.family == "list":
        options = tuple(t for t in options if ("{exclude}" in t) == bool(task.exclude))
    art = _art(task.subject) if task.subject else ""
    text = options[variant % len(options)].format(
        n=task.n, topic=task.topic, subject=task.subject, exclude=task.exclude, words=" ".join(task.words),
        options=", ".join(task.words),
        a=art, A=art.capitalize())
    return re.sub(r"\b1 words\b", "1 word", text) + SUFFIX


def _pattern(template: str) -> re.Pattern:
    rx = re.escape(template + SUFFIX)
    for name, group in (("n", r"(?P<n>\d+)"), ("topic", r"(?P<topic>[a-z]+)"), ("subject", r"(?P<subject>[a-z]+)"),
                        ("exclude", r"(?P<exclude>[a-z]+)"), ("words", r"(?P<words>[a-z]+(?: [a-z]+)*)"),
                        ("options", r"(?P<options>[a-z]+(?:, [a-z]+)+)"),
                        ("a", r"an?"), ("A", r"An?")):
        rx = rx.replace(re.escape("{" + name + "}"), group)
    return re.compile(rx)


_PATTERNS = [(key, _pattern(t)) for key, ts in TEMPLATES.items() for t in ts]


def parse_prompt(prompt: str) -> Task:
    """Recover the Task from a prompt's text (leading/trailing whitespace ignored).

    Raises:
        ValueError: naming the prompt, when it was not rendered by this world or mentions unknown words.
    """
    text = prompt.strip() + SUFFIX if not prompt.rstrip().endswith(SUFFIX.strip()) else prompt.strip()
    text = re.sub(r"\b1 word\b", "1 words", text)
    for key, rx in _PATTERNS:
        m = rx.fullmatch(text)
        if m:
            family, _, topic = key.partition(":")
            g = m.groupdict()
            task = Task(family=family, topic=topic or g.get("topic") or "", subject=g.get("subject") or "",
                        n=int(g.get("n") or 0),
                        words=tuple((g.get("words") or g.get("options") or "").replace(",", " ").split()),
                        exclude=g.get("exclude") or "")
            _check_task(task, prompt)
            return task
    raise ValueError(f"not a testbed prompt (no template matches): {prompt!r}")


def _check_task(t: Task, prompt: str) -> None:
    if t.family == "list":
        ok = t.topic in lx.CATEGORIES and t.n >= 1 and (not t.exclude or t.exclude in lx.CATEGORIES[t.topic])
    elif t.family == "describe":
        ok = t.topic in lx.ASPECTS and lx.category_of(t.subject) is not None and t.n >= 1
    elif t.family == "answer":
        ok = answer_of(t) is not None
    else:
        ok = len(t.words) >= 1 and all(_rewrite_word(t.topic, w) for w in t.words)
    if not ok:
        raise ValueError(f"testbed prompt asks about unknown words or counts: {prompt!r}")


# ---------------------------------------------------------------------------------------------------------------------
# World facts and reference responses.


def plural(noun: str) -> str:
    """English plural of a world noun (irregular table first, then spelling rules)."""
    if noun in lx.IRREGULAR_PLURAL:
        return lx.IRREGULAR_PLURAL[noun]
    if noun.endswith(("s", "x", "ch", "sh")) or noun in ("potato", "tomato"):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _rewrite_word(mode: str, word: str) -> str | None:
    if mode == "opposites":
        return lx.OPPOSITE.get(word)
    return plural(word) if lx.category_of(word) else None


def answer_of(task: Task) -> str | None:
    """The single correct answer word of an answer-family task (None if the world has no such fact)."""
    s = task.subject
    if task.topic == "color":
        return lx.COLOR_OF.get(s)
    if task.topic == "kind":
        cat = lx.category_of(s)
        return lx.KIND[cat] if cat else None
    if task.topic == "sound":
        return lx.SOUND_OF.get(s)
    if task.topic == "opposite":
        return lx.OPPOSITE.get(s)
    if task.topic == "pick":
        hits = [w for w in task.words if lx.KIND.get(lx.category_of(w) or "") == s]
        return hits[0] if len(hits) == 1 else None
    return None


def answer_sentence(task: Task, answer: str) -> list[str]:
    """The full-sentence form of an answer, as words (the format the answer rubric rewards)."""
    s = task.subject
    return {"color": [_art(s), s, "is", answer], "kind": [_art(s), s, "is", _art(answer), answer],
            "sound": [_art(s), s, "says", answer], "opposite": ["the", "opposite", "of", s, "is", answer],
            "pick": [_art(answer), answer, "is", _art(s), s]}[task.topic]


def target_words(task: Task) -> list[str]:
    """Rewrite family: the exact expected output words."""
    return [_rewrite_word(task.topic, w) for w in task.words]


def join_list(items: list[str]) -> str:
    return ", ".join(items)


def join_and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def reference_response(task: Task, rng: random.Random) -> str:
    """A perfect response to `task` (random choices among equally correct answers drawn from `rng`)."""
    if task.family == "list":
        pool = [m for m in lx.CATEGORIES[task.topic] if m != task.exclude]
        return " " + join_list(rng.sample(pool, task.n)) + "."
    if task.family == "describe":
        adjs = rng.sample(lx.ASPECTS[task.topic], task.n)
        return f" the {task.subject} is {join_and(adjs)}."
    if task.family == "answer":
        return " " + " ".join(answer_sentence(task, answer_of(task))) + "."
    return " " + " ".join(target_words(task)) + "."


# ---------------------------------------------------------------------------------------------------------------------
# Prompt generation.


def _sample_task(family: str, rng: random.Random) -> Task:
    if family == "list":
        cat = rng.choice(list(lx.CATEGORIES))
        exclude = rng.choice(lx.CATEGORIES[cat]) if rng.random() < 0.5 else ""
        return Task("list", cat, n=rng.randint(2, 7), exclude=exclude)
    if family == "describe":
        cat = rng.choice(list(lx.CATEGORY_ASPECTS))
        aspect = rng.choice(lx.CATEGORY_ASPECTS[cat])
        n = rng.randint(1, min(4, len(lx.ASPECTS[aspect])))
        return Task("describe", aspect, subject=rng.choice(lx.CATEGORIES[cat]), n=n)
    if family == "answer":
        topic = rng.choice(("color", "kind", "sound", "opposite", "pick"))
        if topic == "pick":
            cat, *others = rng.sample(list(lx.CATEGORIES), rng.randint(3, 4))
            options = [rng.choice(lx.CATEGORIES[c]) for c in [cat, *others]]
            rng.shuffle(options)
            return Task("answer", "pick", subject=lx.KIND[cat], words=tuple(options))
        pool = {"color": sorted(lx.COLOR_OF), "kind": lx.all_objects(), "sound": sorted(lx.SOUND_OF),
                "opposite": sorted(lx.OPPOSITE)}[topic]
        return Task("answer", topic, subject=rng.choice(pool))
    topic = rng.choice(("opposites", "plural"))
    pool = sorted(lx.OPPOSITE) if topic == "opposites" else lx.all_objects()
    return Task("rewrite", topic, words=tuple(rng.sample(pool, rng.randint(2, 5))))


def make_prompts(n: int, seed: int) -> list[PromptRecord]:
    """`n` distinct prompts, families in equal shares (round-robin), deterministic in `seed` (n up to ~10000).

    Each record carries `family`, a perfect `reference` response, `source` "testbed:<seed>:<i>" and
    `meta` = the parsed task fields.

    Raises:
        ValueError: if `n` exceeds what the templates can produce without repeats.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[PromptRecord] = []
    misses = 0
    while len(out) < n:
        family = TASK_FAMILIES[len(out) % len(TASK_FAMILIES)]
        task = _sample_task(family, rng)
        text = render(task, rng.randrange(12))
        if text in seen:
            misses += 1
            if misses > 50 * n + 1000:
                raise ValueError(f"make_prompts: cannot draw {n} distinct prompts (got {len(out)})")
            continue
        seen.add(text)
        meta = {"topic": task.topic, "subject": task.subject, "n": task.n, "words": list(task.words),
                "exclude": task.exclude}
        out.append(PromptRecord(prompt=text, family=family, reference=reference_response(task, rng),
                                source=f"testbed:{seed}:{len(out)}", meta=meta))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# SFT responses of varied quality. Each response draws a latent skill q in [0, 1]; q drives how many correct items it
# has, whether it uses the full sentence form and the right format — so better responses are also longer, and length
# correlates with gold inside this distribution. Rarer failures independent of q add length that gold penalises:
# overshooting the budget, repeating items, rambling filler, a second wrong candidate.


def _skill(rng: random.Random) -> float:
    return min(1.0, rng.random() * 1.3)  # ~25% of responses are fully skilled


def _binomial(n: int, p: float, rng: random.Random) -> int:
    return sum(rng.random() < p for _ in range(n))


def _other_words(exclude: set[str], rng: random.Random, k: int) -> list[str]:
    pool = [w for w in lx.all_objects() + [a for ws in lx.ASPECTS.values() for a in ws] if w not in exclude]
    return rng.sample(pool, k)


def _mutate(items: list[str], good: list[str], rng: random.Random) -> list[str]:
    """Rare length failures shared by the families: overshoot with more good items, or repeat some items."""
    r = rng.random()
    if r < 0.1 and good:
        items = items + rng.sample(good, min(len(good), rng.randint(1, 4)))
    elif r < 0.2 and items:
        for _ in range(rng.randint(1, 3)):
            items.insert(rng.randrange(len(items) + 1), rng.choice(items))
    return items


def _with_wrong(items: list[str], wrong: list[str], rng: random.Random) -> list[str]:
    for w in wrong:  # off-topic words mostly take a correct word's place, sometimes add to the list
        if items and rng.random() < 0.7:
            items[rng.randrange(len(items))] = w
        else:
            items.insert(rng.randrange(len(items) + 1), w)
    return items


def _sft_list(task: Task, rng: random.Random) -> str:
    q = _skill(rng)
    pool = [m for m in lx.CATEGORIES[task.topic] if m != task.exclude]
    items = rng.sample(pool, min(_binomial(task.n, 0.2 + 0.8 * q, rng), len(pool)))
    wrong = _other_words(set(lx.CATEGORIES[task.topic]), rng, _binomial(2, 0.4 * (1 - q), rng))
    if task.exclude and rng.random() < 0.3 * (1 - q):
        wrong.append(task.exclude)
    items = _mutate(_with_wrong(items, wrong, rng), [m for m in pool if m not in items], rng)
    if rng.random() < 0.6 + 0.4 * q:
        return " " + join_list(items) + "."
    return " " + " ".join(items) + ("." if rng.random() < 0.5 else "")


def _sft_describe(task: Task, rng: random.Random) -> str:
    q = _skill(rng)
    good = list(lx.ASPECTS[task.topic])
    adjs = rng.sample(good, _binomial(task.n, 0.2 + 0.8 * q, rng))
    adjs = _with_wrong(adjs, _other_words(set(good), rng, _binomial(2, 0.4 * (1 - q), rng)), rng)
    adjs = _mutate(adjs, [a for a in good if a not in adjs], rng)
    head = f"the {task.subject} is" if rng.random() < 0.4 + 0.6 * q else rng.choice(("it is", "", task.subject))
    if rng.random() < 0.08:
        head = " ".join(rng.sample(lx.FILLER, rng.randint(2, 5))) + " " + head
    body = join_and(adjs) if rng.random() < 0.6 + 0.4 * q else " ".join(adjs)
    text = " ".join(p for p in (head, body) if p)
    return " " + text + ("." if rng.random() < 0.7 + 0.3 * q else "")


def _sft_answer(task: Task, rng: random.Random) -> str:
    q = _skill(rng)
    correct = answer_of(task)
    space = task.words if task.topic == "pick" else answer_space(task.topic)
    word = correct if rng.random() < 0.2 + 0.8 * q else rng.choice([w for w in space if w != correct])
    words = answer_sentence(task, word) if rng.random() < 0.1 + 0.9 * q else [word]
    r = rng.random()
    if r < 0.06:  # hedging filler
        words = rng.sample(lx.FILLER, rng.randint(2, 6)) + words
    elif r < 0.14:  # a second, wrong candidate
        words = words + ["or", rng.choice([w for w in space if w != correct])]
    elif r < 0.2:  # repetition
        words = words + [word] * rng.randint(1, 4)
    return " " + " ".join(words) + ("." if rng.random() < 0.7 + 0.3 * q else "")


def _sft_rewrite(task: Task, rng: random.Random) -> str:
    q = _skill(rng)
    out = []
    for s, t in zip(task.words, target_words(task)):
        if rng.random() < 0.2 + 0.8 * q:
            out.append(t)
            continue
        r = rng.random()  # a miss is usually a skipped word, else an echo of the source or a random word
        out += [] if r < 0.6 else [s] if r < 0.85 else _other_words({t}, rng, 1)
    r = rng.random()
    if r < 0.3 * (1 - q) and len(out) > 1:  # stops early
        out = out[:rng.randint(1, len(out) - 1)]
    elif r > 0.92:  # keeps going: repeats outputs or echoes the source
        out = out + rng.choices(out + list(task.words), k=rng.randint(1, 4))
    return " " + " ".join(out) + ("." if rng.random() < 0.7 + 0.3 * q else "")


_SFT = {"list": _sft_list, "describe": _sft_describe, "answer": _sft_answer, "rewrite": _sft_rewrite}


def answer_space(topic: str) -> tuple[str, ...]:
    """All candidate answers of an answer-family question type (the correct one among them)."""
    return {"color": lx.COLOR_ANSWERS, "kind": tuple(lx.KIND.values()), "sound": tuple(lx.SOUND_OF.values()),
            "opposite": tuple(lx.OPPOSITE), "pick": tuple(lx.all_objects())}[topic]


def sft_responses(prompt: PromptRecord | str, k: int, rng: random.Random | int) -> list[str]:
    """`k` programmatic responses of varied quality to one prompt: the SFT data (and its quality spread).

    Args:
        prompt: a PromptRecord or prompt text from this world (the text is parsed; nothing else is used).
        k: responses to draw.
        rng: a `random.Random` (advanced in place) or an int seed.
    """
    rng = random.Random(rng) if isinstance(rng, int) else rng
    task = parse_prompt(prompt.prompt if isinstance(prompt, PromptRecord) else prompt)
    return [_SFT[task.family](task, rng) for _ in range(k)]


def random_responses(prompts: list[str], rng: random.Random | int, tokenizer=None, max_tokens: int = 32
                     ) -> list[str]:
    """What an untrained policy says: uniformly random tokens (or lexicon words without a tokenizer).

    One response per prompt, length uniform in [1, max_tokens]; a baseline for gold (property a).
    """
    rng = random.Random(rng) if isinstance(rng, int) else rng
    words = lx.all_words() + [",", "."]
    out = []
    for _ in prompts:
        n = rng.randint(1, max_tokens)
        if tokenizer is not None:
            special = set(tokenizer.all_special_ids)
            ids = [i for i in (rng.randrange(len(tokenizer)) for _ in range(n)) if i not in special]
            out.append(tokenizer.decode(ids))
        else:
            out.append(" " + " ".join(rng.choice(words) for _ in range(n)))
    return out
