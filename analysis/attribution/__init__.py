"""Why this result?: integrated-gradient attributions of a retrieval score to image regions and text spans
(explainer), their objective, quadrature, spans, disk cache, types and rendering; `chtn` has no command for it."""
