"""S3D sparse masked-autoencoder pre-training of nnU-Net's ResEnc U-Net, packaged as MONAI bundles.

Importing the package (every bundle config does) installs ``custom_nets.errors.excepthook``: a configuration or
data error of this project ends a run with its own short message instead of a long traceback
(``S3D_DEBUG=1`` prints the full traceback too).
"""

from custom_nets import errors as _errors

_errors.install()
