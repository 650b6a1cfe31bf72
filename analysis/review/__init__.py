"""Meeting review: the queue of items to review (queue), the use cases of the Review page (workflow), verdicts being
typed (drafts), the review database (store), exports (render), and `chtn review` (cli)."""
