"""Pretext tasks of every pre-training method: each turns a batch of patches into a method's views, on the training
device.

One module per method (``block_masking`` for S3D and the dense MAE, ``models_genesis``, ``volume_fusion``,
``amaes``, ``simclr_views``, ``voco_crops``, ``swinunetr_views``) plus shared pieces (``boxes``,
``intensity_augment``). The contract, used by ``custom_nets.engine.PretextIteration``:

- ``pretext(image, generator) -> dict[str, Tensor]``: ``image`` (B, C, *spatial) on the training device, all
  randomness from ``generator`` (seeded per seed, iteration and rank, so resumed runs draw the same views);
- the dict holds ``"input"`` and whatever the loss needs (``"target"``, ``"mask"``, ``"label"``, ...);
- ``network_inputs`` (class attribute, optional): the views handed to the network, in order; default
  ``("input",)``, S3D's block masking ``("input", "mask")``.
"""
