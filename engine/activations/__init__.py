"""Text to cached activations: the subject model, sparse coders, corpus, the activation cache and its
annotations (logit lens, decoder neighbours), steering and probing. Imports nothing from interpretation/ or
commands/."""
