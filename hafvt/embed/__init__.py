"""Items as pictures and words: image cache (images.py), frozen open_clip embeddings (clip.py),
the embedding cache the models read (cache.py), and the small offline demo encoder (demo_encoder.py)."""
