"""`python -m vit_feature_viz` and `accelerate launch -m vit_feature_viz` run the CLI."""

import sys

from .cli import main

sys.exit(main())
