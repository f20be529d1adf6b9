"""The component kinds a family builds its component map from (``bridge.kernel.components``, re-exported).

Generic ones: embeddings, norms, attention (with its q/k/v sources), MLP, mixture of experts and the block
wirings. A family adds only what is special to it, subclassing these.
"""

from bridge.kernel.components import *  # noqa: F403
from bridge.kernel.components import __all__  # noqa: F401
from bridge.kernel.components.moe import softmax_topk, topk_softmax  # noqa: F401  (the old routing names)
