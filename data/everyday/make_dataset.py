"""Build the bundled everyday-prompts dataset: `python data/everyday/make_dataset.py`.

Every prompt gets a rubric whose high scores mean a good short answer, not just a short one: it must stay
on topic (mention the things a helpful answer mentions), land in a length window (neither a one-liner nor a
ramble cut off by the token budget), finish its last sentence, not repeat itself, and not deflect.
`*_rules.jsonl` grades all of it with rules; `*_llm.jsonl` asks an LLM judge the content questions and keeps
the mechanical checks (length, ending) as rules.
"""

import json
import re
from pathlib import Path

HERE = Path(__file__).parent

# (prompt id, prompt, words a helpful answer uses, what a helpful answer covers)
TRAIN = [
    ("boil-egg", "How do I boil an egg?", ["water", "minutes", "boil", "cold", "shell", "heat"], "explains boiling the egg in water and roughly how many minutes it takes"),
    ("sleep-better", "How can I sleep better at night?", ["bed", "screen", "caffeine", "routine", "dark", "same time"], "gives concrete sleep habits such as a regular bedtime or avoiding screens and caffeine"),
    ("save-money", "What are simple ways to save money each month?", ["budget", "spend", "save", "track", "cook", "subscription"], "suggests concrete habits such as budgeting, tracking spending or cooking at home"),
    ("plant-care", "How often should I water a houseplant?", ["soil", "dry", "water", "week", "drain", "plant"], "explains checking whether the soil is dry and a typical watering interval"),
    ("cold-remedy", "What helps when I have a common cold?", ["rest", "fluids", "water", "tea", "sleep", "doctor"], "recommends rest and fluids and says when to see a doctor"),
    ("study-tips", "How can I study more effectively for an exam?", ["schedule", "break", "practice", "notes", "sleep", "review"], "suggests concrete techniques such as spaced review, practice questions or breaks"),
    ("make-tea", "How do I make a good cup of tea?", ["water", "boil", "minutes", "steep", "cup", "milk"], "covers water temperature and how long to steep the tea"),
    ("clean-oven", "What is an easy way to clean an oven?", ["baking soda", "vinegar", "water", "wipe", "paste", "overnight"], "describes a cleaning method such as a baking soda paste and wiping it off"),
    ("run-start", "How should a beginner start running?", ["slow", "walk", "minutes", "shoes", "week", "rest"], "suggests starting slowly, mixing walking and running and building up over weeks"),
    ("learn-language", "What is the best way to learn a new language?", ["practice", "every day", "speak", "words", "app", "listen"], "recommends daily practice, speaking and listening"),
    ("fix-flat", "How do I fix a flat bicycle tire?", ["tube", "patch", "pump", "tire", "hole", "lever"], "explains removing the tube, finding and patching the hole, and pumping it up"),
    ("stress", "What can I do to feel less stressed?", ["breath", "walk", "exercise", "sleep", "talk", "break"], "suggests concrete actions like breathing exercises, a walk or talking to someone"),
    ("rice", "How do I cook rice on the stove?", ["water", "rice", "boil", "simmer", "minutes", "lid"], "gives a water-to-rice ratio or steps: boil, cover, simmer for some minutes"),
    ("interview", "How should I prepare for a job interview?", ["research", "company", "practice", "questions", "examples", "clothes"], "suggests researching the company and practising answers to common questions"),
    ("phone-battery", "How can I make my phone battery last longer?", ["brightness", "screen", "apps", "background", "battery", "power"], "suggests lowering brightness, closing background apps or a power-saving mode"),
    ("headache", "What can I do about a mild headache?", ["water", "rest", "pain", "screen", "doctor", "sleep"], "suggests drinking water and resting and says when to see a doctor"),
    ("garden-start", "How do I start a small vegetable garden?", ["sun", "soil", "water", "seeds", "plant", "space"], "covers choosing a sunny spot, preparing soil and watering"),
    ("email-polite", "How do I write a polite email to my teacher?", ["greeting", "subject", "thank", "clear", "short", "name"], "suggests a clear subject, a polite greeting, a short request and thanks"),
    ("car-tires", "How do I check the air pressure in my car tires?", ["gauge", "pressure", "cap", "psi", "valve", "door"], "explains using a pressure gauge on the valve and where to find the right pressure"),
    ("dog-walk", "How often should I walk my dog?", ["day", "walk", "breed", "minutes", "energy", "exercise"], "gives a typical number of walks per day and notes that it depends on the dog"),
    ("drink-water", "How much water should I drink in a day?", ["glasses", "liters", "thirst", "day", "water", "exercise"], "gives a typical daily amount and notes that needs vary with activity and heat"),
    ("moving-tips", "What should I do to prepare for moving house?", ["boxes", "pack", "label", "list", "address", "early"], "suggests packing early, labelling boxes and updating the address"),
    ("bread", "How do I keep bread fresh for longer?", ["bag", "freeze", "room", "dry", "bread", "container"], "suggests storing bread in a bag or box at room temperature or freezing it"),
    ("presentation", "How can I be less nervous when giving a presentation?", ["practice", "breath", "slow", "audience", "notes", "prepare"], "suggests practising beforehand, slow breathing and knowing the material"),
    ("laundry", "How do I wash a wool sweater?", ["cold", "hand", "gentle", "flat", "dry", "soap"], "explains washing gently in cold water and drying it flat"),
    ("focus", "How can I focus better when working from home?", ["desk", "break", "phone", "schedule", "quiet", "list"], "suggests a dedicated space, a schedule, breaks and putting the phone away"),
    ("first-aid-cut", "How do I treat a small cut on my finger?", ["wash", "water", "pressure", "bandage", "clean", "bleeding"], "explains cleaning the cut, stopping the bleeding with pressure and covering it"),
    ("budget-trip", "How can I travel on a small budget?", ["cheap", "book", "early", "hostel", "train", "season"], "suggests booking early, cheaper transport and accommodation, or travelling off-season"),
    ("pasta", "How do I cook pasta properly?", ["water", "salt", "boil", "minutes", "stir", "drain"], "covers salted boiling water, the cooking time and draining"),
    ("kids-reading", "How can I help my child enjoy reading?", ["read", "together", "books", "library", "choose", "every day"], "suggests reading together, letting the child choose books and a regular habit"),
    ("compost", "How do I start composting at home?", ["bin", "scraps", "brown", "green", "turn", "moist"], "explains a bin, mixing green scraps with brown material and turning it"),
    ("posture", "How can I improve my posture at a desk?", ["chair", "screen", "feet", "back", "eye level", "break"], "covers chair and screen height, feet flat and regular breaks"),
    ("password", "How do I create a strong password?", ["long", "characters", "numbers", "symbols", "manager", "unique"], "recommends long unique passwords with mixed characters or a password manager"),
    ("ice-burn", "What should I do if I burn my hand on the stove?", ["cool", "water", "minutes", "ice", "cover", "doctor"], "says to cool the burn under running water for several minutes and when to get help"),
    ("friendship", "How can I make new friends as an adult?", ["club", "class", "volunteer", "invite", "interests", "regular"], "suggests joining classes or clubs, volunteering and following up with invitations"),
    ("snow-drive", "How do I drive safely in snow?", ["slow", "distance", "brake", "tires", "gentle", "lights"], "covers driving slowly, leaving distance and braking gently"),
    ("recycle", "What can I recycle at home?", ["paper", "plastic", "glass", "cans", "cardboard", "rules"], "names common recyclables like paper, glass and cans and mentions local rules"),
    ("jet-lag", "How can I reduce jet lag after a long flight?", ["sleep", "light", "water", "local time", "nap", "schedule"], "suggests adjusting to local time, daylight and water, and limiting naps"),
    ("smoothie", "How do I make a healthy smoothie?", ["fruit", "banana", "milk", "yogurt", "blend", "spinach"], "lists ingredients such as fruit and yogurt or milk and says to blend them"),
    ("saving-energy", "How can I lower my electricity bill?", ["lights", "off", "heating", "appliances", "led", "unplug"], "suggests switching off lights and appliances, LED bulbs or using less heating"),
]

