"""Meeting review: the queue of items to review (queue), the use cases of the Review page (workflow), verdicts being
typed (drafts), the review records (store) and their tables (schema), exports (render), and `chtn review` (cli)."""
