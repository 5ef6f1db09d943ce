import torch

# Tiny tensors gain nothing from intra-op threads, and oversubscribed threads make CPU runs crawl.
torch.set_num_threads(1)