HELDOUT = [
    ("scrambled-eggs", "How do I make scrambled eggs?", ["eggs", "butter", "pan", "stir", "heat", "whisk"], "covers whisking the eggs and stirring them in a pan over gentle heat"),
    ("wake-early", "How can I get used to waking up early?", ["bed", "alarm", "light", "routine", "earlier", "sleep"], "suggests going to bed earlier, a consistent routine and morning light"),
    ("shoes-smell", "How do I stop my shoes from smelling?", ["dry", "baking soda", "socks", "air", "wash", "powder"], "suggests drying them, baking soda and clean socks"),
    ("plant-light", "Which houseplants grow well in low light?", ["snake plant", "pothos", "zz", "fern", "low light", "water"], "names low-light plants such as the snake plant or pothos"),
    ("back-pain", "What can help with mild lower back pain?", ["stretch", "walk", "heat", "rest", "posture", "doctor"], "suggests gentle movement, stretching, heat and when to see a doctor"),
    ("meal-prep", "How do I start meal prepping for the week?", ["plan", "containers", "cook", "fridge", "batch", "list"], "suggests planning meals, a shopping list, batch cooking and containers"),
    ("wifi-slow", "Why is my home wifi slow and how can I fix it?", ["router", "restart", "walls", "devices", "channel", "closer"], "suggests restarting or moving the router and reducing connected devices"),
    ("kid-bedtime", "How can I get my toddler to go to bed on time?", ["routine", "bath", "story", "same time", "screens", "calm"], "suggests a calm, regular bedtime routine without screens"),
]

