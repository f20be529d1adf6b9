"""The SAELens compatibility group (run by ``make test-compat`` in ``.venv-compat-sae``).

Nothing here may reach a hub or a logging service. Set here, since pytest imports this package
before its conftest, and so before ``transformers``, ``datasets`` and SAELens read these.
"""

import os

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
