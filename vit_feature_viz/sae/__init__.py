"""Sparse autoencoders on a layer's activations: their latents are features like channels (issue 21).

model.py (the SAE and its training step), files.py (saved in a gallery), objective.py (the `sae` objectives),
buffer.py (a bounded sample of patch tokens), train.py (streaming a dataset through the model, resumable),
metrics.py (FVE, L0, dead latents, the model's output with the layer replaced), purity.py (label purity of top
examples). Nothing is imported here, so each part stays in its own layer (README: Layout).
"""