# Prompts no run trains on, refines rubrics on or monitors: an experiment's final comparison (test_gold.jsonl only).
TEST = [
    ("iron-shirt", "How do I iron a shirt without creases?", ["steam", "collar", "sleeves", "low", "hang", "damp"], "covers a damp or steamed shirt, the order (collar, sleeves, body) and hanging it straight away"),
    ("chop-onion", "How do I chop an onion without crying?", ["knife", "sharp", "cold", "fridge", "root", "water"], "suggests a sharp knife, chilling the onion and leaving the root on"),
    ("bike-chain", "How do I clean a bicycle chain?", ["degreaser", "brush", "rag", "oil", "lube", "wipe"], "explains degreasing, brushing and wiping the chain, then oiling it"),
    ("frozen-pipes", "How do I keep my pipes from freezing in winter?", ["insulate", "drip", "heat", "tap", "garage", "cabinet"], "suggests insulating pipes, letting taps drip and keeping the heat on"),
    ("cat-scratch", "How do I stop my cat from scratching the sofa?", ["post", "scratching", "spray", "nails", "treats", "cover"], "suggests a scratching post near the sofa, rewards and trimming nails"),
    ("hiccups", "How do I get rid of hiccups?", ["breath", "hold", "water", "sip", "slowly", "sugar"], "suggests holding the breath, sipping water or a spoon of sugar"),
    ("tomato-grow", "How do I grow tomatoes on a balcony?", ["pot", "sun", "stake", "water", "compost", "daily"], "covers a large pot, full sun, support stakes and regular watering"),
    ("stain-wine", "How do I get a red wine stain out of a carpet?", ["blot", "cold", "salt", "soda", "dab", "vinegar"], "explains blotting, cold water and salt or a cleaning solution"),
    ("new-habit", "How do I build a new habit that sticks?", ["small", "daily", "trigger", "track", "reward", "same time"], "suggests starting small, a fixed trigger or time, and tracking progress"),
    ("knife-sharp", "How do I sharpen a kitchen knife?", ["stone", "angle", "strokes", "whetstone", "hone", "edge"], "explains using a whetstone at a steady angle and honing the edge"),
    ("baby-sleep", "How can I help a newborn sleep through the night?", ["routine", "dark", "swaddle", "feed", "white noise", "back"], "suggests a routine, a dark room, swaddling and safe sleep on the back"),
    ("noisy-neighbor", "How do I deal with a noisy neighbour politely?", ["talk", "calm", "note", "landlord", "hours", "friendly"], "suggests a calm, friendly talk first, then a note or the landlord"),
    ("pack-suitcase", "How do I pack a suitcase efficiently?", ["roll", "clothes", "shoes", "list", "cubes", "heavy"], "suggests a list, rolling clothes and heavy items at the bottom"),
    ("fridge-smell", "How do I get rid of a bad smell in my fridge?", ["baking soda", "clean", "wipe", "expired", "vinegar", "shelves"], "explains throwing out old food, wiping with vinegar and leaving baking soda"),
    ("public-speaking", "How can I get better at speaking in meetings?", ["prepare", "notes", "points", "practice", "short", "questions"], "suggests preparing a few points, practising and keeping it short"),
    ("sunburn", "What should I do about a mild sunburn?", ["cool", "aloe", "water", "shade", "moisturizer", "shower"], "suggests cooling the skin, aloe or moisturiser, water and staying out of the sun"),
]

