"""Code copied into exported model-zoo bundles as their ``scripts/`` package (torch and MONAI only)."""
