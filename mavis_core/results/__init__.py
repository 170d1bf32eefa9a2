"""`python -m mavis_core results`: run every measurement docs/results.md reports, and write it.

One command regenerates the page from nothing: the λ sweeps over every pair and over the simplex, the β curves
(single-objective MAVIS against the objective's fine-tuned policy), the top-k ablation and the search axis (the
measurements are `experiments`' functions; this package writes their sections: `kinds` (each prompt kind and the
refusal rates, first), `fronts`, `baselines` (Prompted and the conditioned policy), `ablations`, `models`,
`verdicts`, assembled by `page.run_results`). Each
experiment's table goes to ``--data`` as CSV (with plotly HTML charts); static PNG images (plotly through
kaleido, which drives a local Chrome/Chromium) and the markdown go to ``--out``. Numbers and the sentences that
compare them are computed from the tables, so the reading cannot drift from the data; the paragraphs that
explain *why* name the measurements they rest on.
"""


