"""Compare checkpoints: paired figures of two checkpoints or recipes (figures), the go/no-go rule file (rules,
default_rule.toml), the decision records (decisions), the report and model card (render), and `chtn compare` (cli)."""
