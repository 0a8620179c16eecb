"""The Gradio app (app.py at the repo root) as plain Python: `common` holds what every tab shares (checks,
one-line errors, the model cache, the session gallery, `AppContext`), and each tab has its own module with a
`build(ctx)` that lays it out inside the page's gr.Tabs and wires its events.

Nothing in the library imports this package.
"""
