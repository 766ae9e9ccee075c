"""Reports: the paper's numbers, runs gathered into tables, and pictures.

- ``paper``: ``tdsclip/paper.yaml`` as entries, and the matching of runs to them
- ``runs``: run directories found on disk and what they measured
- ``table``: runs beside the paper as rows, Markdown and CSV
- ``results``: ``python -m tdsclip.results``'s body
- ``plots``: curves, confusion matrix, per-class accuracy, a sweep's top-1 bar chart
- ``visual``: the picture of ``python -m tdsclip.visualize``

``tdsclip.report`` imports no other tdsclip subpackage: the engine draws with it, and the
entry points hand it what it needs (e.g. how to compose a config).
"""
