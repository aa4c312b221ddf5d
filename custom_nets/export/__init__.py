"""Model-zoo release of fine-tuned networks: export (folder + zip), download/load checks, nnU-Net v2 plans and import.

See docs/model_zoo.md.
"""

from custom_nets.export.metadata import SCHEMA_FILE, check_version, validate_metadata, zoo_metadata
from custom_nets.export.package import export_bundle, exported_network, zip_bundle

__all__ = ["SCHEMA_FILE", "check_version", "validate_metadata", "zoo_metadata", "export_bundle", "exported_network", "zip_bundle"]
