"""Offline measurement: grading files of responses (`rubric-rft grade`, judge agreement) and the
simulation of tail misspecification.
"""
