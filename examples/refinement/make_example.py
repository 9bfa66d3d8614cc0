"""Build the refinement example: `python examples/refinement/make_example.py`.

Six everyday prompts, candidate responses from five imaginary generators, and gold rubrics to compare them by:

- `prompts.jsonl`: the prompts (`{prompt_id, prompt}`), what rubrics are generated from;
- `gold_rubrics.jsonl`: rule rubrics that stand in for a gold judge (`{"backend": "rubric"}`): a good answer stays
  on topic, names at least two specifics, is 15 to 40 words long, finishes its last sentence, does not repeat
  itself and does not deflect;
- `responses.jsonl`: candidates to refine on, one kind per generator: terse one-liners, helpful answers, fluent
  answers that name no specifics (good-sounding, not great), bare markdown lists, rambling repetitive answers and
  deflections;
- `heldout_responses.jsonl`: other responses of the same kinds to the same prompts, for the quality report;
- `endpoint.json`: the scripted server on port 8765 as proposer, rewriter and judge of llm criteria.
"""

import json
import re
from pathlib import Path

HERE = Path(__file__).parent

# prompt id -> (prompt, specifics a helpful answer names, terse answers, helpful answers, fluent answers that name
# no specifics); the last terse answer, the last two helpful answers and the last fluent answer are held out.
PROMPTS = {
    "boil-egg": (
        "How do I boil an egg?",
        ["water", "minutes", "boil", "cold", "shell", "heat"],
        ["Just boil the egg.", "Boil the egg until done.", "You simply boil the egg."],
        [
            "Put the egg in a pot of cold water, bring it to a boil, then simmer for 9 minutes. Cool it in cold "
            "water before you peel the shell.",
            "Lower the egg into boiling water and cook it for 6 minutes for a soft yolk or 10 for a hard one. Then "
            "move it to cold water.",
            "Cover the egg with cold water, heat until it boils, and cook 8 to 10 minutes. A bowl of ice water "
            "afterwards makes the shell easy to peel.",
            "Boil water, add the egg gently with a spoon, and time it: about 7 minutes gives a jammy yolk. Rinse "
            "under cold water and peel.",
        ],
        [
            "Boiling an egg is one of those kitchen basics that everyone should learn, and once you have done it a "
            "few times it becomes second nature for you.",
            "An egg is simple to boil, and the exact result depends on your own taste, so feel free to experiment "
            "until you find the way you enjoy it most.",
        ],
    ),
    "sleep-better": (
        "How can I sleep better at night?",
        ["bed", "screen", "caffeine", "routine", "dark", "same time"],
        ["Try to sleep better.", "Sleep more at night.", "Just get better sleep at night."],
        [
            "Go to bed at the same time every night, keep the bedroom dark and cool, and avoid caffeine after "
            "lunch. Put your screen away an hour before sleep.",
            "Build a calm routine: dim the lights, read instead of scrolling on a screen, and skip caffeine late "
            "in the day. A regular wake-up time helps most.",
            "Keep a steady routine with the same time for bed and waking, avoid caffeine in the afternoon, and "
            "make the room dark and quiet.",
            "Stop using your phone screen an hour before bed, limit caffeine to the morning, and get daylight "
            "early so your body clock settles.",
        ],
        [
            "Sleeping better at night is something many people struggle with, and small changes to your habits can "
            "make a real difference to how rested you feel.",
            "Good sleep matters a lot for your health and mood, so it is worth paying attention to it and making it a"
            " priority in your life every single day.",
        ],
    ),
    "make-tea": (
        "How do I make a good cup of tea?",
        ["water", "boil", "minutes", "steep", "cup", "milk"],
        ["Make the tea carefully.", "Make a good cup of tea.", "Just make tea you like."],
        [
            "Boil fresh water, pour it over the tea in a warmed cup, and steep for three to five minutes. Remove "
            "the bag, then add milk if you like.",
            "Use water just off the boil for black tea and cooler water for green tea. Steep for about three "
            "minutes and taste before adding milk or sugar.",
            "Warm the pot first, add one bag per cup, pour on boiling water and let it steep four minutes. Add a "
            "splash of milk at the end.",
            "Heat fresh water to a rolling boil, steep loose leaves for three to four minutes, then strain. Do not "
            "squeeze the bag, it turns bitter.",
        ],
        [
            "A good cup of tea is a small pleasure, and everyone has their own preferences, so the best approach is "
            "to try a few ways and keep the one you like.",
            "Making tea well is mostly about care and attention, and with some patience you will soon be able to brew"
            " a cup that suits your taste perfectly.",
        ],
    ),
    "fix-flat": (
        "How do I fix a flat bicycle tire?",
        ["tube", "patch", "pump", "tire", "hole", "lever"],
        ["Fix the flat tire.", "Repair the bicycle tire.", "Just fix the flat."],
        [
            "Take the wheel off, use a tire lever to pull out the tube, and find the hole by pumping air into it. "
            "Patch it, refit the tube and pump it up.",
            "Remove the tube with tire levers, check the tire for glass or thorns, and fit a new tube or glue on a "
            "patch. Inflate it to the pressure on the sidewall.",
            "Lever one side of the tire off the rim, pull the tube out and find the hole in a bowl of water. Patch "
            "it, reinstall it and pump.",
            "Let out the remaining air, pry the tire off with levers, and replace the punctured tube. Check inside "
            "the tire for the sharp cause before you pump.",
        ],
        [
            "Fixing a flat bicycle tire is a useful skill for any cyclist, and with a bit of patience and the right "
            "approach it is not as hard as it looks.",
            "A flat tire can happen to anyone who rides a bicycle, so it is worth learning to deal with it calmly and"
            " carefully whenever it happens to you.",
        ],
    ),
    "plant-care": (
        "How often should I water a houseplant?",
        ["soil", "dry", "water", "week", "drain", "plant"],
        ["Water the houseplant often.", "Water it regularly.", "Water your houseplant when needed."],
        [
            "Check the soil with your finger and water when the top inch is dry, usually about once a week. Make "
            "sure the pot can drain so roots do not rot.",
            "Most houseplants need water every one to two weeks. Water thoroughly until it runs out of the drain "
            "hole, then wait until the soil dries out again.",
            "Water when the top of the soil feels dry, which is often once a week in summer and less in winter. "
            "Empty the saucer so the plant never sits in water.",
            "Push a finger into the soil: if it is dry two centimetres down, water slowly until excess drains. "
            "Succulents need less, ferns a bit more.",
        ],
        [
            "Watering a houseplant the right amount takes some attention, because every home is different, and over "
            "time you will learn what keeps yours happy and healthy.",
            "How often to water depends on many things, so it helps to pay attention to how your houseplant looks and"
            " adjust your habits as you go along.",
        ],
    ),
    "rice": (
        "How do I cook rice on the stove?",
        ["water", "rice", "boil", "simmer", "minutes", "lid"],
        ["Cook the rice on the stove.", "Cook rice until it is done.", "Just cook the rice."],
        [
            "Rinse one cup of rice, add two cups of water and bring it to a boil. Cover with a lid, simmer on low "
            "for 18 minutes, then rest it for five.",
            "Use about 1.5 cups of water per cup of white rice. Boil, stir once, put the lid on and simmer gently "
            "for 15 minutes without lifting it.",
            "Bring salted water to a boil, add the rinsed rice, cover it and turn the heat to low. After about 18 "
            "minutes turn it off and fluff with a fork.",
            "Toast the rice in a little oil, add twice its volume of water, and boil. Then lower the heat, cover "
            "with a tight lid and simmer 17 minutes.",
        ],
        [
            "Cooking rice on the stove is easy once you get used to it, and with a little practice you will have "
            "fluffy results that go well with almost any meal.",
            "Rice is a staple in many kitchens around the world, and making it on the stove is a skill that pays off "
            "again and again for everyday cooking.",
        ],
    ),
}

