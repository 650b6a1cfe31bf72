"""The shared-space map: projections of both modalities into one 2-D map (project), background jobs for large splits
(jobs), plotly figures (render), and `chtn project` (cli)."""
