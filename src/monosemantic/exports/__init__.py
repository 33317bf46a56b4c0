"""Exports of the feature store: the static dashboard (opens from file://), its data and assets
(shared with the served viewer), and Neuronpedia feature JSON."""
