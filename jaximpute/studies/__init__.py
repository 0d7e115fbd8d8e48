"""Monte Carlo simulation studies (`jaximpute simulate CONFIG`, `jaximpute merge`).

- ``populations``: the population designs and their one generator each (on device);
- ``analysis``: how each population's data sets are analysed and pooled, the per-replication
  records and their summary;
- ``config``: the TOML study config (``load_study``, ``Study``, ``Condition``);
- ``program``: one batch of a study as one device program (generate, impute, analyse, pool);
- ``runner``: runs a study's batches with checkpoints, shards and merges them, plans memory;
- ``pages``: the summary's markdown tables, the page ``summary.md`` and the plots.
"""
