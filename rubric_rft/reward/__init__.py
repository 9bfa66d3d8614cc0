"""The rewards TRL calls: the rubric reward (each completion graded against its prompt's rubric), the
Bradley-Terry reward model it is compared with, and the `reward:` config that picks one.
"""
