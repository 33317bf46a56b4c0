"""The feature store: one SQLite file per analysis (`features.db`) that analyze, explain and circuit
write and export and serve read; schema, typed access and full-text search."""