COMMON_WORDS = {"how", "can", "the", "and", "for", "what", "should", "often", "make", "good"}
DEFLECTIONS = ["as an ai", "ai assistant", "i cannot", "i can't help", "i am unable"]
FILLER = "It is really important to get this right. It is really important to get this right."
DEFLECTION = "As an AI assistant I cannot really help with questions like this. Please look it up online."


def gold_criteria(prompt: str, specifics: list[str]) -> list[dict]:
    """What a good short answer does, checked by rules (the shape of `data/everyday`'s gold rubrics)."""
    prompt_words = set(re.findall(r"[a-z]+", prompt.lower()))
    subject = sorted(w for w in prompt_words if len(w) >= 3 and w not in COMMON_WORDS)
    new = [k for k in specifics if not set(k.split()) <= prompt_words]
    on_subject = list(dict.fromkeys(subject + specifics))
    return [
        {
            "id": "on_topic",
            "kind": "rule",
            "weight": 2,
            "text": f"Mentions one of: {', '.join(on_subject)}.",
            "check": {"type": "contains", "any_of": on_subject},
        },
        {
            "id": "specific",
            "kind": "rule",
            "weight": 2,
            "text": f"Names at least two of: {', '.join(new)}.",
            "check": {"type": "contains", "any_of": new, "min_matches": 2},
        },
        {
            "id": "length_window",
            "kind": "rule",
            "weight": 2,
            "text": "Is 15 to 40 words long.",
            "check": {"type": "word_count", "min": 15, "max": 40},
        },
        {
            "id": "finishes",
            "kind": "rule",
            "weight": 2,
            "text": "Ends with a finished sentence.",
            "check": {"type": "regex", "pattern": r"[.!?)]\s*$"},
        },
        {
            "id": "no_repetition",
            "kind": "rule",
            "weight": 1,
            "text": "Does not repeat itself.",
            "check": {"type": "no_repetition", "ngram": 3, "max_repeat_fraction": 0.15},
        },
        {
            "id": "deflects",
            "kind": "rule",
            "weight": -3,
            "text": "Deflects instead of answering.",
            "check": {"type": "contains", "any_of": DEFLECTIONS},
        },
    ]


