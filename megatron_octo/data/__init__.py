"""Training data.

- ``synthetic``, ``batches``: generated token sequences; which samples each data-parallel rank reads.
- ``formatters``, ``tokenizer``, ``readers``, ``preprocess``: corpora (JSONL, JSONL.gz, Parquet) -> formatted text
  -> tokens -> Megatron-Core indexed datasets (``octo preprocess``).
- ``mixtures``: the OctoThinker mixtures (``config/mixtures/*.yaml``); ``blend``: a recipe's mixture as
  Megatron-Core's blended GPTDataset (``data.kind: blend``); ``audit``: target vs realized shares
  (``octo data audit``).
- ``demo_task``, ``demo_corpus``: the synthetic math task of ``octo demo`` (splits that never overlap), written as
  the four kinds of data, with its BPE tokenizer.

Submodules are imported where used, so importing this package stays cheap.
"""
