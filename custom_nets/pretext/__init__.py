"""Pretext tasks of the baselines: each turns a batch of patches into a method's views, on the training device.

One module per method (``models_genesis``, ``volume_fusion``, ``amaes``, ``simclr_views``, ``voco_crops``,
``swinunetr_views``) plus shared pieces (``boxes``, ``intensity_augment``). Every transform is called by
``custom_nets.engine.PretextIteration`` as ``pretext(image, generator) -> dict`` with at least ``"input"``.
"""
