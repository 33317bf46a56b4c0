"""activations stage: harvest many hook sites in one forward pass into an on-disk cache, and stream
shuffled training batches from a cache, a tensor file or the live model.

- `harvest.harvest(cfg) -> Path` writes the cache of docs/design.md (resumable);
- `cache.ActivationCache(path)` reads it (checksummed shards, only the sites asked for);
- `buffer.activation_batches(cfg, sites, batch_size, model=None) -> ActivationStream`.
"""
