"""Source bias: the transfer gain per category (gain), the source-fit proxies (source_fit), the cached report
(report), its tables, figures and HTML (render), and `chtn bias` (cli)."""