def candidates(
    prompt_id: str, specifics: list[str], terse: list[str], helpful: list[str], fluent: list[str], heldout: bool
) -> list[dict]:
    """The candidate responses of one prompt, for refinement or held out."""
    if heldout:
        terse, helpful, fluent, listed = terse[2:], helpful[2:], fluent[1:], specifics[2:]
    else:
        terse, helpful, fluent, listed = terse[:2], helpful[:2], fluent[:1], specifics[:4]
    rows = [("brief-bot", i, text) for i, text in enumerate(terse)]
    rows += [("helper-7b", i, text) for i, text in enumerate(helpful)]
    rows.append(("waffler", 0, fluent[0]))
    rows.append(("lister", 0, "**Key points**\n" + "\n".join(f"- {word}" for word in listed)))
    rows.append(("rambler", 0, f"{fluent[0]} {fluent[0]} {FILLER}"))
    rows.append(("refuser", 0, DEFLECTION))
    return [{"prompt_id": prompt_id, "generator": g, "index": i, "response": r} for g, i, r in rows]


def write(name: str, records: list[dict]) -> None:
    (HERE / name).write_text("".join(json.dumps(record) + "\n" for record in records))


if __name__ == "__main__":
    write("prompts.jsonl", [{"prompt_id": key, "prompt": prompt} for key, (prompt, *_) in PROMPTS.items()])
    gold = []
    for key, (prompt, specifics, *_) in PROMPTS.items():
        rubric = {"id": f"{key}-gold", "prompt_id": key, "criteria": gold_criteria(prompt, specifics)}
        gold.append({"prompt_id": key, "prompt": [{"role": "user", "content": prompt}], "rubric": rubric})
    write("gold_rubrics.jsonl", gold)
    for name, heldout in (("responses.jsonl", False), ("heldout_responses.jsonl", True)):
        write(name, [c for key, (_, *rest) in PROMPTS.items() for c in candidates(key, *rest, heldout=heldout)])
    endpoint = {"backend": "openai", "model": "scripted-judge", "base_urls": ["http://127.0.0.1:8765/v1"]}
    (HERE / "endpoint.json").write_text(json.dumps(endpoint, indent=2) + "\n")
    print(f"wrote the example to {HERE}")
