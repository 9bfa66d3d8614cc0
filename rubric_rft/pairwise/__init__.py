"""Which of two answers is better: pairwise judges (an LLM, or scores under a rubric) and a policy's win rate
against a baseline, asked in both orders so that position bias cancels.
"""
