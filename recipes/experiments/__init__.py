"""The evidence experiment: does Crome's data and loss remove a spurious shortcut that vanilla training learns?

Lives under `recipes/` rather than in the installed package: the controlled task, its planted spurious attribute and
the programmatic oracle that only works on it are research apparatus, not library features. Run it with
`python -m recipes.experiments.evidence` from the project's root; `docs/evidence.md` has the design and the results.
"""