# Words of a question that say nothing about its subject.
COMMON_WORDS = {"how", "can", "the", "and", "for", "are", "what", "when", "which", "with", "should", "could", "would", "does", "have", "that", "this",
                "there", "their", "from", "into", "your", "more", "less", "some", "each", "good", "best",
                "easy", "simple", "ways", "help", "much", "many", "often", "make", "start", "home", "keep"}

# Deflecting, refusing, or talking about itself instead of answering.
DEFLECTIONS = ["as an ai", "ai assistant", "i cannot", "i can't help", "i am unable", "i'm unable",
               "i'm here to help", "i am here to help", "smollm"]


def rule_criteria(keywords: list[str], prompt: str) -> list[dict]:
    """The rules every prompt shares. `keywords` make the content checks specific to the prompt: staying on
    topic may reuse the question's words, being specific must bring words the question does not have."""
    prompt_words = set(re.findall(r"[a-z]+", prompt.lower()))
    new_words = [k for k in keywords if not set(k.split()) <= prompt_words]
    subject = sorted(w for w in prompt_words if len(w) >= 3 and w not in COMMON_WORDS)
    on_subject = list(dict.fromkeys(subject + keywords))
    return [
        {"id": "on_topic", "kind": "rule", "weight": 2,
         "text": f"Stays on the subject of the question (mentions one of: {', '.join(on_subject)}).",
         "check": {"type": "contains", "any_of": on_subject}},
        {"id": "specific", "kind": "rule", "weight": 2,
         "text": f"Brings at least two specifics a helpful answer covers: {', '.join(new_words)}.",
         "check": {"type": "contains", "any_of": new_words, "min_matches": 2}},
        {"id": "length_window", "kind": "rule", "weight": 2,
         "text": "Is between 15 and 40 words long: complete but concise.",
         "check": {"type": "word_count", "min": 15, "max": 40}},
        {"id": "finishes", "kind": "rule", "weight": 2,
         "text": "Ends with a finished sentence (final punctuation), not cut off mid-thought.",
         "check": {"type": "regex", "pattern": r"[.!?)]\s*$"}},
        {"id": "no_repetition", "kind": "rule", "weight": 1,
         "text": "Does not repeat sentences or phrases.",
         "check": {"type": "no_repetition", "ngram": 3, "max_repeat_fraction": 0.15}},
        {"id": "deflects", "kind": "rule", "weight": -3,
         "text": "Deflects, refuses or talks about itself instead of answering (for example 'As an AI, I cannot').",
         "check": {"type": "contains", "any_of": DEFLECTIONS}},
    ]


def llm_criteria(keywords: list[str], prompt: str, covers: str) -> list[dict]:
    """Content questions for an LLM judge; the mechanical checks stay rules. Tagged content, format and safety, so
    that a run can train them as separate objectives (`reward: {objectives: [content, format, safety]}`)."""
    mechanical = [{**c, "tags": ["format"]} for c in rule_criteria(keywords, "") if c["id"] in {"length_window",
                                                                                                "finishes"}]
    return [
        {"id": "answers_question", "kind": "llm", "weight": 3, "text": f"The response {covers}.", "tags": ["content"]},
        {"id": "accurate", "kind": "llm", "weight": 2, "text": "The advice is accurate and safe.", "tags": ["content"]},
        {"id": "clear", "kind": "llm", "weight": 1, "text": "The response is clear and easy to follow.",
         "tags": ["format"]},
        *mechanical,
        {"id": "deflects", "kind": "llm", "weight": -3,
         "text": "The response refuses, deflects or talks about itself instead of answering the question.",
         "tags": ["safety"]},
    ]


