"""What a rubric is, and the data that carries rubrics: the format, rule checks, imports from other
formats, prompt datasets, and the store that holds each prompt's current rubric during a run. Nothing here asks
a model.
"""
