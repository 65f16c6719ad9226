"""A latent to explanations and scores: sampling, examples, LLM backends, prompts, explainers, scorers,
metrics and the explain/score stage. Imports activations/, never commands/."""
