import torch

# Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only slow backward passes.
torch.set_num_threads(1)
