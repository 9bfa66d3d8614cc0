"""Write gold rubrics for the training prompts: `python data/everyday/make_train_gold.py`.

`make_dataset.py` writes gold rubrics for the held-out prompts only: offline, the gold only ever evaluates.
Online refinement asks the gold which of two of the policy's answers to a *training* prompt is better (it never
grades a reward), so it needs the gold rubric of those prompts too: the same builder, `train_gold.jsonl`.
"""

from make_dataset import TRAIN, gold_criteria, write

if __name__ == "__main__":
    write("train_gold.jsonl", TRAIN, lambda keywords, prompt, covers: gold_criteria(keywords, prompt))
    print(f"wrote gold rubrics for {len(TRAIN)} training prompts")
