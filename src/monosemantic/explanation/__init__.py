"""Explanations of features: an OpenAI-compatible LLM client, the offline explainer, and the
detection and fuzzing scorers that turn explanations into numbers."""