def prompt_only_criteria(keywords: list[str], prompt: str) -> list[dict]:
    """What a rubric written from the prompt alone tends to ask of an everyday question: on topic, concise and
    straight to the point, finished, no repetition, no deflection. Its loophole: nothing asks for substance, and
    the shorter the answer the more criteria it meets, so bare one-liners score highest."""
    shared = {c["id"]: c for c in rule_criteria(keywords, prompt)}
    concise = {"id": "concise", "kind": "rule", "weight": 2, "text": "Is concise: at most 40 words.",
               "check": {"type": "word_count", "max": 40}}
    to_the_point = {"id": "to_the_point", "kind": "rule", "weight": 2,
                    "text": "Gets straight to the point: a one-line answer of at most 12 words.",
                    "check": {"type": "word_count", "max": 12}}
    return [shared["on_topic"], concise, to_the_point, shared["finishes"], shared["no_repetition"], shared["deflects"]]


def refined_criteria(keywords: list[str], prompt: str) -> list[dict]:
    """The prompt-only rubric refined by comparing strong answers: the better ones named concrete specifics and
    took the words to explain them, so those two criteria are added and the one-line criterion that rewarded
    leaving them out is rewritten into a minimum length."""
    shared = {c["id"]: c for c in rule_criteria(keywords, prompt)}
    explains = {"id": "explains", "kind": "rule", "weight": 2,
                "text": "Explains rather than names: at least 15 words.",
                "check": {"type": "word_count", "min": 15}}
    kept = [c for c in prompt_only_criteria(keywords, prompt) if c["id"] != "to_the_point"]
    return [*kept, shared["specific"], explains]


def gold_criteria(keywords: list[str], prompt: str) -> list[dict]:
    """The gold standard the monitor checks policies against: substance first. On topic, concrete specifics, at
    least 15 words, and an answer that ends in a statement (a question back, or a sentence cut off, is no
    answer); no repetition, no deflection. A bare one-liner scores low however tidy it is."""
    shared = {c["id"]: c for c in rule_criteria(keywords, prompt)}
    return [
        {**shared["on_topic"], "weight": 2},
        {**shared["specific"], "weight": 2},
        {"id": "substance", "kind": "rule", "weight": 3, "text": "Gives a real answer: at least 15 words.",
         "check": {"type": "word_count", "min": 15}},
        {"id": "answers", "kind": "rule", "weight": 1,
         "text": "Ends with a finished statement, not a question back or a sentence cut off.",
         "check": {"type": "regex", "pattern": r"[.!)]\s*$"}},
        shared["no_repetition"],
        shared["deflects"],
    ]


# (file stem, criteria builder, rubric version, why it differs from its parent)
RUBRIC_SETS = [
    ("rules", lambda keywords, prompt, covers: rule_criteria(keywords, prompt), 1, None),
    ("llm", llm_criteria, 1, None),
    ("gold", lambda keywords, prompt, covers: gold_criteria(keywords, prompt), 1, None),
    ("prompt_only", lambda keywords, prompt, covers: prompt_only_criteria(keywords, prompt), 1, None),
    ("refined", lambda keywords, prompt, covers: refined_criteria(keywords, prompt), 2,
     "Among strong answers, the better ones named concrete specifics and took the words to explain them; the "
     "prompt-only rubric scored a bare one-line answer above a complete one. Added 'specific' and 'explains'; "
     "'to_the_point' (at most 12 words) rewarded leaving them out and was rewritten as 'explains'."),
]


def write(name: str, items: list[tuple], criteria_for, version: int = 1, reason: str | None = None) -> None:
    with (HERE / name).open("w") as handle:
        for prompt_id, prompt, keywords, covers in items:
            rubric = {"id": prompt_id, "prompt_id": prompt_id, "criteria": criteria_for(keywords, prompt, covers)}
            if version > 1:  # a refined rubric names the rubric it refines, and why
                rubric.update(id=f"{prompt_id}-v{version}", version=version, parent=prompt_id, reason=reason)
            row = {"prompt_id": prompt_id, "prompt": [{"role": "user", "content": prompt}], "rubric": rubric}
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    for split, items in (("train", TRAIN), ("heldout", HELDOUT)):
        for stem, criteria_for, version, reason in RUBRIC_SETS:
            if stem == "gold" and split == "train":  # the gold only ever evaluates
                continue
            write(f"{split}_{stem}.jsonl", items, criteria_for, version, reason)
    write("test_gold.jsonl", TEST, lambda keywords, prompt, covers: gold_criteria(keywords, prompt))
    print(f"wrote {len(TRAIN)} train, {len(HELDOUT)} held-out and {len(TEST)} test prompts to {HERE}")
