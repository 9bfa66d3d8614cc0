"""rubric_rft: reinforcement fine-tuning with rubric-based rewards."""

from importlib.metadata import version

__version__ = version("rubric_rft")
