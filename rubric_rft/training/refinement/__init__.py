"""Online rubric refinement: the policy's own tail buffered, triggers, proposers, the acceptance rule, and the
callback that changes rubrics in the store during training.
"""
