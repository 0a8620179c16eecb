"""What a Hugging Face Space needs beyond app.py: hardware presets and caps (presets.py), the Space README's
front matter (space_header.yaml) and the script that renders that README and checks requirements.txt
(build_space.py)."""
