"""Galleries on disk and on the Hub: the schema, locked folder I/O with atomic writes, the dataset card,
browsing indexes, Hub push/pull and saved job progress. Knows nothing of models or rendering, so everything
above can store and read results through it."""
