"""analyze stage: one pass over the activation cache that collects, per feature, top and quantile
examples, densities, histograms, logit lens and neighbours, and writes them to the feature store."""
