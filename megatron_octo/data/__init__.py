"""Training data: synthetic tokens now; corpora, tokenization and mixtures with the data pipeline."""
