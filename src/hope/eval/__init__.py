"""A model on held-out data: ``predict`` (answers benchmark-suite examples and scores them) and ``lm``
(loss, perplexity and bits per byte on a token stream). The suites themselves live in ``hope.suites``."""
