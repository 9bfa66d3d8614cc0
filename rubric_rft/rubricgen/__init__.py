"""Rubric generation and refinement by progressive differentiation, and a rubric quality report.

`generate`: initial rubrics from prompts, written by a proposer LLM (`proposer`, `prompts`, `parsing`);
`responses`: candidate responses from several generators; `refine`: rounds that grade the candidates
(`scoring`), pick great and diverse pairs from the high-score tail (`selection`), ask a gold source which is
better (`gold`) and turn the proposer's answer into rubric edits (`edits`); `report`: rubric quality on
held-out comparisons. `records` holds the file formats they share.
"""
