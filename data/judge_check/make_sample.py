"""Build the labelled judge-check sample: `python data/judge_check/make_sample.py`.

Twelve everyday prompts, each with one or two `llm` criteria and two or three short responses labelled by hand
for every criterion. The labels are meant to be unambiguous to a person (a response either plainly does what
a criterion says or plainly does not), so disagreement with them is the judge's. `rubrics.jsonl` holds dataset
rows (prompt and rubric); `responses.jsonl` one line per response with its labels by criterion id.
"""

import json
from pathlib import Path

HERE = Path(__file__).parent

# (prompt id, prompt, {criterion id: text}, [(response id, response, {criterion id: satisfied})])
SAMPLE = [
    (
        "boil-egg",
        "How do I boil an egg?",
        {
            "in_water": "The response says to cook the egg in water.",
            "gives_minutes": "The response says roughly how many minutes to cook the egg.",
        },
        [
            (
                "full",
                "Put the egg in a pot of cold water, bring it to a boil, then simmer for 9 minutes and cool it in cold water.",
                {"in_water": True, "gives_minutes": True},
            ),
            ("vague", "Just cook it in boiling water until it is done.", {"in_water": True, "gives_minutes": False}),
            (
                "off-topic",
                "Eggs are a good source of protein and are eaten at breakfast all over the world.",
                {"in_water": False, "gives_minutes": False},
            ),
        ],
    ),
    (
        "capital-france",
        "What is the capital of France?",
        {"names_paris": "The response names Paris as the capital of France."},
        [
            ("right", "The capital of France is Paris.", {"names_paris": True}),
            ("wrong", "The capital of France is Lyon.", {"names_paris": False}),
        ],
    ),
    (
        "make-tea",
        "How do I make a good cup of tea?",
        {
            "hot_water": "The response says to use hot or boiling water.",
            "steep_time": "The response says how many minutes to steep the tea.",
        },
        [
            (
                "full",
                "Pour freshly boiled water over a tea bag and let it steep for three to five minutes, then remove the bag.",
                {"hot_water": True, "steep_time": True},
            ),
            (
                "no-time",
                "Use boiling water and a good tea bag, and add milk if you like.",
                {"hot_water": True, "steep_time": False},
            ),
            (
                "history",
                "Tea has been drunk in China for thousands of years and came to Europe in the 1600s.",
                {"hot_water": False, "steep_time": False},
            ),
        ],
    ),
    (
        "water-plant",
        "How often should I water a houseplant?",
        {"check_soil": "The response says to check whether the soil is dry before watering."},
        [
            (
                "soil",
                "Water it when the top few centimetres of soil feel dry, usually about once a week.",
                {"check_soil": True},
            ),
            ("daily", "Water it every day at the same time, no matter what.", {"check_soil": False}),
        ],
    ),
    (
        "cold-remedy",
        "What helps when I have a common cold?",
        {"rest": "The response recommends rest.", "see_doctor": "The response says when to see a doctor."},
        [
            (
                "full",
                "Rest, drink plenty of fluids, and see a doctor if your fever lasts more than three days.",
                {"rest": True, "see_doctor": True},
            ),
            (
                "vitamins",
                "Take lots of vitamin C and keep going to work as usual.",
                {"rest": False, "see_doctor": False},
            ),
        ],
    ),
    (
        "fix-flat",
        "How do I fix a flat bicycle tire?",
        {"tube": "The response explains patching or replacing the inner tube."},
        [
            (
                "patch",
                "Take the wheel off, lever the tire off, find the hole in the inner tube, patch it, then refit and pump it up.",
                {"tube": True},
            ),
            ("shop", "Bicycles are a cheap and healthy way to get around town.", {"tube": False}),
        ],
    ),
    (
        "password",
        "How do I create a strong password?",
        {
            "long": "The response recommends a long password.",
            "manager": "The response recommends using a password manager.",
        },
        [
            (
                "both",
                "Use a long passphrase of at least 14 characters and keep it in a password manager.",
                {"long": True, "manager": True},
            ),
            (
                "long-only",
                "Make it long, at least 16 characters, and mix in numbers and symbols.",
                {"long": True, "manager": False},
            ),
            ("bad", "Use your pet's name so you never forget it.", {"long": False, "manager": False}),
        ],
    ),
    (
        "rice",
        "How do I cook rice on the stove?",
        {"ratio": "The response gives an amount of water relative to the amount of rice."},
        [
            (
                "ratio",
                "Use two cups of water for each cup of rice, bring it to a boil, cover and simmer for 18 minutes.",
                {"ratio": True},
            ),
            ("no-ratio", "Rice is a staple food for more than half of the world's people.", {"ratio": False}),
        ],
    ),
    (
        "thank-you-spanish",
        "How do you say 'thank you' in Spanish?",
        {"gracias": "The response gives the Spanish word 'gracias'."},
        [("right", "You say 'gracias'.", {"gracias": True}), ("wrong", "You say 'merci'.", {"gracias": False})],
    ),
    (
        "burn",
        "What should I do if I burn my hand on the stove?",
        {
            "cool_water": "The response says to cool the burn under running water.",
            "no_ice": "The response avoids recommending ice or butter on the burn.",
        },
        [
            (
                "right",
                "Hold it under cool running water for about 20 minutes, then cover it loosely with a clean bandage.",
                {"cool_water": True, "no_ice": True},
            ),
            (
                "butter",
                "Rub butter on it straight away, or press an ice cube against it.",
                {"cool_water": False, "no_ice": False},
            ),
        ],
    ),
    (
        "dog-walk",
        "How often should I walk my dog?",
        {"per_day": "The response gives a number of walks per day."},
        [
            ("number", "Most dogs need two walks a day of about 30 minutes each.", {"per_day": True}),
            ("no-number", "Dogs are loyal animals and make wonderful pets.", {"per_day": False}),
        ],
    ),
    (
        "multiply",
        "What is 15 times 4?",
        {"sixty": "The response gives 60 as the answer."},
        [("right", "15 times 4 is 60.", {"sixty": True}), ("wrong", "15 times 4 is 45.", {"sixty": False})],
    ),
]


def main() -> None:
    rubrics, responses = [], []
    for prompt_id, prompt, criteria, answers in SAMPLE:
        rubric = {
            "id": prompt_id,
            "prompt_id": prompt_id,
            "criteria": [{"id": cid, "text": text, "kind": "llm", "weight": 1.0} for cid, text in criteria.items()],
        }
        rubrics.append({"prompt_id": prompt_id, "prompt": prompt, "rubric": rubric})
        for response_id, response, labels in answers:
            if set(labels) != set(criteria):
                raise ValueError(
                    f"{prompt_id}/{response_id}: labels {sorted(labels)} differ from criteria {sorted(criteria)}"
                )
            responses.append(
                {"prompt_id": prompt_id, "response_id": response_id, "response": response, "labels": labels}
            )
    for name, records in (("rubrics.jsonl", rubrics), ("responses.jsonl", responses)):
        (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    labels = [value for r in responses for value in r["labels"].values()]
    print(f"{len(rubrics)} prompts, {len(responses)} responses, {len(labels)} labels ({sum(labels)} true)")


if __name__ == "__main__":
    main()
