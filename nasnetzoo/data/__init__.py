"""Datasets, loaders and augmentation that retraining and the searches share.

* ``datasets``: CIFAR-10/100, ImageNet (ImageFolder), the embedded ``digits`` set, the epoch
  DataLoader and the on-device tensor loader;
* ``augment``: cutout and batched on-device augmentation.
"""
