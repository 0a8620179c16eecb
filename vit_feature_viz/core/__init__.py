"""What makes an image: objectives (what to maximize), parametrizations, transforms, recipes, the renderer
and patch maps. Builds on models/; nothing here reads or writes galleries."""
